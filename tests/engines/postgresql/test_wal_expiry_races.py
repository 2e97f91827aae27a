"""WAL expiry against what runs beside it and what moved: a backup running on a timeline that
branched below older bases, a backup recovered into another cluster, a restore prepared before
the expiry. Each forgot WAL that a backup still needed in the first version of the expiry
(found by a review); each test states what a restore must give afterwards.
"""

from __future__ import annotations

import json
import time

import psycopg

from tests.engines.postgresql.conftest import BACKUPCTL, BINDIR, as_postgres, free_port, make_instance, restored_rows
from tests.engines.postgresql.test_retention_pitr import backup_names, policy_backup, py_as_postgres


def _wait_promoted(conn, inst, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
        assert time.monotonic() < deadline, inst.log()
        time.sleep(0.2)


def _segments(conn, src, first: int, last: int) -> None:
    """Rows first..last, five per WAL segment, each segment archived."""
    for i in range(first, last + 1, 5):
        conn.execute(f"INSERT INTO t SELECT generate_series({i}, {min(i + 4, last)})")
        src.wait_archived(conn)


def _two_bases(env, src, conn) -> tuple[str, str, str]:
    """Policy p1 (keep the last); b0 with rows 1..5, rows 6..10 and the LSN after them, rows 11..50
    over 8 segments, then b1: (b0, b1, that LSN). The connection is closed."""
    env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical", "--keep-last", "1")
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    b0 = policy_backup(env, "p1", "src")
    conn.execute("INSERT INTO t SELECT generate_series(6, 10)")
    target_lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    src.wait_archived(conn)
    _segments(conn, src, 11, 50)
    b1 = policy_backup(env, "p1", "src")
    src.wait_archived(conn)
    conn.close()
    return b0, b1, target_lsn


def _in_place_pitr(env, src, base: str, target_lsn: str, extra_conf: str = "") -> None:
    """Stop src and restore it in place from ``base`` to ``target_lsn``; it archives on once promoted."""
    src.ctl("stop")
    env.backupctl("restore", "create", "--backup", base, "--target-dir", str(src.data), "--force",
                  "--target-lsn", target_lsn, user="root")
    auto = src.data / "postgresql.auto.conf"
    auto.write_text("".join(line for line in auto.read_text().splitlines(True)
                            if not line.startswith("archive_mode")) + extra_conf)
    src.start()


def _fork(env, src, b0: str, target_lsn: str) -> None:
    """Undo rows 11..50 (src restored in place from b0: timeline 2, branching below b1), then rows 101..110."""
    _in_place_pitr(env, src, b0, target_lsn)
    with src.connect() as c2:
        _wait_promoted(c2, src)
        assert [r[0] for r in c2.execute("SELECT id FROM t ORDER BY id")] == list(range(1, 11))
        _segments(c2, src, 101, 110)


def _recycled_then_registered_again(env, src, conn) -> str:
    """A manual full f1 (rows 1..5) and rows 6..25; src unregistered (f1 to the recycle bin), then the
    same server registered again under its name (its archive_command names src: it archives on)."""
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    f1 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    _segments(conn, src, 6, 25)
    env.backupctl("cluster", "unregister", "src", "--keep", "all")
    env.backupctl("cluster", "register", "src", "--engine", "postgresql", "--host", str(env.sock), "--port",
                  str(src.port), "--user", "postgres", "--data-dir", str(src.data))
    return f1


def _racing_backup(env, policy: str = "p1") -> tuple[str, str]:
    """A policy backup of src during which 'retention run' runs (after the backup archived its own
    WAL, before it records its positions): its name, and what the sweep printed."""
    out = py_as_postgres(env, f"""
import subprocess
from sqlalchemy import select
from backupctl.catalog.db import session_scope
from backupctl.catalog.models import BackupPolicy
from backupctl.services.backups import create_backup
import engine_tools.postgresql.backup as pgb
original = pgb._archive_own_wal
def racing(*a, **k):
    original(*a, **k)
    p = subprocess.run([{BACKUPCTL!r}, "retention", "run", "--json"], capture_output=True, text=True)
    print("SWEEP", p.returncode, " ".join(p.stdout.split()), p.stderr.strip())
pgb._archive_own_wal = racing
with session_scope() as s:
    p = s.scalar(select(BackupPolicy).where(BackupPolicy.name == {policy!r}))
    print(create_backup(s, cluster="src", policy_id=p.id).name)
""")
    return out.splitlines()[-1], out


def test_a_backup_running_while_retention_runs_keeps_its_wal_after_an_in_place_pitr(source):
    """LSNs are not time-ordered across timelines: after the cluster was restored in place to a point
    before its newest base (timeline 2), a new base starts at a lower LSN than that timeline-1 base.
    While it runs, the sweep deletes the oldest base and expires back to the earliest *completed*
    one, the timeline-1 base, by LSN: timeline 2's segments below it go, the running backup's own
    WAL with them. The backup then completes and is listed, but cannot be restored."""
    env, src, conn = source
    b0, b1, target_lsn = _two_bases(env, src, conn)
    _fork(env, src, b0, target_lsn)
    # b2, the first base of timeline 2, carries the in-place restore's recovery settings (its own
    # restore comments them out), and is taken while 'retention run' runs
    b2, out = _racing_backup(env)
    assert "SWEEP 0" in out and b0 not in backup_names(env), out
    assert backup_names(env) == {b1, b2}
    positions = json.loads(env.backupctl("backup", "show", b2, "--json").stdout)["positions"]
    assert positions["timeline"] == 2

    proc, target, port = env.restore_started("restored-b2", "--backup", b2, check=False)
    assert proc.returncode == 0, (f"completed backup {b2} (timeline 2, starts in {positions['start_wal_file']}) "
                                  f"cannot be restored after the concurrent sweep: {proc.stderr.strip()}\n{out}")
    assert restored_rows({"env": env}, target, port) == list(range(1, 11)) + list(range(101, 111))


def test_a_backup_recovered_into_another_cluster_keeps_the_wal_of_its_source(source):
    """A recycled backup recovered into another cluster (``backup recover --cluster``) is catalogued
    under that cluster, but restores from its source's archive (the label's cluster). When the source
    name is registered again (the same server) with a policy, expiry counts only the bases now
    catalogued under it and forgets the WAL the recovered backup replays."""
    env, src, conn = source
    f1 = _recycled_then_registered_again(env, src, conn)
    other = make_instance(env, "other")
    try:
        env.backupctl("backup", "recover", f1, "--cluster", "other")
        env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical", "--keep-last", "1")
        policy_backup(env, "p1", "src")
        _segments(conn, src, 26, 30)
        report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
        assert f1 in backup_names(env)

        proc, target, port = env.restore_started("restored-f1", "--backup", f1, check=False)
        assert proc.returncode == 0, (f"recovered backup {f1} lost its WAL to the expiry of src "
                                      f"({report['log_expiry']}): {proc.stderr.strip()}")
        assert restored_rows({"env": env}, target, port) == list(range(1, 31))
    finally:
        other.stop()


def test_a_restore_prepared_before_retention_runs_recovers_all_or_fails(source, monkeypatch):
    """``restore create`` without --start leaves a data directory, a spool of WAL fetched ahead and a
    restore_command that fetches the rest of the files the archive listed. Retention then deletes
    that base and expires its WAL; started, the server hears "not archived" (exit 1) for a listed
    segment, takes it for the end of the WAL and promotes early: fewer rows, no error. Before
    expiry, nothing could make a listed file vanish (invariant 1: the rows, or a loud failure)."""
    env, src, conn = source
    env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical", "--keep-last", "1")
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    f1 = policy_backup(env, "p1", "src")
    _segments(conn, src, 6, 40)
    policy_backup(env, "p1", "src")
    src.wait_archived(conn)

    monkeypatch.setenv("BACKUPCTL_RESTORE_PREFETCH_MB", "1")
    port, target = free_port(), env.root / "prepared"
    env.backupctl("restore", "create", "--backup", f1, "--target-dir", str(target), "--port", str(port), user="root")
    report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
    assert report["deleted"] == [f1] and report["log_expiry"]["default/src"]["files_expired"] > 0, report

    proc = as_postgres([f"{BINDIR}/pg_ctl", "start", "-D", str(target), "-l", str(target / "server.log"), "-w",
                        "-t", "60"])
    deadline = time.monotonic() + 90
    rows = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres",
                                 autocommit=True) as c:
                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    rows = [r[0] for r in c.execute("SELECT id FROM t ORDER BY id")]
                    break
        except psycopg.OperationalError:
            if proc.returncode != 0 or not (target / "postmaster.pid").exists():
                break                                      # recovery failed loudly: acceptable
        time.sleep(0.3)
    as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(target), "-m", "immediate", "-w"])
    assert rows is None or rows == list(range(1, 41)), \
        f"the prepared restore of {f1} promoted early, silently, with rows up to {rows[-1]} of 40"
