"""Clusters: the databases backupctl protects.

Unregistering a cluster soft-deletes it (``deleted_at``) and decides the fate of its
backups: keep ``all``, keep the ``latest`` (with the chain it needs), or ``none``. Kept
backups are flagged ``recycled`` (the recycle bin) and stay restorable until retention
removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import PHASE_COMPLETED, Backup, Cluster, utcnow
from backupctl.errors import BackupctlError, NotFoundError, UsageError
from backupctl.services import audit
from backupctl.services.names import check_env_var_name, check_name
from backupctl.services.organisations import get_environment, get_organisation
from engine_tools import registry
from engine_tools.base import ClusterTarget

KEEP_CHOICES = ("latest", "all", "none")


def register_cluster(session: Session, *, name: str, engine: str, host: str | None = None, port: int | None = None,
                     user: str | None = None, password_env: str | None = None, data_dir: str | None = None,
                     org: str | None = None, environment: str | None = None, version: str | None = None,
                     topology: str | None = None, deletion_protection: bool = False) -> Cluster:
    check_name(name, "cluster")
    engines = registry.engines()
    if engine not in engines:
        raise UsageError(f"unknown engine {engine!r}", f"choose one of: {', '.join(engines)}")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"invalid port {port}", "give a TCP port between 1 and 65535")
    if password_env is not None:
        check_env_var_name(password_env, "--password-env")
    organisation = get_organisation(session, org, create=True)
    env = get_environment(session, environment)
    if _find_live(session, name, organisation.id) is not None:
        raise UsageError(f"a cluster named {name} is already registered in organisation {organisation.name}",
                         "choose another name, or unregister the existing one first")
    cluster = Cluster(name=name, engine=engine, host=host, port=port, user=user, password_env=password_env,
                      data_dir=data_dir, organisation=organisation, environment=env, version=version,
                      topology=topology, deletion_protection=deletion_protection)
    session.add(cluster)
    session.flush()
    audit.record(session, "cluster.register", f"cluster/{name}", organisation_id=organisation.id, engine=engine)
    return cluster


def _find_live(session: Session, name: str, org_id: int) -> Cluster | None:
    return session.scalar(select(Cluster).where(Cluster.name == name, Cluster.organisation_id == org_id,
                                                Cluster.deleted_at.is_(None)))


def get_cluster(session: Session, name: str, org: str | None = None) -> Cluster:
    organisation = get_organisation(session, org)
    cluster = _find_live(session, name, organisation.id)
    if cluster is None:
        raise NotFoundError(f"no cluster {name!r} in organisation {organisation.name}",
                            "see 'backupctl cluster list', or register it with 'backupctl cluster register'")
    return cluster


def find_cluster(session: Session, name: str, org: str | None = None, *, include_deleted: bool = False) -> Cluster:
    """``get_cluster``; with ``include_deleted``, an unregistered one too when none by that name is
    registered now (the most recently unregistered)."""
    if not include_deleted:
        return get_cluster(session, name, org)
    organisation = get_organisation(session, org)
    cluster = _find_live(session, name, organisation.id) or session.scalar(
        select(Cluster).where(Cluster.name == name, Cluster.organisation_id == organisation.id)
        .order_by(Cluster.deleted_at.desc(), Cluster.id.desc()).limit(1))
    if cluster is None:
        raise NotFoundError(f"no cluster {name!r}, registered or unregistered, in organisation {organisation.name}",
                            "see 'backupctl cluster list --all'")
    return cluster


def list_clusters(session: Session, org: str | None = None, *, include_deleted: bool = False) -> list[Cluster]:
    organisation = get_organisation(session, org)
    q = select(Cluster).where(Cluster.organisation_id == organisation.id)
    if not include_deleted:
        q = q.where(Cluster.deleted_at.is_(None))
    return list(session.scalars(q.order_by(Cluster.name, Cluster.id)))


def set_deletion_protection(session: Session, name: str, org: str | None, on: bool) -> Cluster:
    cluster = get_cluster(session, name, org)
    cluster.deletion_protection = on
    audit.record(session, "cluster.protect" if on else "cluster.unprotect", f"cluster/{name}",
                 organisation_id=cluster.organisation_id)
    return cluster


@dataclass
class UnregisterResult:
    cluster: str
    kept: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    log_expiry: dict[str, Any] | None = None      # what went of its log archive (repository and figures)
    log_expiry_error: str | None = None           # why its log archive was left as it was


def unregister_cluster(session: Session, name: str, org: str | None, keep: str | None) -> UnregisterResult:
    """Soft-delete a cluster. ``keep``: latest | all | none (required when it has backups). Once that is
    committed, its log archive goes down to what the kept backups replay (all of it when none is kept):
    pgBackRest's stanza-delete, without which the archive of a cluster no one backs up stays for good.
    A repository out of reach leaves the archive as it is and says so in the result."""
    from backupctl.services import backups as backup_service

    cluster = get_cluster(session, name, org)
    if cluster.deletion_protection:
        raise BackupctlError(f"cluster {name} has deletion protection on",
                             f"turn it off first with 'backupctl cluster unprotect {name}'")
    owned = list(session.scalars(select(Backup).where(Backup.cluster_id == cluster.id).order_by(Backup.id)))
    if owned and keep not in KEEP_CHOICES:
        raise UsageError(f"cluster {name} has {len(owned)} backup(s): say what to do with them",
                         "pass --keep latest, --keep all or --keep none (kept ones go to the recycle bin)")
    keep_ids: set[int] = set()
    if keep == "all":
        keep_ids = {b.id for b in owned}
    elif keep == "latest":
        completed = [b for b in owned if b.phase == PHASE_COMPLETED]
        if completed:
            latest = max(completed, key=lambda b: (b.completed_at or b.created_at, b.id))
            b: Backup | None = latest
            while b is not None:            # the chain the latest one needs stays with it
                keep_ids.add(b.id)
                b = b.parent
    doomed = [b for b in owned if b.id not in keep_ids]
    protected = [b.name for b in doomed if b.deletion_protection]
    if protected:
        raise BackupctlError(f"backup(s) {', '.join(protected)} of cluster {name} have deletion protection on",
                             "turn it off with 'backupctl backup unprotect NAME', or pass --keep all")
    result = UnregisterResult(cluster=name)
    for b in sorted(doomed, key=lambda b: b.id, reverse=True):   # children before their parents
        backup_service.delete_backup(session, b, _unregistering=True)
        result.deleted.append(b.name)
    now = utcnow()
    for b in owned:
        if b.id in keep_ids:
            b.recycled, b.recycled_at = True, now
            result.kept.append(b.name)
    cluster.deleted_at = now
    audit.record(session, "cluster.unregister", f"cluster/{name}", organisation_id=cluster.organisation_id,
                 keep=keep, kept=result.kept, deleted=result.deleted)
    session.commit()              # wal-push refuses the cluster from now on: no file comes in meanwhile
    from backupctl.services.archiving import trim_retired_archive

    result.log_expiry, result.log_expiry_error = trim_retired_archive(session, cluster)
    return result


def target_of(cluster: Cluster) -> ClusterTarget:
    """What an engine tool plugin sees of a cluster."""
    return ClusterTarget(name=cluster.name, engine=cluster.engine, host=cluster.host, port=cluster.port,
                         user=cluster.user, password_env=cluster.password_env, data_dir=cluster.data_dir,
                         version=cluster.version, topology=cluster.topology)


def cluster_to_dict(c: Cluster) -> dict[str, Any]:
    return {
        "name": c.name, "engine": c.engine, "version": c.version, "topology": c.topology,
        "organisation": c.organisation.name, "environment": c.environment.name, "host": c.host, "port": c.port,
        "user": c.user, "password_env": c.password_env, "data_dir": c.data_dir,
        "deletion_protection": c.deletion_protection, "created_at": _iso(c.created_at),
        "deleted_at": _iso(c.deleted_at),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
