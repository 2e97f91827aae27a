"""What a running job may know: its scheduler's runtime and its scheduled fire time.

APScheduler stores jobs as "module:function" plus arguments, so job functions are module-level
and cannot close over a scheduler. The executor sets these context variables around each run.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine


@dataclass(frozen=True)
class ScheduledBackup:
    """A backup the scheduler asks for. ``lease_owner`` holds the cluster+method lease for it
    (the backup service uses that lease as is instead of taking it again)."""

    policy_id: Any
    org: str | None
    cluster: str
    method: str
    fire_time: datetime
    backup_type: str = "full"
    lease_owner: str | None = None


@dataclass(frozen=True)
class Skipped:
    """Returned by a job that decided not to run (recorded as ``skipped`` with the reason)."""

    reason: str


@dataclass
class Runtime:
    engine: Engine
    owner: str
    run_backup: Callable[[ScheduledBackup], Any]
    sweep: Callable[[], Any] | None = None
    lease_ttl: float = 600.0


current_runtime: contextvars.ContextVar[Runtime] = contextvars.ContextVar("backupctl_scheduler_runtime")
current_fire_time: contextvars.ContextVar[datetime] = contextvars.ContextVar("backupctl_scheduler_fire_time")
