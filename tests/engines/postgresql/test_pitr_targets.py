"""Edges of point-in-time restore against a real PostgreSQL 15.

One row per transaction; commit timestamps come from track_commit_timestamp (the exact
xact_time PostgreSQL compares recovery_target_time with). Every restore asserts the rows
that exist afterwards: every row committed before the target present, none after.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.engines.postgresql.conftest import BINDIR, as_postgres, restored_rows, source_world

US = timedelta(microseconds=1)


def _batch(conn, first: int, n: int = 5) -> list[int]:
    ids = list(range(first, first + n))
    for i in ids:
        conn.execute("INSERT INTO t(id) VALUES (%s)", [i])
    return ids


@pytest.fixture(scope="module")
def world():
    with source_world(commit_timed=True) as (env, src, conn):
        _batch(conn, 1)                                                     # 1..5
        b1 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
        _batch(conn, 6)                                                     # 6..10
        env.backupctl("wal", "restore-point", "dup", "--cluster", "src")   # P1
        _batch(conn, 11)                                                    # 11..15
        again = env.backupctl("wal", "restore-point", "dup", "--cluster", "src", check=False)   # the same name: refused
        _batch(conn, 16)                                                    # 16..20
        b2 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
        _batch(conn, 21)                                                    # 21..25
        b3 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--type", "incremental",
                                      "--json").stdout)
        _batch(conn, 26)                                                    # 26..30
        src.wait_archived(conn)
        _batch(conn, 31)                                                    # 31..35: 26..30 not in the last segment
        src.wait_archived(conn)
        rows = conn.execute("SELECT id, pg_xact_commit_timestamp(xmin), xmin::text FROM t ORDER BY id").fetchall()
        ts = {r[0]: r[1] for r in rows}
        xid = {r[0]: r[2] for r in rows}
        w = {"env": env, "src": src, "b1": b1, "b2": b2, "b3": b3, "again": again, "ts": ts, "xid": xid,
             "all": [r[0] for r in rows]}
        yield w


def restore(world, name: str, *args: str, check: bool = True):
    return world["env"].restore_started(name, *args, check=check)


def stop(target) -> None:
    as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(target), "-m", "immediate", "-w"])


def test_time_equal_to_a_commit_timestamp_is_inclusive(world):
    proc, target, port = restore(world, "eq", "--backup", world["b1"]["name"], "--restore-time",
                                 world["ts"][8].astimezone(timezone.utc).isoformat())
    assert restored_rows(world, target, port) == list(range(1, 9))


def test_time_one_microsecond_before_a_commit_excludes_it(world):
    t = (world["ts"][8] - US).astimezone(timezone.utc)
    proc, target, port = restore(world, "eq-1us", "--backup", world["b1"]["name"], "--restore-time", t.isoformat())
    assert restored_rows(world, target, port) == list(range(1, 8))


def test_time_in_a_non_utc_offset(world):
    t = (world["ts"][13] - US).astimezone(timezone(timedelta(hours=-7, minutes=-30)))
    proc, target, port = restore(world, "offset", "--backup", world["b1"]["name"], "--restore-time", t.isoformat())
    assert restored_rows(world, target, port) == list(range(1, 13))
    t = world["ts"][13].astimezone(timezone(timedelta(hours=5, minutes=30)))
    proc, target, port = restore(world, "offset2", "--backup", world["b1"]["name"], "--restore-time", t.isoformat())
    assert restored_rows(world, target, port) == list(range(1, 14))


def test_time_without_a_zone_is_refused(world):
    naive = world["ts"][8].astimezone(timezone.utc).replace(tzinfo=None).isoformat()
    proc, target, _ = restore(world, "naive", "--backup", world["b1"]["name"], "--restore-time", naive, check=False)
    assert proc.returncode == 2 and "time zone" in proc.stderr and not target.exists()


def test_time_inside_the_backup_is_refused(world):
    pos = world["b2"]["positions"]
    start, stop_ = datetime.fromisoformat(pos["start_time"]), datetime.fromisoformat(pos["stop_time"])
    mid = start + (stop_ - start) / 2
    proc, target, _ = restore(world, "inside", "--backup", world["b2"]["name"], "--restore-time", mid.isoformat(),
                              check=False)
    assert proc.returncode == 2 and "outside the restorable window" in proc.stderr and not target.exists()


def test_lsn_before_the_backup_stop_lsn_is_refused(world):
    pos = world["b2"]["positions"]
    proc, target, _ = restore(world, "lsn-inside", "--backup", world["b2"]["name"], "--target-lsn",
                              pos["start_lsn"], check=False)
    assert proc.returncode == 2 and "outside the restorable window" in proc.stderr and not target.exists()


@pytest.mark.parametrize("row,expect_backup", [(18, "b1"), (23, "b2"), (28, "b3")])
def test_cluster_restore_chooses_the_newest_backup_consistent_before_the_target(world, row, expect_backup):
    t = world["ts"][row]
    proc, target, port = restore(world, f"choose-{row}", "--cluster", "src", "--restore-time", t.isoformat())
    assert json.loads(proc.stdout)["backup"] == world[expect_backup]["name"]
    assert restored_rows(world, target, port) == list(range(1, row + 1))


def test_restore_point_name_used_twice(world):
    """recovery_target_name stops at the first point of a name: a second one could never be reached,
    so making it is refused, and a restore to the name stops at the first (after row 10)."""
    assert world["again"].returncode == 2 and "has a restore point named 'dup' already" in world["again"].stderr
    proc, target, port = restore(world, "dup", "--backup", world["b1"]["name"], "--target-name", "dup")
    assert restored_rows(world, target, port) == list(range(1, 11))


def test_xid_committed_before_the_backup_fails_loudly(world):
    proc, target, port = restore(world, "xid-before", "--backup", world["b2"]["name"], "--target-xid",
                                 world["xid"][3], check=False)
    stop(target)
    assert proc.returncode != 0, f"restored (rows {proc.stdout[:300]})"
