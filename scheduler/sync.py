"""Reconciling scheduled jobs with the policies' schedules.

Each enabled schedule of a policy is one job, ``backup:<policy id>:<method>:<backup type>``, so
a full and an incremental schedule of one method are two jobs. A job whose
schedule is unchanged is left alone (so its next run time, and runs missed while the scheduler
was down, survive a restart); a changed one is replaced; one whose schedule was disabled or
removed is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from apscheduler.jobstores.base import ConflictingIdError, JobLookupError

from backupctl.cron import cron_trigger
from backupctl.errors import BackupctlError

log = logging.getLogger(__name__)

BACKUP_JOB_PREFIX = "backup:"


@dataclass(frozen=True)
class PolicySchedule:
    """One method's schedule of one policy, as the scheduler needs it."""

    policy_id: Any
    cluster: str
    method: str
    cron: str
    timezone: str = "UTC"
    enabled: bool = True
    org: str | None = None
    backup_type: str = "full"

    @property
    def job_id(self) -> str:
        return f"{BACKUP_JOB_PREFIX}{self.policy_id}:{self.method}:{self.backup_type}"

    @property
    def job_name(self) -> str:
        # Holds everything that defines the job, so a change in any of it is seen by sync.
        return (f"{self.org or ''}/{self.cluster} {self.method} {self.backup_type} '{self.cron}' "
                f"{self.timezone or 'UTC'}")


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)


def sync_jobs(scheduler, schedules: Iterable[PolicySchedule], *, jobstore: str = "default",  # noqa: ANN001
              executor: str = "default", job_defaults: dict[str, Any] | None = None) -> SyncReport:
    """Make the backup jobs in ``jobstore`` match ``schedules``. A schedule with an invalid
    cron or time zone is reported in ``invalid`` and its job removed, the others still sync."""
    report = SyncReport()
    wanted: dict[str, PolicySchedule] = {}
    for s in schedules:
        if s.enabled:
            wanted[s.job_id] = s
    existing = {j.id: j for j in scheduler.get_jobs(jobstore=jobstore) if j.id.startswith(BACKUP_JOB_PREFIX)}
    from scheduler.jobs import run_policy_backup

    for job_id, s in wanted.items():
        try:
            trigger = cron_trigger(s.cron, s.timezone)
        except BackupctlError as exc:
            report.invalid[job_id] = str(exc)
            continue
        args = (s.policy_id, s.org, s.cluster, s.method, s.backup_type)
        job = existing.get(job_id)
        if job is not None and job.name == s.job_name and tuple(job.args) == args:
            report.unchanged.append(job_id)
            continue
        try:
            scheduler.add_job(run_policy_backup, trigger, args=args, id=job_id, name=s.job_name, jobstore=jobstore,
                              executor=executor, replace_existing=True, **(job_defaults or {}))
        except ConflictingIdError:  # another scheduler added it between our read and our write
            report.unchanged.append(job_id)
            continue
        (report.updated if job is not None else report.added).append(job_id)
    for job_id in existing.keys() - (wanted.keys() - report.invalid.keys()):
        try:
            scheduler.remove_job(job_id, jobstore=jobstore)
        except JobLookupError:
            continue  # removed by another scheduler meanwhile
        report.removed.append(job_id)
    for key in ("added", "updated", "removed"):
        for job_id in getattr(report, key):
            log.info("scheduler: %s %s", key, job_id)
    return report
