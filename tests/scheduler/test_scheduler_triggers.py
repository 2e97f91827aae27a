"""Cron expressions and time zones: computed fire times, and one clear line for bad input."""

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from backupctl.cron import cron_trigger
from backupctl.errors import UsageError

UTC = timezone.utc


def next_fire(expr, tz, now):
    return cron_trigger(expr, tz).get_next_fire_time(None, now)


def test_cron_is_utc_by_default():
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert next_fire("0 3 * * *", None, now) == datetime(2024, 6, 2, 3, 0, tzinfo=UTC)


def test_cron_in_a_local_time_zone_fires_at_local_time():
    # 02:00 in Shanghai (UTC+8) is 18:00 UTC the day before
    now = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    fire = next_fire("0 2 * * *", "Asia/Shanghai", now)
    assert fire.astimezone(UTC) == datetime(2024, 6, 1, 18, 0, tzinfo=UTC)
    assert fire.astimezone(ZoneInfo("Asia/Shanghai")).hour == 2


def test_cron_follows_daylight_saving_time():
    ny = ZoneInfo("America/New_York")
    # 09:00 New York is 14:00 UTC before the 2024-03-10 switch, 13:00 UTC after it
    assert next_fire("0 9 * * *", "America/New_York", datetime(2024, 3, 9, 0, 0, tzinfo=UTC)).astimezone(UTC) \
        == datetime(2024, 3, 9, 14, 0, tzinfo=UTC)
    after = next_fire("0 9 * * *", "America/New_York", datetime(2024, 3, 9, 15, 0, tzinfo=UTC))
    assert after.astimezone(UTC) == datetime(2024, 3, 10, 13, 0, tzinfo=UTC)
    assert after.astimezone(ny).hour == 9


@pytest.mark.parametrize("expr", ["", "* * * *", "* * * * * *", "61 * * * *", "0 25 * * *", "x * * * *",
                                  "0 3 * * mon-xyz", "*/0 * * * *"])
def test_invalid_cron_is_one_clear_line(expr):
    with pytest.raises(UsageError) as info:
        cron_trigger(expr, "UTC")
    message = str(info.value)
    assert message.startswith("invalid cron expression") and "\n" not in message
    assert "0 3 * * *" in message  # the hint shows a good one


def test_unknown_time_zone_is_one_clear_line():
    with pytest.raises(UsageError) as info:
        cron_trigger("0 3 * * *", "Asia/Atlantis")
    assert str(info.value).startswith("unknown time zone 'Asia/Atlantis'") and "\n" not in str(info.value)


@pytest.mark.parametrize("weekday, expected", [
    ("0", {"Sunday"}), ("7", {"Sunday"}), ("1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
    ("6,0", {"Saturday", "Sunday"}), ("*/3", {"Sunday", "Wednesday", "Saturday"}), ("mon", {"Monday"}),
])
def test_day_of_week_counts_from_sunday_as_in_cron(weekday, expected):
    from datetime import datetime, timedelta, timezone

    trigger = cron_trigger(f"0 12 * * {weekday}")
    seen, t = set(), datetime(2026, 11, 28, tzinfo=timezone.utc)
    for _ in range(14):
        t = trigger.get_next_fire_time(None, t + timedelta(seconds=1))
        seen.add(t.strftime("%A"))
    assert seen == expected
