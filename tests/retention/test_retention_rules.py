"""Each retention rule on a small history, as a specification."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from backupctl.errors import UsageError
from backupctl.retention import BackupRecord, RetentionRules, decide

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a Monday
H = timedelta(hours=1)
D = timedelta(days=1)


def full(rid, start, hours=1, **kw):
    return BackupRecord(rid, "full", start, start + hours * H, **kw)


def incr(rid, parent, start, **kw):
    return BackupRecord(rid, "incremental", start, start + H / 2, parent_id=parent, **kw)


def logs(rid, start, end, **kw):
    return BackupRecord(rid, "continuous", start, end, restorable_from=start, restorable_to=end, **kw)


def daily_fulls(n):
    return [full(f"f{i}", T0 + i * D) for i in range(n)]


def test_keep_last_keeps_the_n_newest():
    d = decide(daily_fulls(5), RetentionRules(keep_last=2), now=T0 + 10 * D)
    assert set(d.keep) == {"f4", "f3"}
    assert d.keep["f4"] == ["last 2"]
    assert d.delete == {"f0": "no rule keeps it", "f1": "no rule keeps it", "f2": "no rule keeps it"}


def test_keep_daily_keeps_the_newest_of_each_day():
    history = [full("mon-a", T0 + 1 * H), full("mon-b", T0 + 5 * H), full("tue", T0 + D + 2 * H),
               full("wed", T0 + 2 * D)]
    d = decide(history, RetentionRules(keep_daily=2), now=T0 + 3 * D)
    assert set(d.keep) == {"wed", "tue"}
    assert d.keep["tue"] == ["daily 2024-01-02"]
    d = decide(history, RetentionRules(keep_daily=3), now=T0 + 3 * D)
    assert set(d.keep) == {"wed", "tue", "mon-b"}


def test_ties_in_time_are_broken_by_id():
    d = decide([full("b", T0), full("a", T0)], RetentionRules(keep_last=1), now=T0 + D)
    assert set(d.keep) == {"a"}


def test_daily_buckets_follow_the_policy_time_zone():
    # ending 15:00 and 17:00 UTC on Jan 1: the same day in UTC, Jan 1 23:00 and Jan 2 01:00 in Shanghai
    history = [full("a", T0 + 14 * H), full("b", T0 + 16 * H)]
    assert set(decide(history, RetentionRules(keep_daily=2), T0 + 2 * D).keep) == {"b"}
    d = decide(history, RetentionRules(keep_daily=2, timezone="Asia/Shanghai"), T0 + 2 * D)
    assert d.keep == {"b": ["daily 2024-01-02"], "a": ["daily 2024-01-01"]}


@pytest.mark.parametrize("rule,expected", [
    ("keep_hourly", {"f13", "f12"}),
    ("keep_weekly", {"f13", "f6"}),       # weeks of Jan 8 and Jan 1
    ("keep_monthly", {"f13"}),
    ("keep_yearly", {"f13"}),
])
def test_calendar_rules(rule, expected):
    d = decide(daily_fulls(14), RetentionRules(**{rule: 2}), now=T0 + 20 * D)
    assert set(d.keep) == expected


def test_period_keeps_what_ended_within_it():
    d = decide(daily_fulls(10), RetentionRules(period="3d"), now=T0 + 9 * D + 2 * H)
    assert set(d.keep) == {"f9", "f8", "f7"}  # f6 ended 3d1h before now
    assert d.keep["f8"] == ["within 3d"]


def test_kept_incremental_keeps_its_whole_chain():
    history = [full("f", T0), incr("i1", "f", T0 + D), incr("i2", "i1", T0 + 2 * D), full("g", T0 + 3 * D)]
    d = decide(history, RetentionRules(keep_last=1), now=T0 + 4 * D)
    assert set(d.keep) == {"g"}
    history.append(incr("i3", "i2", T0 + 4 * D))
    d = decide(history, RetentionRules(keep_last=1), now=T0 + 5 * D)
    assert d.keep == {"i3": ["last 1"], "i2": ["needed by i3"], "i1": ["needed by i2"], "f": ["needed by i1"]}
    assert set(d.delete) == {"g"}


def test_incremental_with_a_missing_parent_is_not_selected():
    history = [full("f", T0), incr("orphan", "gone", T0 + D)]
    d = decide(history, RetentionRules(keep_last=1), now=T0 + 2 * D)
    assert set(d.keep) == {"f"}
    assert d.delete == {"orphan": "not restorable: its parent chain is incomplete"}


def test_running_and_protected_backups_are_never_deleted():
    history = [full("old", T0, protected=True), incr("child", "old", T0 + D, protected=True),
               full("new", T0 + 2 * D),
               BackupRecord("now", "incremental", T0 + 3 * D, parent_id="new", completed=False, running=True),
               BackupRecord("broken", "full", T0 + 3 * D, completed=False)]
    d = decide(history, RetentionRules(keep_last=1), now=T0 + 4 * D)
    assert d.keep["child"] == ["protected"] and d.keep["old"] == ["protected", "needed by child"]
    assert d.keep["now"] == ["running"]
    assert "needed by now" in d.keep["new"]
    assert d.delete == {"broken": "failed"}


def test_pitr_window_keeps_the_base_it_starts_from_and_the_logs_after_it():
    history = [full("f1", T0), full("f2", T0 + 2 * D), full("f3", T0 + 4 * D), full("f4", T0 + 6 * D),
               logs("c1", T0 - H, T0 + 3 * D), logs("c2", T0 + 3 * D, T0 + 5 * D), logs("c3", T0 + 5 * D, T0 + 7 * D)]
    d = decide(history, RetentionRules(keep_last=1, pitr_window="3d"), now=T0 + 7 * D)
    # window starts at T0+4d; f3 ends at T0+4d+1h, so f2 (ends T0+2d+1h) is the base it starts from
    assert d.keep["f2"] == ["pitr window 3d: base"]
    assert d.keep["f4"] == ["last 1"]
    assert d.keep["c1"] == ["pitr window 3d: logs from f2"]
    assert {"c2", "c3"} <= set(d.keep)
    assert d.delete == {"f1": "no rule keeps it", "f3": "no rule keeps it"}


def test_logs_outside_the_window_go():
    history = [full("f1", T0), logs("c1", T0, T0 + D), full("f2", T0 + 5 * D), logs("c2", T0 + 5 * D, T0 + 6 * D)]
    d = decide(history, RetentionRules(pitr_window="12h"), now=T0 + 6 * D)
    assert set(d.keep) == {"f2", "c2"}
    assert d.delete["c1"] == "log segment no PITR window needs"


def test_a_gap_in_the_logs_keeps_a_base_on_each_side():
    history = [full("f1", T0), logs("c1", T0, T0 + 2 * D), logs("c2", T0 + 3 * D, T0 + 5 * D),
               full("f2", T0 + 3 * D), full("f0", T0 - 2 * D)]
    d = decide(history, RetentionRules(pitr_window="4d"), now=T0 + 5 * D)
    # window from T0+1d: f1 + c1 cover T0+1d..T0+2d; after the gap, f2 + c2 cover T0+3d1h..T0+5d
    assert d.keep == {"f1": ["pitr window 4d: base"], "c1": ["pitr window 4d: logs from f1"],
                      "f2": ["pitr window 4d: base"], "c2": ["pitr window 4d: logs from f2"]}
    assert set(d.delete) == {"f0"}


def test_no_rules_keep_everything():
    d = decide(daily_fulls(3), RetentionRules(), now=T0 + 10 * D)
    assert set(d.keep) == {"f0", "f1", "f2"} and not d.delete


def test_rules_from_a_policy_mapping():
    rules = RetentionRules.from_mapping({"keepLast": 3, "keep_daily": 7, "retentionPeriod": "30d12h",
                                         "pitr_window": "7d"})
    assert rules.keep_last == 3 and rules.keep_daily == 7
    assert rules.period == timedelta(days=30, hours=12) and rules.pitr_window == 7 * D
    assert rules.describe() == "keep-last 3, keep-daily 7, period 30d12h, pitr-window 7d"


@pytest.mark.parametrize("mapping,needle", [
    ({"keep_last": -1}, "keep-last"),
    ({"keep_daily": "x"}, "keep-daily"),
    ({"period": "7 days"}, "retention period"),
    ({"pitr_window": "forever"}, "retention period"),
    ({"keep_forever": 1}, "unknown retention rule"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
])
def test_bad_rules_are_one_clear_line(mapping, needle):
    with pytest.raises(UsageError) as info:
        RetentionRules.from_mapping(mapping)
    assert needle in str(info.value) and "\n" not in str(info.value)
