"""The recycle bin's retention: backups kept when their cluster was unregistered (``recycled``)
go a recycle-bin period after they entered the bin (``recycled_at``).

The period is ``BACKUPCTL_RECYCLE_BIN_RETENTION`` (written as retention periods are: ``30d``,
``12h``, ``30d12h``), 30 days by default. As everywhere in retention, a chain is never broken:
a recycled backup that another kept backup needs (a recycled incremental not yet expired, or a
backup taken out of the bin) stays until that one goes too. Protected and running backups stay.
Pure, like ``policy.decide``: the catalogue side is in ``sweep``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backupctl.errors import UsageError
from backupctl.retention.period import format_period, parse_period
from backupctl.retention.policy import BackupRecord, Decision

ENV_VAR = "BACKUPCTL_RECYCLE_BIN_RETENTION"
DEFAULT_PERIOD = "30d"


def recycle_bin_period() -> timedelta:
    """The configured recycle-bin period (``BACKUPCTL_RECYCLE_BIN_RETENTION``, default 30d)."""
    text = os.environ.get(ENV_VAR) or DEFAULT_PERIOD
    try:
        return parse_period(text)
    except UsageError as exc:
        raise UsageError(f"invalid {ENV_VAR} {text!r}: {exc.message}", exc.hint) from None


@dataclass(frozen=True)
class RecycledBackup:
    """A backup in the recycle bin. ``needed_by``: a backup outside the bin that needs it."""

    record: BackupRecord
    recycled_at: datetime
    needed_by: str | None = None


def decide_recycle_bin(backups: list[RecycledBackup], period: timedelta, now: datetime) -> Decision:
    """Which recycled backups stay, and why; the others go (children before parents, see
    ``Decision.deleted``)."""
    records = {b.record.id: b.record for b in backups}
    decision = Decision(records=records)
    expired: dict[str, str] = {}
    for b in backups:
        r = b.record
        until = b.recycled_at + period
        if r.protected:
            decision._keep(r.id, "deletion protection on")
        elif r.running:
            decision._keep(r.id, "still running")
        elif b.needed_by:
            decision._keep(r.id, f"needed by {b.needed_by}, which is not in the recycle bin")
        elif now < until:
            decision._keep(r.id, f"in the recycle bin until {until:%Y-%m-%d %H:%M} UTC "
                                 f"({format_period(period)} after {b.recycled_at:%Y-%m-%d %H:%M})")
        else:
            expired[r.id] = (f"in the recycle bin since {b.recycled_at:%Y-%m-%d %H:%M} UTC, "
                             f"longer than {format_period(period)}")
    for rid in list(decision.keep):                 # the chains the kept ones need stay with them
        child, parent = rid, records[rid].parent_id
        while parent in records:
            decision._keep(parent, f"needed by {child}")
            child, parent = parent, records[parent].parent_id
    decision.delete = {rid: why for rid, why in expired.items() if rid not in decision.keep}
    return decision


@dataclass
class RecycleBinPlan:
    period: timedelta
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {"period": format_period(self.period), **self.decision.to_dict()}
