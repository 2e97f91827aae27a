"""Cron expressions with a time zone, as policies write them (five fields, UTC by default)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from backupctl.errors import UsageError

_HINT = "write minute hour day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 every day)"


def time_zone(name: str | None) -> ZoneInfo:
    name = name or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r}", "use an IANA name such as UTC or Asia/Shanghai") from None


def cron_trigger(expression: str, tz: str | None = "UTC") -> CronTrigger:
    """A trigger for a standard five-field cron expression evaluated in time zone ``tz``."""
    expr = " ".join(str(expression).split())
    fields = expr.split(" ") if expr else []
    if len(fields) != 5:
        raise UsageError(f"invalid cron expression {expr!r}: {len(fields)} field(s), expected 5", _HINT)
    zone = time_zone(tz)
    try:
        return CronTrigger.from_crontab(expr, timezone=zone)
    except ValueError as exc:
        raise UsageError(f"invalid cron expression {expr!r}: {exc}", _HINT) from None
