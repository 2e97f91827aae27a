"""Rebuilding the catalogue's backup records from a repository's snapshot manifests.

The repository is self-describing (see backupctl/catalog/README.md): every snapshot of a
catalogued backup carries the backup's name, organisation, cluster, engine, method, type,
parent and positions in its metadata. Rebuilding is idempotent: backups already in the
catalogue are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupctl.catalog.manifest import BackupManifest, parse_snapshot_metadata
from backupctl.catalog.models import (
    PHASE_COMPLETED,
    Backup,
    BackupPolicy,
    BackupRepository,
    Cluster,
    utcnow,
)
from backupctl.repository import Repository, Snapshot
from backupctl.services import audit
from backupctl.services.organisations import get_organisation


@dataclass
class RebuildReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    ignored_snapshots: int = 0        # snapshots without catalogue metadata (plain file snapshots)
    missing_parents: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)   # a member snapshot is gone: never usable


def rebuild_from_repository(session: Session, repo: Repository, repo_row: BackupRepository) -> RebuildReport:
    report = RebuildReport()
    groups: dict[str, list[tuple[Snapshot, BackupManifest]]] = {}
    snapshots = repo.snapshots()
    present = {s.id for s in snapshots}
    for snap in snapshots:
        manifest = parse_snapshot_metadata(snap.metadata)
        if manifest is None:
            report.ignored_snapshots += 1
            continue
        groups.setdefault(manifest.backup, []).append((snap, manifest))

    created: dict[str, tuple[Backup, BackupManifest]] = {}
    for name, members in groups.items():     # snapshots() is sorted by time, so groups are in time order
        if session.scalar(select(Backup).where(Backup.name == name)) is not None:
            report.existing.append(name)
            continue
        snaps = [s for s, _ in members]
        # snapshots stored without a manifest (a data snapshot) are named by the one that has it
        ids = [*dict.fromkeys([*(x for _, mm in members for x in mm.members), *(s.id for s in snaps)])]
        if not present.issuperset(ids):      # e.g. the label of a killed backup whose data was forgotten
            report.incomplete.append(name)
            continue
        m = members[0][1]
        org = get_organisation(session, m.org, create=True)
        cluster = session.scalar(select(Cluster).where(Cluster.organisation_id == org.id, Cluster.name == m.cluster,
                                                       Cluster.engine == m.engine, Cluster.deleted_at.is_(None)))
        ends = [datetime.fromisoformat(s.time) for s in snaps]
        starts = [e - timedelta(seconds=float((s.summary or {}).get("duration", 0) or 0)) for s, e in zip(snaps, ends)]
        logical = sum(int((s.summary or {}).get("bytes_total", (s.summary or {}).get("bytes_read", 0)) or 0)
                      for s in snaps)
        added = sum(int((s.summary or {}).get("bytes_added", 0) or 0) for s in snaps)
        seconds = (max(ends) - min(starts)).total_seconds()
        positions: dict = {}
        for _, mm in members:
            positions.update(mm.positions)
        policy = m.policy and cluster is not None and session.scalar(select(BackupPolicy).where(
            BackupPolicy.organisation_id == org.id, BackupPolicy.name == m.policy,
            BackupPolicy.cluster_id == cluster.id))
        backup = Backup(name=name, organisation=org, cluster=cluster, cluster_name=m.cluster, engine=m.engine,
                        method=m.method, type=m.type, phase=PHASE_COMPLETED, started_at=min(starts),
                        policy_id=policy.id if policy else None, completed_at=max(ends),
                        restorable_from=next((mm.restorable_from for _, mm in members if mm.restorable_from),
                                             None) or min(ends),
                        restorable_to=max((mm.restorable_to for _, mm in members if mm.restorable_to),
                                          default=max(ends)),
                        positions=positions, logical_size=logical, bytes_added=added,
                        throughput=logical / seconds if seconds > 0 else None, repository_name=repo_row.name,
                        snapshot_ids=ids, recycled=cluster is None,
                        recycled_at=utcnow() if cluster is None else None)
        session.add(backup)
        created[name] = (backup, m)
        report.created.append(name)
    session.flush()
    for name, (backup, m) in created.items():
        if m.parent:
            parent = session.scalar(select(Backup).where(Backup.name == m.parent))
            if parent is None:
                report.missing_parents.append(name)
            backup.parent = parent
    audit.record(session, "catalog.rebuild", f"repository/{repo_row.name}", created=len(report.created),
                 existing=len(report.existing), ignored=report.ignored_snapshots, incomplete=len(report.incomplete))
    session.flush()
    return report
