"""The backup scheduler: APScheduler with its jobs in the catalogue database.

Policies' schedules become jobs (``sync``), re-read every ``sync_interval`` seconds so that a
changed policy changes its jobs. Jobs coalesce missed runs into one and never run twice at
once in one process (``max_instances=1``); a lease keeps runs of one cluster and method from
overlapping across processes, and a claim row makes each fire time run in one process only.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from sqlalchemy import Engine

from backupctl.catalog.db import upgrade_to_head
from backupctl.cron import cron_trigger
from scheduler.context import Runtime, ScheduledBackup
from scheduler.executor import ClaimingExecutor
from scheduler.jobs import run_retention_sweep
from scheduler.sync import PolicySchedule, SyncReport, sync_jobs

log = logging.getLogger(__name__)

RETENTION_JOB_ID = "retention-sweep"
SYNC_JOB_ID = "policy-sync"


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _BackgroundScheduler(BackgroundScheduler):
    """APScheduler 3's BackgroundScheduler processes due jobs once more after ``shutdown``
    (its loop wakes, then checks the state): the executors are gone by then, so a job due at
    that moment fails to submit yet has its next run time advanced, and its run is lost.
    Here a stopped scheduler processes nothing; the job stays due for the next start."""

    def _process_jobs(self):  # noqa: ANN202 - APScheduler's signature
        if self.state == STATE_STOPPED:
            return None
        return super()._process_jobs()


@dataclass
class SchedulerConfig:
    engine: Engine
    list_schedules: Callable[[], Iterable[PolicySchedule]]
    run_backup: Callable[[ScheduledBackup], Any]
    sweep: Callable[[], Any] | None = None
    sweep_cron: str | None = "23 * * * *"      # hourly; None: no retention sweep job
    sweep_timezone: str = "UTC"
    sync_interval: float = 30.0                 # seconds between re-reads of the policies
    misfire_grace_time: int | None = None       # None: a missed run is always caught up (once)
    lease_ttl: float = 600.0
    max_workers: int = 8
    owner: str = field(default_factory=default_owner)


class BackupScheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.runtime = Runtime(engine=config.engine, owner=config.owner, run_backup=config.run_backup,
                               sweep=config.sweep, lease_ttl=config.lease_ttl)
        self.job_defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": config.misfire_grace_time}
        self.aps = _BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=config.engine), "local": MemoryJobStore()},
            executors={"default": ClaimingExecutor(self.runtime, config.max_workers),
                       "local": ThreadPoolExecutor(1)},
            job_defaults=self.job_defaults,
            timezone="UTC",
        )
        self._sync_lock = threading.Lock()

    def start(self) -> SyncReport:
        """Start firing jobs: bring the catalogue's schema (with the scheduler's tables) to head,
        sync the policies (missed runs coalesce), go."""
        upgrade_to_head(self.config.engine)
        self.aps.start(paused=True)
        report = self.sync()
        if self.config.sweep is not None and self.config.sweep_cron:
            trigger = cron_trigger(self.config.sweep_cron, self.config.sweep_timezone)
            job = self.aps.get_job(RETENTION_JOB_ID, jobstore="default")
            name = f"retention sweep '{self.config.sweep_cron}' {self.config.sweep_timezone}"
            if job is None or job.name != name:
                self.aps.add_job(run_retention_sweep, trigger, id=RETENTION_JOB_ID, name=name, jobstore="default",
                                 executor="default", replace_existing=True)
        if self.config.sync_interval:
            self.aps.add_job(self._sync_quietly, "interval", seconds=self.config.sync_interval, id=SYNC_JOB_ID,
                             jobstore="local", executor="local", replace_existing=True)
        self.aps.resume()
        return report

    def sync(self) -> SyncReport:
        with self._sync_lock:
            return sync_jobs(self.aps, self.config.list_schedules(), jobstore="default", executor="default",
                             job_defaults=self.job_defaults)

    def _sync_quietly(self) -> None:
        try:
            report = self.sync()
        except Exception:  # noqa: BLE001 - keep scheduling; the next sync tries again
            log.exception("syncing policies into the scheduler failed")
            return
        for job_id, why in report.invalid.items():
            log.error("schedule %s not scheduled: %s", job_id, why)

    def shutdown(self, wait: bool = True) -> None:
        if self.aps.running:
            self.aps.shutdown(wait=wait)
