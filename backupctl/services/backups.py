"""Backups: taking one through an engine tool plugin, listing, protecting and deleting.

``create_backup`` records the backup before touching the database and commits each phase
change (New -> Running -> Completed | Failed), so other processes see a running backup
and a crash leaves a Running/Failed row, never a Completed one without data. It holds the
lease of the cluster and method while it runs (``backupctl.services.leases``), the one the
scheduler's jobs hold, so a manual backup never overlaps a scheduled one.

``recover_backup`` takes a backup out of the recycle bin, attaching it to a registered cluster.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
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
from backupctl.errors import BackupctlError, BusyError, NoRepositoryError, NotFoundError, UsageError
from backupctl.progress import Progress
from backupctl.repository import Repository
from backupctl.services import audit, leases, methods
from backupctl.services.clusters import get_cluster, target_of
from backupctl.services.organisations import get_organisation
from backupctl.services.policies import policies_of_cluster
from backupctl.services.repositories import (
    check_usable,
    default_repository,
    get_repository,
    open_repository,
    repository_password,
)
from engine_tools.base import BackupRequest

TYPES_BY_CAPABILITY = methods.TYPES_BY_CAPABILITY


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
            raise NoRepositoryError(f"no repository to back up cluster {cluster.name} into",
                                    "pass --repo NAME, set one on its policy, or add a default one with "
                                    "'backupctl repo add NAME --url URL --default'")
    check_usable(row, cluster.organisation)
    return row


def new_backup_name(cluster: str, method: str, at: datetime) -> str:
    return f"{cluster}-{method}-{at:%Y%m%d%H%M%S}-{secrets.token_hex(2)}"


# -- creating ----------------------------------------------------------------------------------
def manual_lease_owner() -> str:
    """Who a manual backup's lease names: the actor, the host and the process."""
    return f"{audit.current_actor()} on {socket.gethostname()} (pid {os.getpid()})"


def create_backup(session: Session, *, cluster: str, org: str | None = None, method: str | None = None,
                  type: str = "full", repository: str | None = None, policy_id: int | None = None,
                  progress: Progress | None = None, lease_owner: str | None = None,
                  lease_ttl: float = leases.DEFAULT_TTL) -> Backup:
    """Take a backup of ``cluster`` now. Commits the session at each phase change.

    Holds the lease of the cluster and method while it runs; if another backup of them holds it,
    fails with a BackupctlError naming the holder. ``lease_owner``: a caller that already holds
    that lease (the scheduler's job) passes its owner, and the lease is used as is.
    """
    target = get_cluster(session, cluster, org)
    spec = methods.resolve(target.engine, method, type).spec
    engine = session.get_bind()
    key = leases.backup_lease_key(target.organisation.name, target.name, spec.name)
    mark_interrupted(session, target.organisation.name)     # a crashed backup's lease need not block this one
    if lease_owner is not None:
        current = leases.holder(engine, key)
        if current is None or current.owner != lease_owner:
            raise BackupctlError(f"the lease for backing up cluster {target.name} with method {spec.name} is not "
                                 f"held by {lease_owner}", "take it with backupctl.services.leases.lease first")
        return _create_backup(session, target, method=spec.name, type=type, repository=repository,
                              policy_id=policy_id, progress=progress)
    owner = manual_lease_owner()
    with leases.lease(engine, key, owner, lease_ttl) as held:
        if not held:
            _raise_busy(engine, key, target.name, spec.name)
        return _create_backup(session, target, method=spec.name, type=type, repository=repository,
                              policy_id=policy_id, progress=progress)


def _raise_busy(engine: Engine, key: str, cluster: str, method: str) -> None:
    current = leases.holder(engine, key)
    by = f" by {current.owner} since {current.acquired_at:%Y-%m-%dT%H:%M:%SZ}" if current else ""
    raise BusyError(f"cluster {cluster} is already being backed up with method {method}{by}",
                    "wait for it to finish")


def _create_backup(session: Session, target: Cluster, *, method: str, type: str, repository: str | None,
                   policy_id: int | None, progress: Progress | None) -> Backup:
    resolved = methods.resolve(target.engine, method, type)
    spec = resolved.spec
    repo_row = resolve_repository(session, target, spec.name, repository)
    # an incremental builds on the newest backup; a full is guided by the newest full (whose files are whole)
    previous = _newest_backup(session, target, spec.name, repo_row.name,
                              ("full", "incremental") if type == "incremental" else ("full",))
    if type == "incremental" and previous is None:
        raise UsageError(f"cluster {target.name} has no completed {spec.name} backup in repository {repo_row.name} "
                         "to base an incremental on", "take a full backup there first (--type full)")
    parent = previous if type == "incremental" else None
    # A server that cannot be backed up, a wrong password or a missing repository fails before any
    # row exists; the key is derived (scrypt) while the plugin checks the server.
    repo = _checked_and_opened(lambda: resolved.tool.check(target_of(target), spec.name), repo_row)
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
        from backupctl.services.archiving import archive_context_of_backup  # archiving builds on this module

        stored: list[str] = []

        def remember(snapshot_id: str) -> None:
            stored.append(snapshot_id)
            backup.snapshot_ids = list(stored)         # a new list: the JSON column sees the change
            try:
                session.commit()
            except SQLAlchemyError:     # a busy catalogue must not fail the backup: the id is kept here,
                session.rollback()      # recorded at completion, forgotten on failure all the same

        request = BackupRequest(cluster=target_of(target), method=spec.name, type=type,
                                metadata=snapshot_metadata(manifest),
                                tags=[f"cluster={target.name}", f"backup={backup.name}"],
                                parent_snapshot_ids=list(parent.snapshot_ids) if parent else [],
                                previous_snapshot_ids=list(previous.snapshot_ids) if previous and not parent else [],
                                progress=progress,
                                log_context=archive_context_of_backup(session, target, repo_row.id),
                                on_snapshot=remember)
        try:
            result = resolved.tool.backup(repo, request)
        except BaseException as exc:
            backup.snapshot_ids = _forget_stored(repo, stored)
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


def _checked_and_opened(check: Callable[[], None], row: BackupRepository) -> Repository:
    """``check()`` on this thread while the repository opens on another; the repository, once both
    succeeded (closed again if the check failed)."""
    url, password = row.url, repository_password(row)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-repository") as pool:
        opening = pool.submit(Repository.open, url, password)
        try:
            check()
        except BaseException:
            opening.add_done_callback(lambda f: f.exception() is None and f.result().close())
            raise
        return opening.result()


def _forget_stored(repo: Repository, snapshot_ids: list[str]) -> list[str]:
    """Forget the snapshots a failed backup stored (``BackupRequest.committed``): no backup will
    name them, and gc keeps every snapshot. Returns those that could not be forgotten now, for
    its row to name, so that deleting it (by hand or by retention) forgets them later."""
    left = []
    for snapshot_id in snapshot_ids:
        try:
            _forget(repo, snapshot_id)
        except Exception:  # noqa: BLE001 - the backup's own error is the one to report
            left.append(snapshot_id)
    return left


def _forget(repo: Repository, snapshot_id: str) -> None:
    """Forget a snapshot; one already gone is fine (forgetting is idempotent)."""
    try:
        repo.forget(repo.snapshot_id(snapshot_id))       # by name: a damaged snapshot is forgotten too
    except NotFoundError:
        pass


_OWNER_RE = re.compile(r" on (?P<host>\S+) \(pid (?P<pid>\d+)\)$")


def _owner_gone(owner: str) -> bool:
    """True if the lease owner is a process of this host that no longer exists (see manual_lease_owner)."""
    m = _OWNER_RE.search(owner)
    if m is None or m["host"] != socket.gethostname():
        return False
    try:
        os.kill(int(m["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:                       # exists, another user's
        return False
    return False


def mark_interrupted(session: Session, org: str | None = None) -> list[str]:
    """Mark Failed the New/Running backups whose process is gone: killed, or its host crashed.

    A running backup holds its cluster's backup lease and renews it. If nobody holds the lease
    (it expired), or its holder is a process of this host that no longer exists, the backup
    can never complete: its row becomes Failed, and a dead holder's lease is released. Its row
    names the snapshots it stored before it stopped (``BackupRequest.committed``): deleting the
    row forgets them; packs that no snapshot names yet are left to garbage collection.
    """
    organisation = get_organisation(session, org)
    running = list(session.scalars(select(Backup).where(Backup.organisation_id == organisation.id,
                                                        Backup.phase.in_((PHASE_NEW, PHASE_RUNNING)))))
    if not running:
        return []
    engine = session.get_bind()
    marked = []
    for b in running:
        key = leases.backup_lease_key(organisation.name, b.cluster_name, b.method)
        current = leases.holder(engine, key)
        if current is not None and not _owner_gone(current.owner):
            continue
        if current is not None:
            leases.release(engine, key, current.owner)
        who = f" ({current.owner})" if current is not None else ""
        b.phase, b.completed_at = PHASE_FAILED, utcnow()
        b.error_message = (f"interrupted: the process running it{who} stopped before it completed; "
                           "nothing of it is usable")
        audit.record(session, "backup.interrupted", f"backup/{b.name}", organisation_id=b.organisation_id,
                     lease_owner=current.owner if current is not None else None)
        marked.append(b.name)
    session.commit()
    return marked


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


def _policy_name(session: Session, policy_id: int | None) -> str | None:
    if policy_id is None:
        return None
    from backupctl.catalog.models import BackupPolicy

    p = session.get(BackupPolicy, policy_id)
    return p.name if p else None


def _newest_backup(session: Session, cluster: Cluster, method: str, repository: str,
                   types: tuple[str, ...]) -> Backup | None:
    """The newest completed backup of these types and this method in this repository (a chain never
    spans repositories: each must restore on its own)."""
    return session.scalar(select(Backup).where(Backup.cluster_id == cluster.id, Backup.method == method,
                                               Backup.phase == PHASE_COMPLETED,
                                               Backup.repository_name == repository,
                                               Backup.type.in_(types))
                          .order_by(Backup.completed_at.desc(), Backup.id.desc()).limit(1))


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
                _forget(repo, snap_id)
    finally:
        if repo is not None:
            repo.close()
    audit.record(session, "backup.delete", f"backup/{backup.name}", organisation_id=backup.organisation_id,
                 snapshots=list(backup.snapshot_ids))
    session.delete(backup)
    session.flush()


# -- the recycle bin -------------------------------------------------------------------------------
def recover_backup(session: Session, name: str, cluster: str, org: str | None = None) -> list[Backup]:
    """Take backup ``name`` out of the recycle bin: attach it, and the chain it needs, to the
    registered ``cluster`` (of the same engine). Returns the backups recovered, oldest first."""
    backup = get_backup(session, name, org)
    if not backup.recycled:
        raise UsageError(f"backup {name} is not in the recycle bin (it belongs to cluster {backup.cluster_name})",
                         "see 'backupctl backup list --recycled'")
    target = get_cluster(session, cluster, org)
    if target.engine != backup.engine:
        raise UsageError(f"backup {name} is a {backup.engine} backup and cluster {target.name} is {target.engine}",
                         f"recover it into a {backup.engine} cluster: register one with "
                         f"'backupctl cluster register NAME --engine {backup.engine} ...'")
    chain: list[Backup] = []
    b: Backup | None = backup
    while b is not None:                  # an incremental comes with the backups it is based on
        if b.recycled:
            chain.append(b)
        b = b.parent
    for b in chain:
        b.cluster, b.cluster_name, b.recycled, b.recycled_at = target, target.name, False, None
    chain.reverse()
    audit.record(session, "backup.recover", f"backup/{name}", organisation_id=backup.organisation_id,
                 cluster=target.name, backups=[b.name for b in chain])
    session.flush()
    return chain


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
        "recycled_at": iso(b.recycled_at), "created_at": iso(b.created_at),
    }
