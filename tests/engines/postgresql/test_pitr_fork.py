"""Restores of a timeline-1 backup after the source itself was restored to a point in time
and promoted (timeline 2), archiving on under the same cluster.

Timeline 1: rows 1..5, backup B1, rows 6..10, time T1, rows 11..15 and 41..45 (abandoned by the fork).
The source is restored in place to T1 and promoted: timeline 2, rows 16..20.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.engines.postgresql.conftest import restored_rows, source_world
from tests.engines.postgresql.test_pitr_targets import _batch, restore


@pytest.fixture(scope="module")
def world():
    with source_world(commit_timed=True) as (env, src, conn):
        _batch(conn, 1)
        b1 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
        _batch(conn, 6)
        time.sleep(0.05)
        t1 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(0.05)
        _batch(conn, 11)
        src.wait_archived(conn)
        _batch(conn, 41)                               # timeline 1 goes on: 11..15 are not in its last segment
        src.wait_archived(conn)
        ts = {r[0]: r[1] for r in conn.execute("SELECT id, pg_xact_commit_timestamp(xmin) FROM t")}
        conn.close()
        src.ctl("stop")
        # the source restored in place to T1, archiving on (as its postgresql.conf says) once promoted
        env.backupctl("restore", "create", "--backup", b1["name"], "--target-dir", str(src.data), "--force",
                      "--restore-time", t1.isoformat(), user="root")
        auto = src.data / "postgresql.auto.conf"
        auto.write_text("".join(line for line in auto.read_text().splitlines(True)
                                if not line.startswith("archive_mode")))
        src.start()
        conn = src.connect()
        deadline = time.monotonic() + 60
        while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            assert time.monotonic() < deadline, src.log()
            time.sleep(0.2)
        assert [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")] == list(range(1, 11))
        _batch(conn, 16)
        _batch(conn, 21)
        src.wait_archived(conn)
        ts.update({r[0]: r[1]
                   for r in conn.execute("SELECT id, pg_xact_commit_timestamp(xmin) FROM t WHERE id > 15")})
        tl = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
        conn.close()                                   # the one source_world closes is gone
        w = {"env": env, "src": src, "b1": b1, "ts": ts, "t1": t1, "tl": tl}
        yield w


def test_the_source_is_on_timeline_2_and_archived_it(world):
    st = json.loads(world["env"].backupctl("wal", "status", "--cluster", "src", "--json").stdout)
    assert "00000002.history" in st["history_files"] and "2" in st["timelines"], st


def test_time_on_timeline_1_after_the_fork(world):
    """At ts(13) the cluster (timeline 1) held rows 1..13. Restoring B1 to that time must give them, or
    be refused; following timeline 2 instead gives rows 1..10, a state the cluster never had at that time."""
    proc, target, port = restore(world, "tl1-after-fork", "--backup", world["b1"]["name"], "--restore-time",
                                 world["ts"][13].isoformat(), check=False)
    if proc.returncode != 0:
        assert proc.returncode == 2, proc.stderr
        return
    got = restored_rows(world, target, port)
    assert got == list(range(1, 14)), f"restore to {world['ts'][13].isoformat()} (timeline 1) gave rows {got}"


def test_latest_follows_timeline_2(world):
    proc, target, port = restore(world, "tl2-latest", "--backup", world["b1"]["name"], check=False)
    assert proc.returncode == 0, proc.stderr
    assert restored_rows(world, target, port) == list(range(1, 11)) + list(range(16, 26))
