"""The scheduler wired to the catalogue: its policies' schedules, its backup service, and the
retention sweep."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from backupctl.catalog.models import BackupPolicy
from scheduler.context import ScheduledBackup
from scheduler.sync import PolicySchedule


def list_schedules(engine: Engine) -> list[PolicySchedule]:
    """Every schedule of every policy whose cluster is not unregistered."""
    with Session(engine) as session:
        out = []
        for p in session.scalars(select(BackupPolicy).order_by(BackupPolicy.id)):
            if p.cluster is None or p.cluster.deleted_at is not None:
                continue
            for s in p.schedules:
                out.append(PolicySchedule(policy_id=p.id, cluster=p.cluster.name, method=s.backup_method,
                                          cron=s.cron_expression, timezone=s.timezone or "UTC",
                                          enabled=s.enabled, org=p.organisation.name,
                                          backup_type=s.backup_type or "full"))
        return out


def run_backup(engine: Engine, request: ScheduledBackup) -> Any:
    """Take the backup of the schedule's type through the catalogue's backup service, under the
    lease the job holds."""
    from backupctl.services.backups import create_backup

    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        backup = create_backup(session, cluster=request.cluster, org=request.org, method=request.method,
                               type=request.backup_type, policy_id=request.policy_id,
                               lease_owner=request.lease_owner)
        session.commit()
        return f"{backup.name} {backup.phase}"


def retention_sweep(engine: Engine) -> Any:
    from backupctl.retention.sweep import sweep

    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        report = sweep(session)
        session.commit()
        return f"deleted {len(report.deleted)}, errors {len(report.errors)}"
