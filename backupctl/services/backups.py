"""Backups: taking one through an engine tool plugin, listing, protecting and deleting.

``create_backup`` records the backup before touching the database and commits each phase
change (New -> Running -> Completed | Failed), so other processes see a running backup
and a crash leaves a Running/Failed row, never a Completed one without data.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.manifest import BackupManifest, snapshot_metadata
from backupctl.catalog.models import (
    PHASE_COMPLETED,
    PHASE_DELETING,
    PHASE_FAILED,
    PHASE_NEW,
    PHASE_RUNNING,
    Backup,
    BackupRepository,
    Cluster,
    utcnow,
)
from backupctl.errors import BackupctlError, NotFoundError, UsageError
from backupctl.progress import Progress
from backupctl.services import audit
from backupctl.services.clusters import get_cluster, target_of
from backupctl.services.organisations import get_organisation
from backupctl.services.policies import policies_of_cluster
from backupctl.services.repositories import (
    check_usable,
    default_repository,
    get_repository,
    open_repository,
)
from engine_tools import registry
from engine_tools.base import BackupRequest, Capability

TYPES_BY_CAPABILITY = {"full": Capability.FULL, "incremental": Capability.INCREMENTAL,
                       "continuous": Capability.CONTINUOUS, "snapshot": Capability.SNAPSHOT}


# -- choosing a repository -------------------------------------------------------------------
def resolve_repository(session: Session, cluster: Cluster, method: str, name: str | None) -> BackupRepository:
    """The named repository, else the cluster's policy's, else the default one."""
    if name:
        row = get_repository(session, name)
    else:
        policies = [p for p in policies_of_cluster(session, cluster.id) if p.repository is not None]
        preferred = [p for p in policies if method in p.backup_methods] or policies
        row = preferred[0].repository if preferred else default_repository(session, cluster.organisation)
        if row is None:
            raise UsageError(f"no repository to back up cluster {cluster.name} into",
                             "pass --repo NAME, set one on its policy, or add a default one with "
                             "'backupctl repo add NAME --url URL --default'")
    check_usable(row, cluster.organisation)
    return row


def new_backup_name(cluster: str, method: str, at: datetime) -> str:
    return f"{cluster}-{method}-{at:%Y%m%d%H%M%S}-{secrets.token_hex(2)}"


# -- creating ----------------------------------------------------------------------------------
def create_backup(session: Session, *, cluster: str, org: str | None = None, method: str | None = None,
                  type: str = "full", repository: str | None = None, policy_id: int | None = None,
                  progress: Progress | None = None) -> Backup:
    """Take a backup of ``cluster`` now. Commits the session at each phase change."""
    target = get_cluster(session, cluster, org)
    resolved = registry.resolve_method(target.engine, method)
    spec = resolved.spec
    if type not in TYPES_BY_CAPABILITY:
        raise UsageError(f"unknown backup type {type!r}", f"choose one of: {', '.join(TYPES_BY_CAPABILITY)}")
    if not spec.can(TYPES_BY_CAPABILITY[type]):
        can = ", ".join(sorted(c.value for c in spec.capabilities))
        raise UsageError(f"method {spec.name} cannot take {type} backups of {target.engine}", f"it can: {can}")
    resolved.tool.check(target_of(target), spec.name)
    repo_row = resolve_repository(session, target, spec.name, repository)
    parent = _parent_for(session, target, spec.name) if type == "incremental" else None
    repo = open_repository(repo_row)          # wrong password / missing repository fails before any row exists
    try:
        now = utcnow()
        backup = Backup(name=new_backup_name(target.name, spec.name, now), organisation=target.organisation,
                        cluster=target, cluster_name=target.name, engine=target.engine, method=spec.name, type=type,
                        parent=parent, policy_id=policy_id, phase=PHASE_NEW, repository_name=repo_row.name)
        session.add(backup)
        audit.record(session, "backup.create", f"backup/{backup.name}", organisation_id=target.organisation_id,
                     cluster=target.name, method=spec.name, type=type, repository=repo_row.name)
        session.commit()
        backup.phase, backup.started_at = PHASE_RUNNING, utcnow()
        session.commit()
        manifest = BackupManifest(backup=backup.name, org=target.organisation.name, cluster=target.name,
                                  engine=target.engine, method=spec.name, type=type,
                                  parent=parent.name if parent else None,
                                  policy=_policy_name(session, policy_id))
        request = BackupRequest(cluster=target_of(target), method=spec.name, type=type,
                                metadata=snapshot_metadata(manifest),
                                tags=[f"cluster={target.name}", f"backup={backup.name}"],
                                parent_snapshot_ids=list(parent.snapshot_ids) if parent else [], progress=progress)
        try:
            result = resolved.tool.backup(repo, request)
        except BaseException as exc:
            backup.phase, backup.completed_at = PHASE_FAILED, utcnow()
            backup.error_message = str(exc) if not isinstance(exc, KeyboardInterrupt) else "interrupted"
            session.commit()
            if isinstance(exc, BackupctlError | KeyboardInterrupt):
                raise
            raise BackupctlError(f"backup {backup.name} failed: {type_name(exc)}: {exc}",
                                 f"see 'backupctl backup show {backup.name}'") from None
        end = utcnow()
        backup.phase, backup.completed_at = PHASE_COMPLETED, end
        backup.snapshot_ids = list(result.snapshot_ids)
        backup.logical_size, backup.bytes_added = result.logical_size, result.bytes_added
        backup.positions = dict(result.positions)
        backup.restorable_from, backup.restorable_to = result.restorable_from, result.restorable_to
        seconds = (end - backup.started_at).total_seconds()
        backup.throughput = result.logical_size / seconds if seconds > 0 else None
        session.commit()
        return backup
    finally:
        repo.close()


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


def _policy_name(session: Session, policy_id: int | None) -> str | None:
    if policy_id is None:
        return None
    from backupctl.catalog.models import BackupPolicy

    p = session.get(BackupPolicy, policy_id)
    return p.name if p else None


def _parent_for(session: Session, cluster: Cluster, method: str) -> Backup:
    parent = session.scalar(select(Backup).where(Backup.cluster_id == cluster.id, Backup.method == method,
                                                 Backup.phase == PHASE_COMPLETED,
                                                 Backup.type.in_(("full", "incremental")))
                            .order_by(Backup.completed_at.desc(), Backup.id.desc()).limit(1))
    if parent is None:
        raise UsageError(f"cluster {cluster.name} has no completed {method} backup to base an incremental on",
                         "take a full backup first (--type full)")
    return parent


# -- reading -------------------------------------------------------------------------------------
def list_backups(session: Session, org: str | None = None, *, cluster: str | None = None,
                 recycled: bool | None = None) -> list[Backup]:
    """Backups of an organisation, oldest first. ``cluster`` matches by name, deleted clusters included."""
    organisation = get_organisation(session, org)
    q = select(Backup).where(Backup.organisation_id == organisation.id)
    if cluster:
        q = q.where(Backup.cluster_name == cluster)
    if recycled is not None:
        q = q.where(Backup.recycled.is_(recycled))
    return list(session.scalars(q.order_by(Backup.created_at, Backup.id)))


def get_backup(session: Session, name: str, org: str | None = None) -> Backup:
    organisation = get_organisation(session, org)
    backup = session.scalar(select(Backup).where(Backup.organisation_id == organisation.id, Backup.name == name))
    if backup is None:
        raise NotFoundError(f"no backup {name!r} in organisation {organisation.name}", "see 'backupctl backup list'")
    return backup


def dependents(session: Session, backup: Backup) -> list[Backup]:
    """Backups that need this one (their parent), other than those being deleted."""
    return list(session.scalars(select(Backup).where(Backup.parent_backup_id == backup.id,
                                                     Backup.phase != PHASE_DELETING).order_by(Backup.id)))


def set_deletion_protection(session: Session, name: str, org: str | None, on: bool) -> Backup:
    backup = get_backup(session, name, org)
    backup.deletion_protection = on
    audit.record(session, "backup.protect" if on else "backup.unprotect", f"backup/{name}",
                 organisation_id=backup.organisation_id)
    return backup


# -- deleting ------------------------------------------------------------------------------------
def check_deletable(session: Session, backup: Backup) -> None:
    if backup.deletion_protection:
        raise BackupctlError(f"backup {backup.name} has deletion protection on",
                             f"turn it off first with 'backupctl backup unprotect {backup.name}'")
    needed_by = dependents(session, backup)
    if needed_by:
        names = ", ".join(b.name for b in needed_by)
        raise BackupctlError(f"backup {backup.name} cannot be deleted: {names} depend(s) on it "
                             f"(an incremental needs its parent to restore)",
                             "delete the dependent backups first, or let retention remove the whole chain")
    if backup.phase == PHASE_RUNNING:
        raise BackupctlError(f"backup {backup.name} is still running", "wait for it to finish or fail")


def delete_backup(session: Session, backup: Backup, *, _unregistering: bool = False) -> None:
    """Forget the backup's repository snapshots, then its record. Data is reclaimed by the repository's gc."""
    check_deletable(session, backup)
    repo = None
    if backup.snapshot_ids:
        row = session.scalar(select(BackupRepository).where(BackupRepository.name == backup.repository_name))
        if row is None:
            raise NotFoundError(f"backup {backup.name} is in repository {backup.repository_name}, "
                                "which is not in the catalogue",
                                f"add it with 'backupctl repo add {backup.repository_name} --url URL'")
        repo = open_repository(row)
    try:
        backup.phase = PHASE_DELETING
        session.commit() if not _unregistering else session.flush()
        if repo is not None:
            for snap_id in backup.snapshot_ids:
                try:
                    repo.forget(repo.find_snapshot(snap_id))
                except NotFoundError:
                    pass          # already gone: deleting is idempotent
    finally:
        if repo is not None:
            repo.close()
    audit.record(session, "backup.delete", f"backup/{backup.name}", organisation_id=backup.organisation_id,
                 snapshots=list(backup.snapshot_ids))
    session.delete(backup)
    session.flush()


def backup_to_dict(b: Backup) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v else None

    return {
        "name": b.name, "organisation": b.organisation.name, "cluster": b.cluster_name, "engine": b.engine,
        "method": b.method, "type": b.type, "parent": b.parent.name if b.parent else None, "phase": b.phase,
        "started_at": iso(b.started_at), "completed_at": iso(b.completed_at),
        "restorable_from": iso(b.restorable_from), "restorable_to": iso(b.restorable_to),
        "positions": dict(b.positions or {}), "logical_size": b.logical_size, "bytes_added": b.bytes_added,
        "throughput": b.throughput, "repository": b.repository_name, "snapshot_ids": list(b.snapshot_ids or []),
        "error_message": b.error_message, "deletion_protection": b.deletion_protection, "recycled": b.recycled,
        "created_at": iso(b.created_at),
    }
