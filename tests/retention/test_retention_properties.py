"""Property tests: random histories of full/incremental/continuous backups under random rules.

Whatever the history and the rules: every kept backup stays restorable, the PITR window stays
covered wherever the full history covered it, running and protected backups stay, and every
kept backup is kept by a rule that selects it or because a kept backup needs it.
The oracles here are written independently of the implementation.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupctl.retention import BackupRecord, RetentionRules, decide

EPOCH = datetime(2024, 3, 1, tzinfo=timezone.utc)
ZONES = ["UTC", "Asia/Shanghai", "America/New_York"]


def at(minutes: int) -> datetime:
    return EPOCH + timedelta(minutes=minutes)


# ---------------------------------------------------------------- generation

base_step = st.fixed_dictionaries({
    "kind": st.sampled_from(["full", "incremental", "incremental", "snapshot"]),
    "gap": st.integers(0, 3 * 24 * 60),          # minutes since the previous base backup started
    "duration": st.integers(0, 180),
    "state": st.sampled_from(["completed"] * 6 + ["failed", "running"]),
    "protected": st.integers(0, 5).map(lambda n: n == 0),
    "parent": st.integers(0, 10**6),              # which earlier backup an incremental builds on
    "orphan": st.integers(0, 15),                 # 0: parent id points at a backup no longer listed
})

log_step = st.fixed_dictionaries({
    "gap": st.integers(-120, 12 * 60),           # negative: overlaps the previous segment
    "length": st.integers(1, 2 * 24 * 60),
    "state": st.sampled_from(["completed"] * 8 + ["failed", "running"]),
    "protected": st.integers(0, 9).map(lambda n: n == 0),
})


@st.composite
def histories(draw):
    records: list[BackupRecord] = []
    t = draw(st.integers(0, 600))
    base_steps = draw(st.lists(base_step, max_size=14))
    candidates: list[str] = []
    for i, s in enumerate(base_steps):
        t += s["gap"]
        rid = f"b{i}"
        kind = s["kind"]
        parent = None
        if kind == "incremental":
            if s["orphan"] == 0 or not candidates:
                parent = "gone"
            else:
                parent = candidates[s["parent"] % len(candidates)]
        protected = s["protected"]
        state = s["state"]
        records.append(BackupRecord(
            id=rid, type=kind, start=at(t), end=None if state == "running" else at(t + s["duration"]),
            parent_id=parent, completed=state == "completed", running=state == "running", protected=protected))
        if kind in ("full", "incremental"):
            candidates.append(rid)
    # continuous log segments on their own timeline
    lt = draw(st.integers(0, 24 * 60))
    for i, s in enumerate(draw(st.lists(log_step, max_size=10))):
        lt = max(0, lt + s["gap"])
        state = s["state"]
        end = lt + s["length"]
        records.append(BackupRecord(
            id=f"c{i}", type="continuous", start=at(lt), end=None if state == "running" else at(end),
            completed=state == "completed", running=state == "running", protected=s["protected"],
            restorable_from=at(lt), restorable_to=at(end)))
        lt = end
    last = max([r.end or r.start for r in records] + [r.restorable_to for r in records if r.restorable_to] + [at(t)])
    now = last + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
    return records, now


def maybe(strategy):
    return st.none() | strategy


rules_strategy = st.builds(
    RetentionRules,
    keep_last=st.integers(0, 4),
    keep_hourly=st.integers(0, 3),
    keep_daily=st.integers(0, 4),
    keep_weekly=st.integers(0, 3),
    keep_monthly=st.integers(0, 2),
    keep_yearly=st.integers(0, 2),
    period=maybe(st.integers(1, 10 * 24 * 60).map(lambda m: timedelta(minutes=m))),
    pitr_window=maybe(st.integers(1, 10 * 24 * 60).map(lambda m: timedelta(minutes=m))),
    timezone=st.sampled_from(ZONES),
)


# ---------------------------------------------------------------- oracles

def chain_ok(rid: str, by_id: dict[str, BackupRecord]) -> bool:
    """Restorable from ``by_id`` alone: every backup down the chain present and completed."""
    seen = set()
    while rid is not None:
        if rid in seen or rid not in by_id or not by_id[rid].completed:
            return False
        seen.add(rid)
        rid = by_id[rid].parent_id
    return True


def intervals(records) -> list[tuple[datetime, datetime]]:
    segs = sorted((r.restorable_from, r.restorable_to) for r in records
                  if r.type.value == "continuous" and not r.failed and r.restorable_to is not None)
    merged: list[list[datetime]] = []
    for a, b in segs:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def covered(a: datetime, b: datetime, runs) -> bool:
    return any(x <= a and b <= y for x, y in runs)


def pitr_restorable(t: datetime, records) -> bool:
    """Can ``records`` restore to time ``t`` by replaying logs on a base backup?"""
    by_id = {r.id: r for r in records}
    runs = intervals(records)
    return any(r.type.value in ("full", "incremental") and chain_ok(r.id, by_id) and r.end <= t
               and covered(r.end, t, runs) for r in records)


def usable_bases(records):
    by_id = {r.id: r for r in records}
    return [r for r in records if r.type.value != "continuous" and chain_ok(r.id, by_id)]


def newest_first(rs):
    """Newest end first; equal times are ordered by id (the documented tie-break)."""
    return sorted(rs, key=lambda r: (-r.end.timestamp(), -r.start.timestamp(), r.id))


def bucket_selection(records, rules: RetentionRules) -> dict[str, set[str]]:
    """For each calendar rule, the newest backup of each of its N newest non-empty buckets."""
    tz = ZoneInfo(rules.timezone)
    fmt = {"hourly": lambda d: (d.year, d.month, d.day, d.hour), "daily": lambda d: (d.year, d.month, d.day),
           "weekly": lambda d: tuple(d.isocalendar())[:2], "monthly": lambda d: (d.year, d.month),
           "yearly": lambda d: (d.year,)}
    out = {}
    for name, key in fmt.items():
        n = getattr(rules, f"keep_{name}")
        groups: dict[tuple, list[BackupRecord]] = {}
        for r in usable_bases(records):
            groups.setdefault(key(r.end.astimezone(tz)), []).append(r)
        newest = sorted(groups, reverse=True)[:n]
        out[name] = {newest_first(groups[k])[0].id for k in newest}
    return out


# ---------------------------------------------------------------- properties

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), rules_strategy)
def test_retention_never_breaks_what_it_keeps_and_keeps_only_what_rules_select(history, rules):
    records, now = history
    by_id = {r.id: r for r in records}
    d = decide(records, rules, now)

    # a partition of the input
    assert set(d.keep) | set(d.delete) == set(by_id)
    assert not set(d.keep) & set(d.delete)
    kept = [by_id[i] for i in d.keep]
    kept_by_id = {r.id: r for r in kept}

    # running and protected backups are never deleted
    for r in records:
        if r.running or r.protected:
            assert r.id in d.keep, (r, d.delete.get(r.id))

    # chains are never broken: the parent of anything kept is kept
    for r in kept:
        if r.parent_id in by_id:
            assert r.parent_id in d.keep, f"{r.id} kept but its parent {r.parent_id} goes"

    # every kept backup that was restorable before is restorable from what is kept
    for r in kept:
        if chain_ok(r.id, by_id):
            assert chain_ok(r.id, kept_by_id), r.id

    # the PITR window stays covered wherever the whole history covered it
    if rules.pitr_window is not None and not rules.is_empty():
        w = now - rules.pitr_window
        points = {w, now}
        for r in records:
            points.update(x for x in (r.start, r.end, r.restorable_from, r.restorable_to) if x is not None)
        points = sorted(p for p in points if w <= p <= now)
        samples = points + [a + (b - a) / 2 for a, b in zip(points, points[1:])]
        for t in samples:
            if pitr_restorable(t, records):
                assert pitr_restorable(t, kept), f"PITR to {t} lost (window starts {w})"

    if rules.is_empty():
        assert set(d.keep) == set(by_id)
        return

    # everything the rules select is kept ...
    bases = newest_first(usable_bases(records))
    selected_last = {r.id for r in bases[:rules.keep_last]}
    selected_buckets = bucket_selection(records, rules)
    selected_period = ({r.id for r in bases if r.end >= now - rules.period} if rules.period else set())
    for ids in [selected_last, selected_period, *selected_buckets.values()]:
        assert ids <= set(d.keep)

    # ... and nothing else is kept without a reason that holds
    pitr_bases = set()
    for rid, reasons in d.keep.items():
        r = by_id[rid]
        assert reasons, rid
        justified = False
        for reason in reasons:
            if reason.startswith("last "):
                assert rid in selected_last, (rid, reason)
            elif reason.split(" ")[0] in selected_buckets:
                assert rid in selected_buckets[reason.split(" ")[0]], (rid, reason)
            elif reason.startswith("within "):
                assert rid in selected_period, (rid, reason)
            elif reason == "running":
                assert r.running
            elif reason == "protected":
                assert r.protected
            elif reason.startswith("needed by "):
                child = reason[len("needed by "):]
                assert child in d.keep and by_id[child].parent_id == rid, (rid, reason)
            elif reason.startswith("pitr window") and reason.endswith(": base"):
                assert rules.pitr_window is not None
                assert r.type.value in ("full", "incremental") and chain_ok(rid, by_id)
                pitr_bases.add(rid)
            elif reason.startswith("pitr window") and ": logs from " in reason:
                base = by_id[reason.split(": logs from ")[1]]
                assert r.type.value == "continuous" and not r.failed
                # logs from before the base started are not needed
                assert r.restorable_to >= base.start, (rid, reason)
                # and the base is one the window starts from
                assert "pitr window" in " ".join(d.keep[base.id])
            else:
                raise AssertionError(f"unexplained reason {reason!r} for {rid}")
            justified = True
        assert justified

    # one PITR base per gap-free log run reaching into the window, and the newest possible one
    if rules.pitr_window is not None:
        w = now - rules.pitr_window
        runs = intervals(records)
        for rid in pitr_bases:
            b = by_id[rid]
            run = next(run for run in runs if run[0] <= b.end <= run[1])
            assert run[1] >= w
            others = [o for o in usable_bases(records) if o.type.value in ("full", "incremental")
                      and run[0] <= o.end <= run[1] and o.id != rid]
            if b.end <= w:
                assert not [o for o in others if b.end < o.end <= w], "an older base than needed was kept"
            else:
                assert not [o for o in others if o.end <= b.end], "a base closer to the window start exists"
        assert len(pitr_bases) <= len([run for run in runs if run[1] >= w])


@settings(max_examples=150, deadline=None)
@given(histories(), rules_strategy)
def test_deleting_in_the_given_order_never_orphans_a_remaining_backup(history, rules):
    """Deleting children before parents: after each step no remaining backup lost its parent."""
    records, now = history
    d = decide(records, rules, now)
    remaining = {r.id: r for r in records}
    for r in d.deleted():
        del remaining[r.id]
        for other in remaining.values():
            if other.parent_id == r.id:
                assert other.id not in d.keep, f"kept {other.id} would lose its parent {r.id}"
                assert other.id in d.delete
                # the child must come earlier in the deletion order
                raise AssertionError(f"{r.id} deleted before its child {other.id}")
