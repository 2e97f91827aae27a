"""Retention periods written as in KubeBlocks: ``7d``, ``12h``, ``30d12h30m``, ``2y``, ``6mo``.

Units: ``y`` (365 days), ``mo`` (30 days), ``w`` (7 days), ``d``, ``h``, ``m`` (minutes), the
same conversion KubeBlocks uses. Units may be combined, largest first, each at most once.
"""

from __future__ import annotations

import re
from datetime import timedelta

from backupctl.errors import UsageError

_UNITS: dict[str, timedelta] = {
    "y": timedelta(days=365),
    "mo": timedelta(days=30),
    "w": timedelta(days=7),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
}
_ORDER = list(_UNITS)
_TOKEN = re.compile(r"(\d+)(y|mo|w|d|h|m)")
_HINT = "write a number and a unit, combined largest first, e.g. 7d, 12h, 30d12h, 2y, 6mo, 90m"


def parse_period(text: str) -> timedelta:
    """Parse a retention period; raise UsageError with a one-line explanation if it does not parse."""
    if not isinstance(text, str):
        raise UsageError(f"retention period must be a string like 7d, not {text!r}", hint=_HINT)
    s = text.strip().lower()
    if not s:
        raise UsageError("retention period is empty", hint=_HINT)
    pos = 0
    total = timedelta()
    last_rank = -1
    for match in _TOKEN.finditer(s):
        if match.start() != pos:
            break
        number, unit = match.groups()
        rank = _ORDER.index(unit)
        if rank <= last_rank:
            raise UsageError(f"retention period {text!r}: unit {unit!r} repeated or out of order", hint=_HINT)
        last_rank = rank
        total += int(number) * _UNITS[unit]
        pos = match.end()
    if pos != len(s):
        raise UsageError(f"retention period {text!r} does not parse at {s[pos:]!r}", hint=_HINT)
    if total <= timedelta():
        raise UsageError(f"retention period {text!r} is zero", hint=_HINT)
    return total


def format_period(delta: timedelta) -> str:
    """The shortest ``30d12h30m`` form of a period (days, hours, minutes)."""
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return "".join(parts) or "0m"
