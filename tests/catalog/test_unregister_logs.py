"""`cluster unregister` trims the cluster's log archive after the unregistration is committed; a
repository out of reach leaves the archive as it is, says so, and still unregisters (exit 0).
The expiry itself runs against real PostgreSQL in tests/engines/postgresql/test_wal_retired.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def _register(run, name: str) -> None:
    run("cluster", "register", name, "--engine", "postgresql", "--host", "db1", "--port", "5432")


def test_the_log_expiry_is_reported(run, repo_path: Path) -> None:
    run("repo", "add", "main", "--url", str(repo_path), "--default")
    _register(run, "pg")
    out = json.loads(run("cluster", "unregister", "pg", "--json").stdout)
    assert out["log_expiry_error"] is None, out
    assert out["log_expiry"] == {"repository": "main", "snapshots_forgotten": 0, "files_expired": 0,
                                 "kept_from": {}, "held": None}
    _register(run, "pg2")
    result = run("cluster", "unregister", "pg2")
    assert result.stdout.splitlines()[-1] == ("log archive of cluster pg2 in main: expired 0 file(s) in 0 snapshot(s); "
                                              "no database system looked at (no base backup, or nothing archived)")


def test_a_repository_out_of_reach_leaves_the_archive_and_still_unregisters(run, repo_path: Path,
                                                                          tmp_path: Path) -> None:
    run("repo", "add", "main", "--url", str(repo_path), "--default")
    _register(run, "pg")
    _register(run, "pg2")
    shutil.move(repo_path, tmp_path / "elsewhere")
    out = json.loads(run("cluster", "unregister", "pg", "--json").stdout)
    assert out["log_expiry"] is None and str(repo_path) in out["log_expiry_error"], out
    result = run("cluster", "unregister", "pg2")
    assert result.stderr.startswith("warning: the log archive of cluster pg2 was left as it is: "), result.stderr
    assert json.loads(run("cluster", "list", "--json").stdout) == []
