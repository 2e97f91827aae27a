"""Cron expressions with a time zone, as policies write them (five fields, UTC by default).

The one parser for schedules: policies validate with it, the scheduler fires with it."""

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


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_weekdays(field: str) -> str:
    """Standard cron counts weekdays from Sunday=0 (7 is Sunday too); APScheduler 3's from_crontab
    counts from Monday=0. Evaluate numeric parts the cron way and hand APScheduler day names."""
    if field == "*" or not any(ch.isdigit() for ch in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            lo, hi = (int(x) for x in rng.split("-", 1))
        else:
            lo = hi = int(rng)
            if step_text:
                hi = 6
        if not (0 <= lo <= 7 and 0 <= hi <= 7 and lo <= hi and step > 0):
            raise ValueError(f"day-of-week {part!r} is out of range 0-7")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expression: str, tz: str | None = "UTC") -> CronTrigger:
    """A trigger for a standard five-field cron expression evaluated in time zone ``tz``."""
    expr = " ".join(str(expression).split())
    fields = expr.split(" ") if expr else []
    if len(fields) != 5:
        raise UsageError(f"invalid cron expression {expr!r}: {len(fields)} field(s), expected 5", _HINT)
    zone = time_zone(tz)
    try:
        minute, hour, day, month, weekday = fields
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_cron_weekdays(weekday),
                           timezone=zone)
    except ValueError as exc:
        raise UsageError(f"invalid cron expression {expr!r}: {exc}", _HINT) from None
