"""Claiming a (job, fire time) so that exactly one scheduler runs it, and recording how it went."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from backupctl.catalog.models import scheduler_runs as runs

log = logging.getLogger(__name__)


def fire_time_key(fire_time: datetime) -> str:
    """The text form stored in ``scheduled_at``: UTC, microseconds, always the same length."""
    if fire_time.tzinfo is None:
        raise ValueError("fire times must be timezone-aware")
    return fire_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claim_run(engine: Engine, job_id: str, fire_time: datetime, owner: str) -> bool:
    """Insert the claim row; True for the one scheduler whose INSERT succeeds."""
    try:
        with engine.begin() as conn:
            conn.execute(insert(runs).values(job_id=job_id, scheduled_at=fire_time_key(fire_time), owner=owner,
                                             claimed_at=datetime.now(timezone.utc), status="running"))
    except IntegrityError:
        return False
    return True


def finish_run(engine: Engine, job_id: str, fire_time: datetime, status: str, detail: str | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(update(runs).where(runs.c.job_id == job_id, runs.c.scheduled_at == fire_time_key(fire_time))
                     .values(status=status, detail=detail, finished_at=datetime.now(timezone.utc)))


def recorded_runs(engine: Engine, job_id: str | None = None) -> list[dict]:
    """Claimed runs, oldest fire time first (for ``scheduler`` status output and tests)."""
    q = select(runs).order_by(runs.c.scheduled_at, runs.c.id)
    if job_id is not None:
        q = q.where(runs.c.job_id == job_id)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(q)]
