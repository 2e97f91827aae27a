"""Continuous log archiving (PostgreSQL WAL, ...) for registered clusters, through their engine's plugin.

The database server itself calls backupctl (``archive_command``/``restore_command``): these
functions find the cluster in the catalogue, its repository, and the plugin that archives
its engine's logs, and hand them a ``LogContext``: a state directory under
``$BACKUPCTL_HOME/archive/ORG/CLUSTER`` and the exact command the server runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl import archive_spool
from backupctl.catalog.models import PHASE_COMPLETED, PHASE_NEW, PHASE_RUNNING, Backup, BackupRepository, Cluster
from backupctl.errors import BackupctlError, NoRepositoryError, UsageError
from backupctl.repository import Repository
from backupctl.services.backups import resolve_repository
from backupctl.services.clusters import find_cluster, get_cluster, target_of
from backupctl.services.repositories import check_usable, get_repository, open_repository
from engine_tools import registry
from engine_tools.base import Capability, LogArchiver, LogContext

# Variables the server's archive/restore commands must see to reach the same catalogue.
PASSED_ENV = ("BACKUPCTL_HOME",)


def backupctl_command() -> str:
    """How a database server runs this backupctl: absolute path, with the environment it needs."""
    exe = os.path.join(os.path.dirname(sys.executable), "backupctl")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("backupctl") or "backupctl"
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in PASSED_ENV if os.environ.get(k)]
    url = os.environ.get("BACKUPCTL_DATABASE_URL")
    if url and ":" not in url.split("://", 1)[-1].split("@", 1)[0]:   # never put a password in the server config
        env.append(f"BACKUPCTL_DATABASE_URL={shlex.quote(url)}")
    return " ".join((["env", *env] if env else []) + [shlex.quote(exe)])


def archiver_of(cluster: Cluster) -> tuple[LogArchiver, str]:
    for r in registry.methods_for(cluster.engine):
        if r.spec.can(Capability.CONTINUOUS) and isinstance(r.tool, LogArchiver):
            return r.tool, r.spec.name
    raise UsageError(f"no installed engine tool archives the logs of {cluster.engine} clusters",
                     "install an engine tool plugin with continuous backup for this engine")


def context_for(cluster_name: str, org: str, repository: str | None = None) -> LogContext:
    return LogContext(cluster=cluster_name, org=org, state_dir=archive_spool.state_dir(org, cluster_name),
                      command=backupctl_command(), tags=[f"cluster={cluster_name}"], repository=repository)


def archive_context_of_backup(session: Session, cluster: Cluster, repo_id: int) -> LogContext | None:
    """The cluster's archiving context when its logs go to the repository a backup writes to (then
    the backup may archive the logs it needs itself, in the same repository session)."""
    try:
        _tool, method = archiver_of(cluster)
    except UsageError:
        return None
    return context_for(cluster.name, cluster.organisation.name) \
        if resolve_repository(session, cluster, method, None).id == repo_id else None


def _open(session: Session, cluster: str, org: str | None) -> tuple[Cluster, LogArchiver, Repository, LogContext]:
    c = get_cluster(session, cluster, org)
    tool, method = archiver_of(c)
    row = resolve_repository(session, c, method, None)
    repo = open_repository(row)
    return c, tool, repo, context_for(c.name, c.organisation.name)


def push(session: Session, cluster: str, path: str, org: str | None = None) -> dict[str, Any]:
    c, tool, repo, ctx = _open(session, cluster, org)
    with repo:
        return tool.push_log(repo, target_of(c), path, ctx)


def fetch(session: Session, cluster: str, name: str, dest: str, org: str | None = None,
          repository: str | None = None) -> bool:
    """Write archived log ``name`` to ``dest``. With ``repository`` (a restore's, naming its backup's),
    the archive there is read, and the cluster may be unregistered (its backups in the recycle bin)."""
    if repository is None:
        c, tool, repo, ctx = _open(session, cluster, org)
    else:
        c = find_cluster(session, cluster, org, include_deleted=True)
        tool, _method = archiver_of(c)
        row = get_repository(session, repository)
        check_usable(row, c.organisation)
        repo, ctx = open_repository(row), context_for(c.name, c.organisation.name)
    with repo:
        return tool.fetch_log(repo, target_of(c), name, dest, ctx)


def status(session: Session, cluster: str, org: str | None = None) -> dict[str, Any]:
    c, tool, repo, ctx = _open(session, cluster, org)
    with repo:
        return {"cluster": c.name, **tool.log_status(repo, target_of(c), ctx)}


def restore_point(session: Session, cluster: str, name: str, org: str | None = None,
                  wait: float = 60) -> dict[str, Any]:
    c, tool, repo, ctx = _open(session, cluster, org)
    with repo:
        return tool.restore_point(repo, target_of(c), name, ctx, wait)


def _archive_of(session: Session, cluster: Cluster) -> tuple[LogArchiver, str, BackupRepository, LogContext] | None:
    """The plugin archiving the cluster's logs, its method, their repository and context; None when
    the cluster's engine archives no logs of its own here."""
    try:
        tool, method = archiver_of(cluster)
    except UsageError:
        return None
    return (tool, method, resolve_repository(session, cluster, method, None),
            context_for(cluster.name, cluster.organisation.name))


def log_windows(session: Session, cluster: Cluster, bases: list[Backup]) -> list[tuple[datetime, datetime] | None] | None:
    """The time range the cluster's log archive restores each base backup to (None for one it cannot
    make consistent); None when the cluster's engine archives no logs of its own here."""
    archive = _archive_of(session, cluster)
    if archive is None:
        return None
    tool, _method, row, ctx = archive
    with open_repository(row) as repo:
        return tool.log_windows(repo, target_of(cluster), ctx, [b.positions or {} for b in bases])


def live_namesake(session: Session, cluster: Cluster) -> Cluster | None:
    """The cluster registered now under ``cluster``'s name and engine (so archiving into the same log
    archive), if any: ``cluster`` itself when it is registered."""
    live = find_cluster(session, cluster.name, cluster.organisation.name, include_deleted=True)
    return live if live.deleted_at is None and live.engine == cluster.engine else None


def expire_logs(session: Session, cluster: Cluster, *, dry_run: bool = False,
                going: frozenset[str] = frozenset()) -> tuple[str, dict[str, Any]] | None:
    """Forget the archived logs no base backup replays any more: the archive's repository and what
    went; None when the engine archives no logs of its own here. With ``dry_run``, what would go
    once the backups named in ``going`` are deleted.

    The bases counted: every completed base of the archiving method catalogued under the cluster
    (recycled ones of a former registration too), and as others that may only keep more, every
    other one (a recycled backup recovered into another cluster still replays its source's
    archive). A base of the cluster whose positions are unknown holds everything; the plugin tells.

    An unregistered cluster (none of its engine registered under its name since) is retired:
    nothing archives into it any more, so logs only a running server needed go too, and once no
    base is left, all of them. Not while a backup of it is still running (unregistered meanwhile,
    with ``--keep all``): the newest timeline is kept for that one."""
    retired = cluster.deleted_at is not None and live_namesake(session, cluster) is None \
        and session.scalar(select(Backup.id).where(
            Backup.organisation_id == cluster.organisation_id, Backup.cluster_name == cluster.name,
            Backup.phase.in_((PHASE_NEW, PHASE_RUNNING))).limit(1)) is None
    try:
        archive = _archive_of(session, cluster)
    except NoRepositoryError:
        if not retired:
            raise
        return None                  # no repository is known for its logs any more: none to expire
    if archive is None:
        return None
    tool, method, row, ctx = archive
    bases = session.scalars(select(Backup).where(Backup.method == method, Backup.phase == PHASE_COMPLETED,
                                                 Backup.type.in_(("full", "incremental"))))
    own, others = [], []
    for b in bases:
        if b.name not in going:
            mine = (b.organisation_id, b.cluster_name) == (cluster.organisation_id, cluster.name)
            (own if mine else others).append(b.positions or {})
    with open_repository(row) as repo:
        return row.name, tool.expire_logs(repo, target_of(cluster), ctx, own, others, dry_run, retired)


def trim_retired_archive(session: Session, cluster: Cluster) -> tuple[dict[str, Any] | None, str | None]:
    """``expire_logs`` for a cluster just unregistered, or one of whose recycled backups just went,
    once that is committed: (its repository and what went, or None; why nothing went, or None). An
    error is a result here: what it follows is done already. Nothing for a cluster registered, or
    whose name its engine took again: that one's own retention trims the archive."""
    if cluster.deleted_at is None or live_namesake(session, cluster) is not None:
        return None, None
    try:
        expired = expire_logs(session, cluster)
    except Exception as exc:
        return None, str(exc) if isinstance(exc, BackupctlError) else f"{type(exc).__name__}: {exc}"
    return ({"repository": expired[0], **expired[1]} if expired is not None else None), None


def archive_config(session: Session, cluster: str, org: str | None = None) -> str:
    c = get_cluster(session, cluster, org)
    tool, _ = archiver_of(c)
    return tool.archive_config(target_of(c), context_for(c.name, c.organisation.name))
