"""The restorable window of a base backup given the archived WAL, and checking a recovery target against it.

The window opens when the base backup became consistent (its stop time and stop LSN) and
closes at the last WAL segment archived without a gap after the backup's start segment,
on the backup's timeline, at the time the server last wrote that segment. A segment missing
before the backup is consistent makes the backup unrestorable; one missing later closes the
window early. Both are named.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backupctl.errors import BackupctlError, UsageError
from engine_tools.postgresql import lsn as L
from engine_tools.postgresql.wal import Listing

WRITE_MARGIN = timedelta(seconds=1)


@dataclass
class Window:
    start_time: datetime
    end_time: datetime
    start_lsn: int                 # consistent from here (the backup's stop LSN)
    end_lsn: int                   # end of the last archived segment without a gap
    timeline: int
    first_missing: str | None      # the segment after the end, that the archive does not hold
    certain_time: datetime | None = None   # every commit up to this time is archived (see window())

    def describe(self) -> str:
        return (f"{self.start_time.isoformat()} to {self.end_time.isoformat()} "
                f"(LSN {L.format_lsn(self.start_lsn)} to {L.format_lsn(self.end_lsn)}, timeline {self.timeline})")


@dataclass
class Target:
    """What to recover to; at most one of time, lsn, xid, name; none means the end of the archive."""

    time: datetime | None = None
    lsn: str | None = None
    xid: str | None = None
    name: str | None = None

    def kind(self) -> str | None:
        for k in ("time", "lsn", "xid", "name"):
            if getattr(self, k) is not None:
                return k
        return None


def window(positions: dict[str, Any], listing: Listing, *, cluster: str) -> Window:
    size = int(positions["segment_size"])
    tl = int(positions["timeline"])
    start_seg = L.segment_of(L.parse_lsn(positions["start_lsn"]), size)
    stop_lsn = L.parse_lsn(positions["stop_lsn"])
    stop_seg = L.segment_of(stop_lsn - 1, size)
    seg = start_seg
    last = None
    while True:
        name = L.segment_name(tl, seg, size)
        entry = listing.files.get(name)
        if entry is None:
            break
        last = entry
        seg += 1
    missing = L.segment_name(tl, seg, size)
    if seg <= stop_seg:
        raise BackupctlError(f"WAL segment {missing} of cluster {cluster}, needed to make the base backup consistent, "
                             "is not in the archive",
                             "check archive_command and 'backupctl wal status'; take a new full backup once "
                             "archiving works")
    stop_time = datetime.fromisoformat(positions["stop_time"])
    # The last segment's commits are before the server last wrote it (archived later, the snapshot's
    # time would take in commits made meanwhile, in the next segment the archive lacks). Not every
    # commit after that write is in the next segment, though: a commit takes its time before its
    # record is written, and the write that ends a segment can come with the first commits of the
    # next (or with the WAL writer's, up to wal_writer_delay later), and file times are kept by
    # the kernel's coarse clock, a few ms behind. Up to ``certain`` (a margin before) no commit can
    # be missing: a target past it is reached only if a commit after it is archived (restore.py,
    # replay).
    if last is None:
        end_time = certain = stop_time
    elif last.written:
        end_time = max(datetime.fromisoformat(last.written), stop_time)
        certain = max(end_time - WRITE_MARGIN, stop_time)
    else:                                            # archived before the write time was recorded
        end_time = certain = max(datetime.fromisoformat(last.time), stop_time)
    return Window(stop_time, end_time, stop_lsn, seg * size, tl, missing, certain)


def check_target(target: Target, w: Window, listing: Listing, *, cluster: str) -> None:
    """Refuse a target outside the window, saying what the window is; and, without a target, a gap
    in the archive with later segments of the timeline after it: recovery would take the missing
    segment for the end of the WAL and promote there, without what the later segments hold."""
    kind = target.kind()
    gap = f"; WAL segment {w.first_missing} is the first one not archived" if w.first_missing else ""
    if kind is None and w.first_missing and any(f.name > w.first_missing for f in listing.segments(w.timeline)):
        raise BackupctlError(f"WAL segment {w.first_missing} of cluster {cluster} is not in the archive, but later "
                             "segments of its timeline are: a restore to the latest state would stop at the gap and "
                             f"lose what follows it. Restorable without a gap: {w.describe()}",
                             "restore to a time inside that window (--restore-time), or put the segment back into "
                             "the archive ('backupctl wal-push') if the server still has it")
    if kind == "time":
        t = target.time
        if t < w.start_time or t > w.end_time:
            raise UsageError(f"restore time {t.isoformat()} is outside the restorable window of this backup of "
                             f"cluster {cluster}: {w.describe()}{gap}",
                             "choose a time inside the window, or another backup")
    elif kind == "lsn":
        value = L.parse_lsn(target.lsn)
        if value < w.start_lsn or value > w.end_lsn:
            raise UsageError(f"target LSN {target.lsn} is outside the restorable window of this backup of cluster "
                             f"{cluster}: {w.describe()}{gap}", "choose an LSN inside the window, or another backup")
    elif kind == "name":
        rp = listing.restore_points.get(target.name)
        if target.name in listing.repeated_points:
            lsns = ", ".join(listing.repeated_points[target.name])
            raise UsageError(f"restore point {target.name!r} was created more than once in the archive of cluster "
                             f"{cluster} (LSN {lsns}); recovery stops at the first one it meets",
                             "restore to the one you mean with --target-lsn")
        if rp is None:
            known = ", ".join(sorted(listing.restore_points)) or "none"
            raise UsageError(f"no restore point named {target.name!r} in the archive of cluster {cluster} "
                             f"(known: {known})", "create one with 'backupctl wal restore-point NAME --cluster "
                             f"{cluster}'")
        value = L.parse_lsn(rp.lsn)
        if value < w.start_lsn or value > w.end_lsn or rp.timeline != w.timeline:
            raise UsageError(f"restore point {target.name} (LSN {rp.lsn}) is outside the restorable window of this "
                             f"backup of cluster {cluster}: {w.describe()}{gap}",
                             "choose a restore point inside the window, or another backup")
    elif kind == "xid":
        if not target.xid.isdigit():
            raise UsageError(f"invalid transaction id {target.xid!r}", "give a transaction id as a number")
