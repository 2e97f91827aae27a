"""The retention sweep: apply each policy's rules to its cluster's backups in the catalogue,
remove what goes (catalogue record and repository snapshots, children before parents), then
reclaim space in each repository touched with its garbage collection.

A policy's rules come from ``BackupPolicy.retention`` (``keep_last``, ``keep_daily``, ...,
``period``, ``pitr_window``). Where those set no period, the schedules' ``retention_period``
(KubeBlocks' per-schedule field) fills in: the longest one of the methods that take base
backups becomes ``period``, the longest one of continuous methods becomes ``pitr_window``.
All backups of the cluster are considered so chains are seen whole, but only backups made by
the policy are ever deleted; the others are kept ("not made by policy P") with their chains.

PostgreSQL's WAL archive is no catalogue rows: for a PITR window, the archive is read for the range
it restores each base backup to (``LogArchiver.log_windows``), and those ranges stand in for
continuous backups, so the window keeps the base it replays from. If the archive cannot be read,
the policy deletes nothing. After the deletions, each swept cluster's log archive is expired, as
pgBackRest's expire does: what no remaining base replays is forgotten (``services.archiving.expire_logs``
chooses the bases, ``LogArchiver.expire_logs`` the files), and gc reclaims it.

Backups in the recycle bin (their cluster was unregistered) are not a policy's any more: the
recycle bin's own period decides (``recycle_bin``), and policies of unregistered clusters are
not applied.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.models import (
    PHASE_COMPLETED,
    PHASE_NEW,
    PHASE_RUNNING,
    Backup,
    BackupPolicy,
    BackupRepository,
    Cluster,
    utcnow,
)
from backupctl.errors import BackupctlError
from backupctl.retention.period import parse_period
from backupctl.retention.policy import BackupRecord, Decision, RetentionRules, decide
from backupctl.retention.recycle_bin import (
    RecycleBinPlan,
    RecycledBackup,
    decide_recycle_bin,
    recycle_bin_period,
)

log = logging.getLogger(__name__)

ARCHIVE_PREFIX = "log archive after "      # ids of the records standing for a base's archived logs


def record_of(b: Backup, policy_id: int | None = None) -> BackupRecord:
    completed = b.phase == PHASE_COMPLETED
    running = b.phase in (PHASE_NEW, PHASE_RUNNING)
    pinned = None
    if policy_id is not None and b.policy_id != policy_id:
        pinned = "not made by this policy"
    return BackupRecord(
        id=b.name, type=b.type, start=b.started_at or b.created_at,
        end=b.completed_at if completed else None,
        parent_id=b.parent.name if b.parent is not None else None,
        completed=completed, running=running, protected=b.deletion_protection,
        restorable_from=b.restorable_from if b.type == "continuous" else None,
        restorable_to=b.restorable_to if b.type == "continuous" else None, pinned=pinned)


def rules_for(policy: BackupPolicy, backups: list[Backup]) -> RetentionRules:
    rules = dict(policy.retention or {})
    continuous_methods = {b.method for b in backups if b.type == "continuous"}
    base_periods, log_periods = [], []
    for s in policy.schedules:
        if s.retention_period:
            (log_periods if s.backup_method in continuous_methods else base_periods).append(
                parse_period(s.retention_period))
    if not rules.get("period") and base_periods:
        rules["period"] = max(base_periods)
    if not rules.get("pitr_window") and log_periods:
        rules["pitr_window"] = max(log_periods)
    return RetentionRules.from_mapping(rules)


@dataclass
class PolicyPlan:
    policy: BackupPolicy
    rules: RetentionRules
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.name, "organisation": self.policy.organisation.name,
                "cluster": self.policy.cluster.name, "rules": self.rules.describe(), **self.decision.to_dict()}


def plan(session: Session, *, org: str | None = None, policy: str | None = None,
         now: datetime | None = None) -> list[PolicyPlan]:
    """What retention would do now, per policy. Changes nothing."""
    now = now or utcnow()
    q = select(BackupPolicy).order_by(BackupPolicy.id)
    plans = []
    for p in session.scalars(q):
        if org is not None and p.organisation.name != org:
            continue
        if policy is not None and p.name != policy:
            continue
        if p.cluster.deleted_at is not None:
            continue        # its kept backups are in the recycle bin
        backups = list(session.scalars(select(Backup).where(Backup.cluster_id == p.cluster_id,
                                                            Backup.recycled.is_(False))))
        rules = rules_for(p, backups)
        records = [record_of(b, p.id) for b in backups]
        archived: list[BackupRecord] = []
        if rules.pitr_window is not None:
            records, archived = _with_log_archive(session, p, backups, records)
        decision = decide(records + archived, rules, now)
        for r in archived:            # they stood for the archive, which retention does not delete
            decision.records.pop(r.id)
            decision.keep.pop(r.id, None)
            decision.delete.pop(r.id, None)
        plans.append(PolicyPlan(p, rules, decision))
    return plans


def _with_log_archive(session: Session, policy: BackupPolicy, backups: list[Backup],
                      records: list[BackupRecord]) -> tuple[list[BackupRecord], list[BackupRecord]]:
    """For a cluster whose logs are archived outside the catalogue (PostgreSQL's WAL), what the archive
    restores each base backup to, as a continuous record, so that the PITR window keeps the base it
    replays from. When the archive cannot be read, every backup is kept: retention does not guess."""
    from backupctl.services.archiving import log_windows

    by_name = {r.id: r for r in records}
    bases = [b for b in backups if by_name[b.name].completed and b.type in ("full", "incremental")]
    try:
        windows = log_windows(session, policy.cluster, bases)
    except BackupctlError as exc:
        why = f"PITR window unknown: the log archive cannot be read ({exc.message})"
        return [replace(r, pinned=r.pinned or why) for r in records], []
    archived = []
    for b, w in zip(bases, windows or []):
        if w is not None:
            end = by_name[b.name].end              # consistent before then: the window is from then on
            until = max(end, w[1])
            archived.append(BackupRecord(id=f"{ARCHIVE_PREFIX}{b.name}", type="continuous", start=end, end=until,
                                         restorable_from=end, restorable_to=until))
    return records, archived


def plan_recycle_bin(session: Session, *, org: str | None = None, now: datetime | None = None) -> RecycleBinPlan:
    """What the recycle bin's retention would do now. Changes nothing."""
    now = now or utcnow()
    period = recycle_bin_period()
    q = select(Backup).where(Backup.recycled.is_(True)).order_by(Backup.id)
    recycled = [b for b in session.scalars(q) if org is None or b.organisation.name == org]
    ids = {b.id for b in recycled}
    needed_by: dict[int, str] = {}
    if ids:
        for child in session.scalars(select(Backup).where(Backup.parent_backup_id.in_(ids),
                                                          Backup.recycled.is_(False)).order_by(Backup.id)):
            needed_by.setdefault(child.parent_backup_id, child.name)
    entries = [RecycledBackup(record=record_of(b), recycled_at=b.recycled_at or b.created_at,
                              needed_by=needed_by.get(b.id)) for b in recycled]
    return RecycleBinPlan(period, decide_recycle_bin(entries, period, now))


@dataclass
class SweepReport:
    deleted: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    gc: dict[str, str] = field(default_factory=dict)
    logs: dict[str, dict[str, Any]] = field(default_factory=dict)     # org/cluster -> what its log expiry did

    def to_dict(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "errors": self.errors, "gc": self.gc, "log_expiry": self.logs}


def apply(session: Session, plans: list[PolicyPlan], *, reclaim: bool = True,
          recycle_bin: RecycleBinPlan | None = None) -> SweepReport:
    """Delete what the plans (and the recycle bin's plan) say goes (each deletion committed on
    its own), then gc."""
    from backupctl.services.repositories import open_repository

    report = SweepReport()
    touched: set[str] = set()
    swept = _swept_clusters(session, plans, recycle_bin)        # before the rows go
    for p in plans:
        for rec in p.decision.deleted():
            backup = session.scalar(select(Backup).where(Backup.name == rec.id))
            if backup is None or backup.policy_id != p.policy.id or backup.recycled:
                continue
            _delete(session, backup, report, touched)
    if recycle_bin is not None:
        for rec in recycle_bin.decision.deleted():
            backup = session.scalar(select(Backup).where(Backup.name == rec.id))
            if backup is None or not backup.recycled:
                continue
            _delete(session, backup, report, touched)
    _expire_logs(session, swept, report, touched)
    if reclaim:
        from backupctl.repository.gc import gc

        for name in sorted(touched):
            row = session.scalar(select(BackupRepository).where(BackupRepository.name == name))
            if row is None:
                continue
            try:
                with open_repository(row) as repo:
                    result = gc(repo)
                report.gc[name] = str(result)
            except BackupctlError as exc:
                report.errors[f"gc {name}"] = str(exc)
    return report


def _delete(session: Session, backup: Backup, report: SweepReport, touched: set[str]) -> None:
    from backupctl.services.backups import delete_backup

    name, repository = backup.name, backup.repository_name
    try:
        delete_backup(session, backup)
        session.commit()
    except BackupctlError as exc:
        session.rollback()
        report.errors[name] = str(exc)
        return
    report.deleted.append(name)
    touched.add(repository)


def _expire_logs(session: Session, clusters: Iterable[Cluster], report: SweepReport, touched: set[str]) -> None:
    """After the deletions, each swept cluster's log archive goes back to what the base backups left
    still replay (``services.archiving.expire_logs``)."""
    for key, done in _log_expiries(session, clusters, report.errors):
        repository, figures = done
        report.logs[key] = figures
        if figures.get("snapshots_forgotten"):
            touched.add(repository)


def preview_log_expiry(session: Session, plans: list[PolicyPlan], recycle_bin: RecycleBinPlan | None = None
                       ) -> tuple[dict[str, Any], dict[str, str]]:
    """What ``apply`` would expire of each swept cluster's log archive once the plans' (and the
    recycle bin's) deletions are done (org/cluster -> figures), and what could not be read.
    Changes nothing."""
    decisions = [p.decision for p in plans] + ([recycle_bin.decision] if recycle_bin else [])
    going = frozenset(r.id for d in decisions for r in d.deleted())
    errors: dict[str, str] = {}
    figures = {key: done[1]
               for key, done in _log_expiries(session, _swept_clusters(session, plans, recycle_bin), errors, going)}
    return figures, errors


def _swept_clusters(session: Session, plans: list[PolicyPlan], recycle_bin: RecycleBinPlan | None) -> list[Cluster]:
    """The clusters whose log archives a sweep expires: those of the policies, and those whose
    backups the recycle bin deletes (the one of that name and engine registered now, else the
    backup's own, retired: once its last backup goes, so does its archive)."""
    from backupctl.services.archiving import live_namesake

    clusters = {p.policy.cluster.id: p.policy.cluster for p in plans}
    for rec in recycle_bin.decision.deleted() if recycle_bin is not None else []:
        backup = session.scalar(select(Backup).where(Backup.name == rec.id))
        if backup is None or backup.cluster is None:
            continue
        cluster = live_namesake(session, backup.cluster) or backup.cluster
        clusters.setdefault(cluster.id, cluster)
    return list(clusters.values())


def _log_expiries(session: Session, clusters: Iterable[Cluster], errors: dict[str, str],
                  going: frozenset[str] | None = None) -> Iterator[tuple[str, tuple[str, dict[str, Any]]]]:
    from backupctl.services.archiving import expire_logs

    for cluster in clusters:
        key = f"{cluster.organisation.name}/{cluster.name}"
        try:
            done = expire_logs(session, cluster, dry_run=going is not None, going=going or frozenset())
        except BackupctlError as exc:
            errors[f"log archive of {key}"] = str(exc)
            continue
        if done is not None:
            yield key, done


def sweep(session: Session, *, org: str | None = None, reclaim: bool = True) -> SweepReport:
    return apply(session, plan(session, org=org), reclaim=reclaim, recycle_bin=plan_recycle_bin(session, org=org))
