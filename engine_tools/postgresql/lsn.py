"""Log sequence numbers and WAL file names: parsing, formatting, segment arithmetic.

A WAL segment file is named ``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the segment
number split in two, the low part counting segments within one 4 GiB "xlogid". The split
depends on the segment size (``wal_segment_size``, 16 MiB by default, set at initdb).
"""

from __future__ import annotations

import re

from backupctl.errors import UsageError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
BACKUP_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$")
PARTIAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """``16/B374D848`` -> an integer."""
    m = _LSN_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid LSN {text!r}", "give it as PostgreSQL prints it, e.g. 0/3000148")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def segment_of(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


def parse_segment_name(name: str, segment_size: int) -> tuple[int, int]:
    """(timeline, segment number) of a segment file name."""
    m = SEGMENT_RE.match(name)
    if not m:
        raise UsageError(f"{name!r} is not a WAL segment file name", "expect 24 hex digits")
    return int(m.group(1), 16), int(m.group(2), 16) * segments_per_xlogid(segment_size) + int(m.group(3), 16)


def is_segment(name: str) -> bool:
    return SEGMENT_RE.match(name) is not None


def is_wal_file(name: str) -> bool:
    """Anything PostgreSQL archives: segments, timeline history, backup history, partial segments."""
    return bool(SEGMENT_RE.match(name) or HISTORY_RE.match(name) or BACKUP_RE.match(name) or PARTIAL_RE.match(name))


def timeline_of(name: str) -> int:
    return int(name[:8], 16)
