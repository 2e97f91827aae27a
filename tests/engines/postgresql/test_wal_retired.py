"""The log archive of an unregistered cluster goes down to what its kept backups replay, and
goes whole once none is left (pgBackRest's stanza-delete). Before, no expiry ever looked at it:
the WAL of a cluster no one backs up any more stayed in the repository for good."""

from __future__ import annotations

import json
import sqlite3

from tests.engines.postgresql.conftest import BACKUPCTL, PASSWORD, make_instance, restored_rows
from tests.engines.postgresql.test_retention_pitr import py_as_postgres


def _archive_snapshots(env) -> list:
    from backupctl.repository import Repository

    with Repository.open(env.repo_url, PASSWORD) as repo:
        return [s for s in repo.snapshots() if s.metadata.get("wal")]


def _segments(src, conn, first: int, count: int) -> None:
    """``count`` batches of 5 rows from ``first`` on, each in a WAL segment of its own, archived."""
    for k in range(count):
        conn.execute(f"INSERT INTO t SELECT generate_series({first + 5 * k}, {first + 5 * k + 4})")
        src.wait_archived(conn)


def _age_in_recycle_bin(env, *names: str) -> None:
    """Backups ``names`` recycled long ago (the recycle bin's period is at least a minute)."""
    with sqlite3.connect(env.home / "catalog.db") as db:
        for name in names:
            db.execute("UPDATE backups SET recycled_at = '2020-01-01 00:00:00' WHERE name = ?", [name])


def _purge_from_recycle_bin(env, monkeypatch, name: str) -> dict:
    """``retention run`` once backup ``name`` has been in the recycle bin longer than its period: the report."""
    _age_in_recycle_bin(env, name)
    monkeypatch.setenv("BACKUPCTL_RECYCLE_BIN_RETENTION", "1d")
    return json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]


def _backed_up_then_unregistered(source) -> tuple:
    """Rows 1..5, a full backup, rows 6..15 (a segment each 5), the server stopped and the cluster
    unregistered keeping the backup: (the environment, the backup's name)."""
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    _segments(src, conn, 1, 1)
    kept = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    _segments(src, conn, 6, 2)
    src.stop()
    env.backupctl("cluster", "unregister", "src", "--keep", "all")
    return env, kept


def test_unregistering_with_no_backup_kept_forgets_the_whole_archive(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    _segments(src, conn, 1, 2)
    env.backupctl("backup", "create", "--cluster", "src")
    _segments(src, conn, 11, 2)
    src.stop()
    assert len(_archive_snapshots(env)) >= 4

    out = json.loads(env.backupctl("cluster", "unregister", "src", "--keep", "none", "--json").stdout)
    assert out["log_expiry_error"] is None, out
    assert out["log_expiry"]["repository"] == "main" and out["log_expiry"]["files_expired"] >= 4, out
    assert set(out["log_expiry"]["kept_from"].popitem()[1].values()) == {"none"}, out
    from backupctl.repository import Repository

    with Repository.open(env.repo_url, PASSWORD) as repo:
        left = list(repo.snapshots())
    assert left == [], [s.metadata for s in left]           # history files and backup labels too


def test_a_kept_backup_keeps_what_it_replays_until_the_recycle_bin_lets_it_go(source, monkeypatch):
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    _segments(src, conn, 1, 2)
    first = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
    _segments(src, conn, 11, 2)
    latest = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
    _segments(src, conn, 21, 2)
    src.stop()
    before = _archive_snapshots(env)

    # the latest backup kept (in the recycle bin): the WAL before its start goes, the rest stays,
    # the newest timeline's included (no server runs on it any more, but the kept backup replays it)
    out = json.loads(env.backupctl("cluster", "unregister", "src", "--keep", "latest", "--json").stdout)
    assert out["kept"] == [latest["name"]] and out["deleted"] == [first["name"]], out
    expiry = out["log_expiry"]
    assert expiry["files_expired"] >= 2 and 0 < expiry["snapshots_forgotten"] < len(before), out
    assert expiry["kept_from"].popitem()[1] == {"1": latest["positions"]["start_wal_file"]}, out
    proc, target, port = env.restore_started("restored", "--backup", latest["name"], check=False)
    assert proc.returncode == 0, proc.stderr
    assert restored_rows({"env": env}, target, port) == list(range(1, 31))

    # the recycle bin lets it go: so does the rest of the archive
    report = _purge_from_recycle_bin(env, monkeypatch, latest["name"])
    assert report["deleted"] == [latest["name"]], report
    assert report["log_expiry"]["default/src"]["snapshots_forgotten"] > 0, report
    assert _archive_snapshots(env) == []


def test_a_backup_recovered_into_another_cluster_keeps_the_retired_archive_it_replays(source, monkeypatch):
    """``backup recover`` catalogues a backup under another cluster; it still restores from its source's
    archive. Once the recycle bin purges the source's other backup, no base of the source is left for
    that database system: the recovered one must keep what it replays (from a helper review)."""
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    _segments(src, conn, 1, 1)
    f0 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    _segments(src, conn, 6, 2)
    f1 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    _segments(src, conn, 16, 2)
    src.stop()
    env.backupctl("cluster", "unregister", "src", "--keep", "all", "--json")
    other = make_instance(env, "other", archive=False)
    try:
        env.backupctl("backup", "recover", f1, "--cluster", "other")
    finally:
        other.stop()

    report = _purge_from_recycle_bin(env, monkeypatch, f0)
    assert report["deleted"] == [f0], report
    expiry = report["log_expiry"]["default/src"]
    assert expiry["snapshots_forgotten"] > 0, report
    proc, target, port = env.restore_started("restored", "--backup", f1, check=False)
    assert proc.returncode == 0, f"{proc.stderr.strip()} ({expiry})"
    assert restored_rows({"env": env}, target, port) == list(range(1, 26))


def test_a_backup_running_while_its_cluster_is_unregistered_keeps_its_wal(source):
    """``unregister --keep all`` keeps a running backup (in the recycle bin); the archive's newest
    timeline stays for it, as for a running server (from a helper review: it lost all its WAL)."""
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    _segments(src, conn, 1, 2)
    out = py_as_postgres(env, f"""
import subprocess
from backupctl.catalog.db import session_scope
from backupctl.services.backups import create_backup
import engine_tools.postgresql.backup as pgb
original = pgb._archive_own_wal
def racing(*a, **k):
    original(*a, **k)        # the backup's WAL is archived and checked; now the cluster is unregistered
    p = subprocess.run([{BACKUPCTL!r}, "cluster", "unregister", "src", "--keep", "all", "--json"],
                       capture_output=True, text=True)
    print("UNREGISTER", p.returncode, " ".join(p.stdout.split()), p.stderr.strip())
pgb._archive_own_wal = racing
with session_scope() as s:
    print(create_backup(s, cluster="src").name)
""")
    name = out.splitlines()[-1]
    assert "UNREGISTER 0" in out, out
    shown = json.loads(env.backupctl("backup", "show", name, "--json").stdout)
    assert shown["phase"] == "Completed" and shown["recycled"], shown
    src.stop()
    proc, target, port = env.restore_started("restored", "--backup", name, check=False)
    assert proc.returncode == 0, f"{proc.stderr.strip()}\n{out}"
    assert restored_rows({"env": env}, target, port) == list(range(1, 11))


def test_deleting_the_last_kept_backup_by_hand_empties_the_archive(source):
    """No sweep trims a retired cluster's archive once it has no backup in the recycle bin left, so
    ``backup delete`` of its last one does it."""
    env, kept = _backed_up_then_unregistered(source)
    assert _archive_snapshots(env)

    out = env.backupctl("backup", "delete", kept).stdout.splitlines()
    assert out[0] == f"deleted backup {kept}" and out[1].startswith("log archive of cluster src in main: expired "), out
    assert _archive_snapshots(env) == []
