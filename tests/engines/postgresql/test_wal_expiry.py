"""Retention expires the WAL archive back to the earliest base backup the cluster still has.

Before, WAL was never expired: the archive grew until the disk filled, whatever the policies said.
As pgBackRest's expire: WAL no remaining base replays goes, timeline history stays, and a base
whose start is unknown holds everything.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from engine_tools.postgresql.wal import _before, replays, parse_history
from tests.engines.postgresql.conftest import BINDIR, as_postgres, free_port
from tests.engines.postgresql.test_retention_pitr import backup_names, policy_backup, py_as_postgres

MiB = 1 << 20


def wal_status(env) -> dict:
    return json.loads(env.backupctl("wal", "status", "--cluster", "src", "--json").stdout)


def positions_of(env, name: str) -> dict:
    return json.loads(env.backupctl("backup", "show", name, "--json").stdout)["positions"]


@pytest.fixture
def world(source):
    """The source with a policy keeping its last full, and table t holding 1..5."""
    env, src, conn = source
    env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical", "--keep-last", "1")
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    return source


def test_retention_expires_wal_before_the_earliest_kept_base(world):
    env, src, conn = world
    f1 = policy_backup(env, "p1", "src")
    env.backupctl("wal", "restore-point", "old_point", "--cluster", "src")
    for first in (6, 11, 16):                       # a few segments between the two fulls
        conn.execute(f"INSERT INTO t SELECT generate_series({first}, {first + 4})")
        src.wait_archived(conn)
    f2 = policy_backup(env, "p1", "src")
    conn.execute("INSERT INTO t SELECT generate_series(21, 25)")
    src.wait_archived(conn)
    before = wal_status(env)["timelines"]["1"]
    kept_from = positions_of(env, f2)["start_wal_file"]
    assert before["first"] < kept_from, before

    preview = json.loads(env.backupctl("retention", "run", "--dry-run", "--json").stdout)["log_expiry"]["default/src"]
    assert wal_status(env)["timelines"]["1"] == before                   # a dry run forgets nothing
    assert "log archive of default/src: would expire" in env.backupctl("retention", "run", "--dry-run").stdout
    report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]

    assert report["deleted"] == [f1] and backup_names(env) == {f2}
    expiry = report["log_expiry"]["default/src"]
    assert preview == expiry, (preview, expiry)                           # it said what would go
    after = wal_status(env)
    tl = after["timelines"]["1"]
    assert expiry["kept_from"] == {positions_of(env, f2)["system_identifier"]: {"1": kept_from}}
    assert tl["first"] == kept_from, (tl, expiry)
    assert tl["missing_count"] == 0 and tl["last"] == before["last"]
    assert expiry["files_expired"] >= before["segments"] - tl["segments"] > 0, expiry
    assert "old_point" not in after["restore_points"]
    assert "main" in report["gc"], report
    # what is left restores the kept base to the latest state
    port = free_port()
    target = env.root / "restored"
    env.backupctl("restore", "create", "--cluster", "src", "--target-dir", str(target), "--start", "--port", str(port),
                  user="root")
    try:
        with psycopg.connect(host=str(env.sock), port=port, user="postgres", dbname="postgres", autocommit=True) as c:
            assert [r[0] for r in c.execute("SELECT id FROM t ORDER BY id")] == list(range(1, 26))
    finally:
        as_postgres([f"{BINDIR}/pg_ctl", "stop", "-D", str(target), "-m", "immediate", "-w"])


def test_a_base_with_unknown_start_holds_the_whole_archive(world):
    """A manual full (no policy deletes it) whose positions are lost, say, would lose its WAL to the
    policy's newer full if only the bases with a known start were counted."""
    env, src, conn = world
    f1 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    py_as_postgres(env, f"""
from sqlalchemy import select
from backupctl.catalog.db import session_scope
from backupctl.catalog.models import Backup
with session_scope() as s:
    s.scalar(select(Backup).where(Backup.name == {f1!r})).positions = {{}}
""")
    for first in (6, 11):
        conn.execute(f"INSERT INTO t SELECT generate_series({first}, {first + 4})")
        src.wait_archived(conn)
    policy_backup(env, "p1", "src")
    before = wal_status(env)["timelines"]["1"]
    report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
    assert report["log_expiry"]["default/src"]["files_expired"] == 0
    assert "record no start LSN" in report["log_expiry"]["default/src"]["held"]
    assert wal_status(env)["timelines"]["1"]["first"] == before["first"]
    text = env.backupctl("retention", "run").stdout
    assert "log archive of default/src: nothing expired: 1 base backup(s) record no start LSN" in text, text


@pytest.mark.parametrize("files, point, expired", [
    (["000000010000000000000003"], None, True),
    (["000000010000000000000004"], None, False),                       # the base's start segment
    (["000000010000000000000002", "000000010000000000000004"], None, False),   # a snapshot goes whole or not at all
    (["000000010000000000000003.00000028.backup"], None, True),
    (["000000020000000000000003.partial"], None, False),                # timeline 2: its base starts in segment 3
    (["000000020000000000000002.partial"], None, True),
    (["000000030000000000000001"], None, False),                        # timeline 3: no base replays it
    (["00000002.history"], None, False),                                # a restore follows timeline history
    ([], {"name": "p", "lsn": "0/3FFFFF", "timeline": 1}, True),
    ([], {"name": "p", "lsn": "0/400028", "timeline": 1}, False),       # at the base's start: reachable
    ([], {"name": "p", "lsn": "0/1", "timeline": 3}, False),
])
def test_what_goes_when_timeline_1_is_replayed_from_segment_4_and_timeline_2_from_3(files, point, expired):
    entry = {"files": [{"name": n} for n in files], **({"restore_point": point} if point else {})}
    cutoffs = {1: 4 * MiB + 0x28, 2: 3 * MiB + 0x28}
    assert _before(entry, cutoffs.get, MiB) is expired


def test_a_base_replays_the_timelines_that_branched_from_its_line_after_its_start():
    history = {2: parse_history("1\t0/5000000\tno recovery target specified\n"),
               3: parse_history("1\t0/5000000\tno recovery target specified\n2\t0/9000000\tat restore point\n")}
    assert history[3] == {1: 0x5000000, 2: 0x9000000}
    assert replays(1, 0x4000000, 2, history) and replays(1, 0x4000000, 3, history)
    assert not replays(1, 0x6000000, 2, history)            # after the branch: timeline 1's own line only
    assert replays(2, 0x8000000, 3, history) and not replays(2, 0x9000001, 3, history)
    assert not replays(3, 0x1000000, 2, history) and not replays(1, 0x1000000, 4, history)   # no history: its own only
