"""Restores of catalogued backups onto this host, as the plugin's stages, each one timed (the RTO).

``create_restore`` records the restore before touching anything and commits after every
stage, so a crash leaves a Running/Failed row that says how far it got.
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import PHASE_COMPLETED, PHASE_FAILED, PHASE_RUNNING, Restore, utcnow
from backupctl.errors import BackupctlError, NotFoundError, UsageError
from backupctl.progress import Progress
from backupctl.services import audit
from backupctl.services.archiving import context_for
from backupctl.services.backups import get_backup
from backupctl.services.organisations import get_organisation
from backupctl.services.repositories import check_usable, get_repository, open_repository
from engine_tools import registry
from engine_tools.base import ClusterTarget, RestoreRequest, RestoreStage, StagedRestore


def choose_backup(session: Session, cluster: str, org: str | None, restore_time: datetime | None) -> str:
    """The base a restore of ``cluster`` should start from, as pgBackRest picks its backup set: the
    newest completed backup that was consistent before ``restore_time`` (the newest of all without a
    time). Incrementals count: their chain is restored with them."""
    from backupctl.catalog.models import Backup
    from backupctl.services.clusters import get_cluster

    target = get_cluster(session, cluster, org)
    rows = session.scalars(select(Backup).where(Backup.cluster_id == target.id, Backup.phase == PHASE_COMPLETED,
                                                Backup.restorable_from.is_not(None))
                           .order_by(Backup.restorable_from.desc())).all()
    for b in rows:
        if restore_time is None or b.restorable_from <= restore_time:
            return b.name
    if not rows:
        raise NotFoundError(f"cluster {cluster} has no completed backup", f"take one: 'backupctl backup create "
                                                                         f"--cluster {cluster}'")
    raise UsageError(f"no backup of cluster {cluster} is older than {restore_time.isoformat()}; the oldest became "
                     f"consistent at {rows[-1].restorable_from.isoformat()}", "choose a later restore time")


def create_restore(session: Session, *, backup: str, target_dir: str, org: str | None = None,
                   restore_time: datetime | None = None, target_lsn: str | None = None,
                   target_xid: str | None = None, target_name: str | None = None, start: bool = False,
                   port: int | None = None, force: bool = False, progress: Progress | None = None,
                   register: str | None = None) -> Restore:
    """Restore ``backup`` into ``target_dir``. ``register``: also register the restored server as a new
    cluster of that name (engine, port and data directory of the restore; host, user and password variable
    of the source), into whose own archive it pushes its WAL once promoted (a new timeline)."""
    b = get_backup(session, backup, org)
    if b.phase != PHASE_COMPLETED:
        raise UsageError(f"backup {b.name} is {b.phase}, not Completed", "choose a completed backup")
    if restore_time is not None and restore_time.tzinfo is None:
        raise UsageError("the restore time has no time zone", "give it with one, e.g. 2026-12-02T10:00:00Z")
    tool = registry.resolve_method(b.engine, b.method).tool
    repo_row = get_repository(session, b.repository_name)
    check_usable(repo_row, b.organisation)
    target_dir = os.path.abspath(target_dir)
    archive_context = None
    if register is not None:
        _check_registrable(session, register, b.organisation.name, port)
        archive_context = context_for(register, b.organisation.name)
    target = next(({"kind": k, "value": v} for k, v in (("time", restore_time and restore_time.isoformat()),
                   ("lsn", target_lsn), ("xid", target_xid), ("name", target_name)) if v), {})
    request = RestoreRequest(cluster=ClusterTarget(name=register or os.path.basename(target_dir), engine=b.engine,
                                                   port=port, data_dir=target_dir),
                             method=b.method, snapshot_ids=list(b.snapshot_ids), target_dir=target_dir,
                             restore_time=restore_time, progress=progress, target_position=target_lsn,
                             target_transaction=target_xid, target_name=target_name, start=start, port=port,
                             force=force, log_context=context_for(b.cluster_name, b.organisation.name, repo_row.name),
                             archive_context=archive_context)
    repo = open_repository(repo_row)
    try:
        stages = tool.restore_stages(repo, request) if isinstance(tool, StagedRestore) else \
            [RestoreStage("restore", lambda: tool.restore(repo, request))]     # checks the window: before any row
        new_cluster = _register_restored(session, b, register, port, target_dir) if register else None
        row = Restore(name=f"{b.cluster_name}-restore-{utcnow():%Y%m%d%H%M%S}-{secrets.token_hex(2)}",
                      organisation_id=b.organisation_id, backup_id=b.id, target_cluster=request.cluster.name,
                      restore_time=restore_time, target_dir=target_dir, target=target, stages=[],
                      phase=PHASE_RUNNING, started_at=utcnow())
        session.add(row)
        audit.record(session, "restore.create", f"restore/{row.name}", organisation_id=b.organisation_id,
                     backup=b.name, target_dir=target_dir, target=target)
        session.commit()
        for stage in stages:
            began = time.monotonic()
            try:
                details = stage.run() or {}
            except BaseException as exc:
                row.stages = [*row.stages, {"name": stage.name, "seconds": round(time.monotonic() - began, 3),
                                            "failed": True}]
                row.phase, row.completed_at = PHASE_FAILED, utcnow()
                row.error_message = f"{stage.name}: {exc}"
                if new_cluster is not None:          # a failed restore is no cluster to protect
                    new_cluster.deleted_at = utcnow()
                    audit.record(session, "cluster.unregister", f"cluster/{new_cluster.name}",
                                 organisation_id=new_cluster.organisation_id, reason=f"restore {row.name} failed")
                session.commit()
                if isinstance(exc, BackupctlError | KeyboardInterrupt):
                    raise
                raise BackupctlError(f"restore {row.name} failed in stage {stage.name}: {type(exc).__name__}: {exc}",
                                     f"see 'backupctl restore show {row.name}'") from None
            row.stages = [*row.stages, {"name": stage.name, "seconds": round(time.monotonic() - began, 3),
                                        "details": _jsonable(details)}]
            session.commit()
        row.phase, row.completed_at = PHASE_COMPLETED, utcnow()
        session.commit()
        return row
    finally:
        repo.close()


def _check_registrable(session: Session, name: str, org: str, port: int | None) -> None:
    from backupctl.services.clusters import get_cluster
    from backupctl.services.names import check_name

    check_name(name, "cluster")
    if port is None:
        raise UsageError(f"registering the restored server as cluster {name} needs its port",
                         "pass --port P (the port the restored server listens on)")
    try:
        get_cluster(session, name, org)
    except NotFoundError:
        return
    raise UsageError(f"a cluster named {name} is already registered in organisation {org}",
                     "choose another name for the restored cluster")


def _register_restored(session: Session, b: Any, name: str, port: int | None, target_dir: str) -> Any:
    """The restored server as a new cluster: this host's data directory and port, the source's roles."""
    from backupctl.services.clusters import register_cluster

    source = b.cluster
    host = source.host if source is not None and source.host and \
        (source.host.startswith("/") or source.host in ("localhost", "127.0.0.1", "::1")) else "localhost"
    return register_cluster(session, name=name, engine=b.engine, host=host, port=port,
                            user=source.user if source is not None else None,
                            password_env=source.password_env if source is not None else None,
                            data_dir=target_dir, org=b.organisation.name,
                            environment=source.environment.name if source is not None else None,
                            version=source.version if source is not None else None,
                            topology=source.topology if source is not None else None)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d, default=str))


def list_restores(session: Session, org: str | None = None) -> list[Restore]:
    organisation = get_organisation(session, org)
    return list(session.scalars(select(Restore).where(Restore.organisation_id == organisation.id)
                                .order_by(Restore.created_at, Restore.id)))


def get_restore(session: Session, name: str, org: str | None = None) -> Restore:
    organisation = get_organisation(session, org)
    row = session.scalar(select(Restore).where(Restore.organisation_id == organisation.id, Restore.name == name))
    if row is None:
        raise NotFoundError(f"no restore {name!r} in organisation {organisation.name}", "see 'backupctl restore list'")
    return row


def restore_to_dict(r: Restore) -> dict[str, Any]:
    def iso(v: datetime | None) -> str | None:
        return v.isoformat() if v else None

    total = sum(s.get("seconds", 0) for s in r.stages or [])
    return {"name": r.name, "backup_id": r.backup_id, "backup": r.backup.name if r.backup else None,
            "target_cluster": r.target_cluster, "target_dir": r.target_dir,
            "target": dict(r.target or {}), "phase": r.phase, "started_at": iso(r.started_at),
            "completed_at": iso(r.completed_at), "stages": list(r.stages or []), "rto_seconds": round(total, 3),
            "error_message": r.error_message}
