"""The restorable window ends when the server last wrote the last archived segment, not when it was archived."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from backupctl.errors import UsageError
from engine_tools.postgresql import wal
from engine_tools.postgresql.pitr import WRITE_MARGIN, Target, check_target, window

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
SIZE = 16 * 1024 * 1024
POSITIONS = {"segment_size": SIZE, "timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000100",
             "stop_time": T0.isoformat()}


def _listing(written: dict[int, datetime | None], archived_after: timedelta) -> wal.Listing:
    snaps = {f"s{seg}": {"time": ((w or T0) + archived_after).isoformat(),
                         "files": [{"name": f"00000001000000000000000{seg}", "size": SIZE,
                                    **({"written": w.isoformat()} if w else {})}]}
             for seg, w in written.items()}
    return wal._listing_from(snaps)


def test_a_segment_archived_late_does_not_stretch_the_window_past_its_last_write():
    # segment 3 was finished at T0+2min and archived 10 minutes later (a slow or stuck archiver):
    # commits made meanwhile went to segment 4, which the archive lacks
    listing = _listing({2: T0 + timedelta(minutes=1), 3: T0 + timedelta(minutes=2)}, timedelta(minutes=10))
    w = window(POSITIONS, listing, cluster="pg1")
    assert w.end_time == T0 + timedelta(minutes=2) and w.first_missing == "000000010000000000000004"
    assert w.certain_time == w.end_time - WRITE_MARGIN          # a commit's time comes before its write
    check_target(Target(time=w.end_time), w, listing, cluster="pg1")
    with pytest.raises(UsageError, match="outside the restorable window"):
        check_target(Target(time=T0 + timedelta(minutes=5)), w, listing, cluster="pg1")


def test_segments_archived_before_their_write_time_was_recorded_end_the_window_when_archived():
    listing = _listing({2: None, 3: None}, timedelta(minutes=10))
    w = window(POSITIONS, listing, cluster="pg1")
    assert w.end_time == w.certain_time == T0 + timedelta(minutes=10)


def test_a_restore_point_name_the_archive_holds_twice_is_refused():
    """Archives written before names were checked can hold one twice; recovery would stop at the
    first, so the name is ambiguous and the error gives both LSNs."""
    segments = {f"s{seg}": {"time": T0.isoformat(), "files": [{"name": f"00000001000000000000000{seg}", "size": SIZE}]}
                for seg in (2, 3)}
    listing = wal._listing_from({**segments,
                                 "p1": {"time": T0.isoformat(),
                                        "restore_point": {"name": "dup", "lsn": "0/3000100", "timeline": 1}},
                                 "p2": {"time": (T0 + timedelta(seconds=1)).isoformat(),
                                        "restore_point": {"name": "dup", "lsn": "0/3000200", "timeline": 1}}})
    w = window(POSITIONS, listing, cluster="pg1")
    with pytest.raises(UsageError, match=r"created more than once .*LSN 0/3000100, 0/3000200"):
        check_target(Target(name="dup"), w, listing, cluster="pg1")
