"""A policy's PITR window keeps the base backups the window needs (DESIGN invariant 4).

PostgreSQL's WAL archive is no catalogue rows of type "continuous": retention reads the archive for
the range it restores each base to. Without that, ``--keep-last 1 --pitr-window 7d`` deleted every
full backup but the newest, and a restore to a time inside the window before it became impossible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psycopg

from tests.engines.postgresql.conftest import BINDIR, as_postgres, free_port


def run_as_postgres(env, code: str) -> subprocess.CompletedProcess:
    """Python ``code`` run as postgres in the test environment (as a backup beside the server runs)."""
    return subprocess.run(["runuser", "-u", "postgres", "--", sys.executable, "-c", code], capture_output=True,
                          text=True, env={**os.environ, **env.env}, cwd=str(env.root), timeout=300)


def py_as_postgres(env, code: str) -> str:
    """``run_as_postgres`` that must succeed: what it printed."""
    proc = run_as_postgres(env, code)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout.strip()


def policy_backup(env, policy: str, cluster: str, type_: str = "full") -> str:
    """A backup made by the policy (as the scheduler would make it), run as postgres."""
    return py_as_postgres(env, f"""
from sqlalchemy import select
from backupctl.catalog.db import session_scope
from backupctl.catalog.models import BackupPolicy
from backupctl.services.backups import create_backup
with session_scope() as s:
    p = s.scalar(select(BackupPolicy).where(BackupPolicy.name == {policy!r}))
    print(create_backup(s, cluster={cluster!r}, policy_id=p.id, type={type_!r}).name)
""").splitlines()[-1]


def backup_names(env) -> set[str]:
    return {b["name"] for b in json.loads(env.backupctl("backup", "list", "--json").stdout)}


def test_pitr_window_keeps_the_base_a_restore_inside_the_window_needs(source):
    env, src, conn = source
    env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical",
                  "--keep-last", "1", "--pitr-window", "7d")
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    f1 = policy_backup(env, "p1", "src")
    conn.execute("INSERT INTO t SELECT generate_series(6, 10)")
    time.sleep(0.1)
    t_mid = conn.execute("SELECT clock_timestamp()").fetchone()[0]      # one minute old, well inside 7d
    time.sleep(0.1)
    conn.execute("INSERT INTO t SELECT generate_series(11, 15)")
    f2 = policy_backup(env, "p1", "src")
    src.wait_archived(conn)

    # the WAL archive covers f1 -> now without a gap; the 7d window reaches back past f1
    plan = json.loads(env.backupctl("retention", "run", "--dry-run", "--json").stdout)
    kept = {k["id"]: k["reasons"] for k in plan["policies"][0]["keep"]}
    deleted = {d["id"]: d["reason"] for d in plan["policies"][0]["delete"]}
    env.backupctl("retention", "run", "--json")

    # A restore to t_mid (inside the 7-day PITR window) needs f1: it is the only base consistent before t_mid.
    assert f1 in backup_names(env), (f"retention deleted {f1} ({deleted.get(f1)}) although the 7d PITR window "
                                     f"needs it; kept only {kept}")
    port = free_port()
    target = env.root / "restored"
    proc = env.backupctl("restore", "create", "--cluster", "src", "--restore-time", t_mid.isoformat(),
                         "--target-dir", str(target), "--start", "--port", str(port), "--json", user="root",
                         check=False)
    try:
        assert proc.returncode == 0, proc.stderr
        with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as c:
            assert [r[0] for r in c.execute("SELECT id FROM t ORDER BY id")] == list(range(1, 11))
    finally:
        as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(target), "-m", "immediate", "-w"])
    assert f2 in backup_names(env)


def test_an_unreadable_archive_deletes_nothing(source):
    """Retention cannot tell what the PITR window needs without the archive: it keeps everything."""
    env, src, conn = source
    env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical",
                  "--keep-last", "1", "--pitr-window", "7d")
    f1 = policy_backup(env, "p1", "src")
    f2 = policy_backup(env, "p1", "src")
    (env.root / "password").write_text("not the repository's password")
    plan = json.loads(env.backupctl("retention", "run", "--json").stdout)
    reasons = {k["id"]: k["reasons"] for k in plan["policies"][0]["keep"]}
    assert not plan["policies"][0]["delete"]
    assert any(r.startswith("PITR window unknown: the log archive cannot be read") for r in reasons[f1]), reasons
    assert {f1, f2} <= backup_names(env)
