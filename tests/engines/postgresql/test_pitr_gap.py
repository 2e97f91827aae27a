"""A restore whose archived WAL has a gap (one segment deleted from the repository).

The missing segment must be named and the restore must fail, never promote early with
rows missing that later archived segments hold.
"""

from __future__ import annotations

import json

import pytest

from tests.engines.postgresql.conftest import PASSWORD, restored_rows, source_world
from tests.engines.postgresql.test_pitr_targets import _batch, restore, stop


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from backupctl.repository import Repository
    from engine_tools.postgresql import wal

    with source_world(commit_timed=True) as (env, src, conn):
        _batch(conn, 1)
        b1 = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
        segs = {}
        for k in range(4):                                    # batch k (ids 10k+10 .. 10k+14) in its own segment
            _batch(conn, 10 * k + 10)
            segs[k] = src.wait_archived(conn)
        ts = {r[0]: r[1] for r in conn.execute("SELECT id, pg_xact_commit_timestamp(xmin) FROM t ORDER BY id")}
        all_ids = sorted(ts)
        gap = segs[2]                                         # ids 30..34
        with Repository.open(env.repo_url, PASSWORD) as repo:
            listing = wal.refresh_listing(repo, str(tmp_path_factory.mktemp("state")), "src", "default",
                                          b1["positions"]["system_identifier"])
            entry = listing.files[gap]
            held = [n for n, f in listing.files.items() if f.snapshot == entry.snapshot]
            assert held == [gap], held                        # the snapshot holds that segment only
            repo.forget(repo.find_snapshot(entry.snapshot))
        w = {"env": env, "src": src, "b1": b1, "segs": segs, "gap": gap, "ts": ts, "all": all_ids}
        yield w


def test_wal_status_names_the_gap(world):
    st = json.loads(world["env"].backupctl("wal", "status", "--cluster", "src", "--json").stdout)
    assert world["gap"] in st["timelines"]["1"]["missing"]


def test_time_before_the_gap_restores_exactly(world):
    t = world["ts"][12]            # not in the last segment before the gap (see test_review_pitr_window_end.py)
    proc, target, port = restore(world, "before-gap", "--backup", world["b1"]["name"], "--restore-time", t.isoformat())
    assert restored_rows(world, target, port) == [i for i in world["all"] if i <= 12]


def test_time_after_the_gap_is_refused_naming_the_segment(world):
    t = world["ts"][42]
    proc, target, _ = restore(world, "after-gap", "--backup", world["b1"]["name"], "--restore-time", t.isoformat(),
                              check=False)
    assert proc.returncode == 2 and world["gap"] in proc.stderr and not target.exists()


def test_restore_to_latest_over_a_gap_fails_naming_the_segment(world):
    """Segments after the gap are archived (ids 40..44): promoting at the gap loses them silently."""
    proc, target, port = restore(world, "latest-gap", "--backup", world["b1"]["name"], check=False)
    if proc.returncode == 0:
        got = restored_rows(world, target, port)
        pytest.fail(f"restore to latest succeeded over the gap {world['gap']}: rows {got}, "
                    f"archived rows {world['all']}")
    stop(target)
    assert world["gap"] in proc.stderr, proc.stderr


def test_lsn_after_the_gap_is_refused(world):
    # any LSN in the last archived segment lies after the gap
    from engine_tools.postgresql import lsn as L

    size = world["b1"]["positions"]["segment_size"]
    _, segno = L.parse_segment_name(world["segs"][3], size)
    lsn = L.format_lsn(segno * size + 100)
    proc, target, _ = restore(world, "lsn-gap", "--backup", world["b1"]["name"], "--target-lsn", lsn, check=False)
    assert proc.returncode == 2 and world["gap"] in proc.stderr and not target.exists()
