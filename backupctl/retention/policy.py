"""Which backups a retention policy keeps, and why. Pure: no catalogue, no repository, no clock.

``decide(records, rules, now)`` returns a :class:`Decision`: every backup is either kept, with
the rule(s) that keep it, or deleted, with the reason it goes. The rules are those of restic's
``forget`` (keep the last N; keep the newest backup of each of the last N hours, days, weeks,
months, years), KubeBlocks' ``retentionPeriod`` and a point-in-time-recovery window for
continuous (log) backups. Whatever the rules say, the decision holds these invariants:

* a chain is never broken: the parent of a kept backup is kept ("needed by <id>"), all the way
  down to its full backup;
* for a PITR window, the base backup the window starts from and every log segment from that
  base up to now are kept;
* a running backup (and its chain) is never deleted;
* a protected backup (and its chain) is never deleted;
* with no rule at all, everything is kept (an empty policy never deletes).

Selection rules (last N, buckets, period) choose among *restorable* full, incremental and
snapshot backups: completed, with their whole parent chain present and completed. Continuous
log segments are kept only by the PITR window (or because they run or are protected); a
policy whose continuous method has a retention period should pass it as ``pitr_window``.
A base backup is taken to be consistent at its end time; replaying logs from there reaches any
later time the logs cover without a gap. The logs written while the base ran are kept as well.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backupctl.errors import UsageError
from backupctl.retention.period import format_period, parse_period


class BackupType(str, enum.Enum):
    FULL = "full"
    INCREMENTAL = "incremental"
    CONTINUOUS = "continuous"
    SNAPSHOT = "snapshot"


#: Types a point-in-time restore can start from (logs are replayed on top of them).
PITR_BASE_TYPES = frozenset({BackupType.FULL, BackupType.INCREMENTAL})


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC datetime; a naive one is taken to be UTC (as SQLite returns them)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


@dataclass(frozen=True)
class BackupRecord:
    """What retention needs to know about one backup.

    ``pinned``: a reason to keep it outside the rules (its chain is kept too).
    ``completed``: the backup finished and is usable. ``running``: it is still being taken
    (never deleted). Neither: it failed. For continuous backups ``restorable_from`` and
    ``restorable_to`` are the time range their logs cover (default: start and end).
    """

    id: str
    type: BackupType
    start: datetime
    end: datetime | None = None
    parent_id: str | None = None
    completed: bool = True
    running: bool = False
    protected: bool = False
    restorable_from: datetime | None = None
    restorable_to: datetime | None = None
    pinned: str | None = None  # kept whatever the rules, for this reason (e.g. "not made by this policy")

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "type", BackupType(self.type))
        except ValueError:
            raise UsageError(f"backup {self.id}: unknown type {self.type!r}",
                             hint="use full, incremental, continuous or snapshot") from None
        for name in ("start", "end", "restorable_from", "restorable_to"):
            object.__setattr__(self, name, _utc(getattr(self, name)))
        if self.completed and self.running:
            raise ValueError(f"backup {self.id}: cannot be both completed and running")
        if self.completed and self.end is None:
            raise ValueError(f"backup {self.id}: a completed backup needs an end time")
        if self.type is BackupType.CONTINUOUS:
            if self.restorable_from is None:
                object.__setattr__(self, "restorable_from", self.start)
            if self.restorable_to is None and self.end is not None:
                object.__setattr__(self, "restorable_to", self.end)

    @property
    def is_log(self) -> bool:
        return self.type is BackupType.CONTINUOUS

    @property
    def failed(self) -> bool:
        return not self.completed and not self.running


_COUNT_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


@dataclass(frozen=True)
class RetentionRules:
    """A retention policy. Counts of 0 and periods of None mean "rule not set"."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    period: timedelta | None = None
    pitr_window: timedelta | None = None
    timezone: str = "UTC"  # the zone whose calendar the hourly..yearly buckets follow

    def __post_init__(self) -> None:
        for name in _COUNT_RULES:
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, 0)
            elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"retention rule {name.replace('_', '-')} must be a whole number >= 0, "
                                 f"not {value!r}")
        for name in ("period", "pitr_window"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, parse_period(value))
            elif value is not None and value <= timedelta():
                raise UsageError(f"retention rule {name.replace('_', '-')} must be positive")
        zone(self.timezone)

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> RetentionRules:
        """From a dict such as a policy stores: keys as the fields, or camelCase
        (``keepLast``, ``retentionPeriod``, ``pitrWindow``); periods as strings like ``7d``."""
        data = dict(data or {})
        aliases = {"keepLast": "keep_last", "keepHourly": "keep_hourly", "keepDaily": "keep_daily",
                   "keepWeekly": "keep_weekly", "keepMonthly": "keep_monthly", "keepYearly": "keep_yearly",
                   "retentionPeriod": "period", "retention_period": "period", "pitrWindow": "pitr_window",
                   "timeZone": "timezone"}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = aliases.get(key, key)
            if name not in cls.__dataclass_fields__:
                raise UsageError(f"unknown retention rule {key!r}",
                                 hint="use keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, "
                                      "keep_yearly, period, pitr_window")
            if value in (None, ""):
                continue
            kwargs[name] = value
        return cls(**kwargs)

    def is_empty(self) -> bool:
        return not any(getattr(self, n) for n in _COUNT_RULES) and self.period is None and self.pitr_window is None

    def describe(self) -> str:
        parts = [f"{n.replace('_', '-')} {getattr(self, n)}" for n in _COUNT_RULES if getattr(self, n)]
        if self.period is not None:
            parts.append(f"period {format_period(self.period)}")
        if self.pitr_window is not None:
            parts.append(f"pitr-window {format_period(self.pitr_window)}")
        return ", ".join(parts) or "no rules (keep everything)"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r}", hint="use an IANA name such as UTC or Asia/Shanghai") from None


@dataclass
class Decision:
    """``keep`` maps each kept backup id to the reasons it stays; ``delete`` maps each other id
    to the reason it goes. Together they hold every backup given to :func:`decide`."""

    records: dict[str, BackupRecord]
    keep: dict[str, list[str]] = field(default_factory=dict)
    delete: dict[str, str] = field(default_factory=dict)

    def _keep(self, record_id: str, reason: str) -> bool:
        """Add a reason; True if the backup was not kept before."""
        reasons = self.keep.setdefault(record_id, [])
        if reason not in reasons:
            reasons.append(reason)
        return len(reasons) == 1

    def kept(self) -> list[BackupRecord]:
        return sorted((self.records[i] for i in self.keep), key=_newest_first_key)

    def deleted(self) -> list[BackupRecord]:
        """Backups to remove, children before parents, so deleting in this order never leaves a
        child without its parent."""
        pending = sorted((self.records[i] for i in self.delete), key=_newest_first_key)
        children: dict[str, int] = {}
        for r in pending:
            if r.parent_id in self.delete:
                children[r.parent_id] = children.get(r.parent_id, 0) + 1
        ordered: list[BackupRecord] = []
        while pending:
            ready = [r for r in pending if not children.get(r.id)] or pending[:1]  # [:1] only on a cycle
            for r in ready:
                ordered.append(r)
                if r.parent_id in children:
                    children[r.parent_id] -= 1
            done = {r.id for r in ready}
            pending = [r for r in pending if r.id not in done]
        return ordered

    def to_dict(self) -> dict[str, Any]:
        def row(r: BackupRecord, **extra: Any) -> dict[str, Any]:
            return {"id": r.id, "type": r.type.value, "start": r.start.isoformat(),
                    "end": r.end.isoformat() if r.end else None, "parent": r.parent_id, **extra}
        return {"keep": [row(r, reasons=self.keep[r.id]) for r in self.kept()],
                "delete": [row(r, reason=self.delete[r.id]) for r in self.deleted()]}


def _newest_first_key(r: BackupRecord) -> tuple:
    """Newest first (by end, then start); equal times are ordered by id, so ties are deterministic."""
    t = r.end or r.start
    return (-t.timestamp(), -r.start.timestamp(), r.id)


_BUCKETS: list[tuple[str, str, Callable[[datetime], str]]] = [
    ("keep_hourly", "hourly", lambda t: t.strftime("%Y-%m-%d %H:00")),
    ("keep_daily", "daily", lambda t: t.strftime("%Y-%m-%d")),
    ("keep_weekly", "weekly", lambda t: "%04d-W%02d" % t.isocalendar()[:2]),
    ("keep_monthly", "monthly", lambda t: t.strftime("%Y-%m")),
    ("keep_yearly", "yearly", lambda t: t.strftime("%Y")),
]


def restorable_ids(records: Iterable[BackupRecord]) -> set[str]:
    """Ids of the backups that can be restored from ``records`` alone: completed, and every
    ancestor present and completed."""
    by_id = {r.id: r for r in records}
    memo: dict[str, bool] = {}

    def ok(rid: str, seen: frozenset[str]) -> bool:
        if rid in memo:
            return memo[rid]
        r = by_id.get(rid)
        if r is None or not r.completed or rid in seen:
            result = False
        elif r.parent_id is None:
            result = True
        else:
            result = ok(r.parent_id, seen | {rid})
        memo[rid] = result
        return result

    return {rid for rid in by_id if ok(rid, frozenset())}


@dataclass
class LogRun:
    """A gap-free stretch of time covered by continuous log segments."""

    start: datetime
    end: datetime
    segments: list[BackupRecord]


def log_runs(records: Iterable[BackupRecord]) -> list[LogRun]:
    """Merge the time ranges of usable (completed or running) log segments into gap-free runs."""
    segs = sorted((r for r in records if r.is_log and not r.failed
                   and r.restorable_from is not None and r.restorable_to is not None),
                  key=lambda r: (r.restorable_from, r.restorable_to, r.id))
    runs: list[LogRun] = []
    for seg in segs:
        if runs and seg.restorable_from <= runs[-1].end:
            runs[-1].segments.append(seg)
            runs[-1].end = max(runs[-1].end, seg.restorable_to)
        else:
            runs.append(LogRun(seg.restorable_from, seg.restorable_to, [seg]))
    return runs


def decide(records: Iterable[BackupRecord], rules: RetentionRules, now: datetime) -> Decision:
    """Apply ``rules`` at time ``now`` to ``records`` (one policy's backups)."""
    now = _utc(now)
    records = list(records)
    by_id: dict[str, BackupRecord] = {}
    for r in records:
        if r.id in by_id:
            raise UsageError(f"backup id {r.id!r} appears twice")
        by_id[r.id] = r
    decision = Decision(records=by_id)

    if rules.is_empty():
        for r in records:
            decision._keep(r.id, "no retention rules")
        return decision

    usable = restorable_ids(records)
    bases = sorted((r for r in records if not r.is_log and r.id in usable), key=_newest_first_key)

    # keep the last N
    for r in bases[:rules.keep_last]:
        decision._keep(r.id, f"last {rules.keep_last}")

    # keep the newest of each of the last N hours/days/weeks/months/years (restic's forget)
    tz = zone(rules.timezone)
    for attr, label, key_of in _BUCKETS:
        remaining = getattr(rules, attr)
        previous: str | None = None
        for r in bases:
            if remaining <= 0:
                break
            key = key_of(r.end.astimezone(tz))
            if key != previous:
                decision._keep(r.id, f"{label} {key}")
                previous = key
                remaining -= 1

    # keep everything newer than the period (KubeBlocks' retentionPeriod)
    if rules.period is not None:
        cutoff = now - rules.period
        label = f"within {format_period(rules.period)}"
        for r in bases:
            if r.end >= cutoff:
                decision._keep(r.id, label)

    # point-in-time-recovery window
    if rules.pitr_window is not None:
        _keep_pitr_window(decision, records, usable, now - rules.pitr_window, format_period(rules.pitr_window))

    for r in records:
        if r.running:
            decision._keep(r.id, "running")
        if r.protected:
            decision._keep(r.id, "protected")
        if r.pinned:
            decision._keep(r.id, r.pinned)

    # never break a chain: walk each kept backup's ancestors
    for rid in list(decision.keep):
        child = by_id[rid]
        seen = {rid}
        while child.parent_id is not None and child.parent_id in by_id and child.parent_id not in seen:
            decision._keep(child.parent_id, f"needed by {child.id}")
            seen.add(child.parent_id)
            child = by_id[child.parent_id]

    for r in records:
        if r.id in decision.keep:
            continue
        if r.failed:
            why = "failed"
        elif r.id not in usable:
            why = "not restorable: its parent chain is incomplete"
        elif r.is_log:
            why = "log segment no PITR window needs"
        else:
            why = "no rule keeps it"
        decision.delete[r.id] = why
    return decision


def _keep_pitr_window(decision: Decision, records: list[BackupRecord], usable: set[str],
                      window_start: datetime, label: str) -> None:
    """For each gap-free log run reaching into the window, keep one base backup and the logs
    from that base on: the newest base that ends at or before the window start (so the whole
    window is covered), else the oldest base inside the window (covering as much of it as any
    backup can)."""
    pitr_bases = [r for r in records if r.type in PITR_BASE_TYPES and r.id in usable]
    for run in log_runs(records):
        if run.end < window_start:
            continue
        inside = [b for b in pitr_bases if run.start <= b.end <= run.end]
        if not inside:
            continue  # logs without a base to replay them on restore nothing
        before = [b for b in inside if b.end <= window_start]
        if before:
            base = max(before, key=lambda b: (b.end, b.start, b.id))
        else:
            base = min(inside, key=lambda b: (b.end, b.start, b.id))
        decision._keep(base.id, f"pitr window {label}: base")
        for seg in run.segments:
            if seg.restorable_to >= base.start:
                decision._keep(seg.id, f"pitr window {label}: logs from {base.id}")
