"""The ``volume`` engine tool: a file copy of a cluster's data directory, for any engine.

It backs up ``data_dir`` into the repository as a file tree. The copy is taken while the
database may be running, so it is only as consistent as the files on disk at that moment:
crash-consistent if the volume is frozen (fsfreeze, an LVM/ZFS snapshot mounted at
``data_dir``) or the database is stopped; otherwise the engine's crash recovery is relied
on at restore and may fail for engines that do not journal. Prefer an engine's own full
method where one is installed; this one is the fallback and the cross-engine baseline.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from backupctl.errors import BackupctlError, UsageError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from engine_tools.base import (
    ANY_ENGINE,
    BackupRequest,
    BackupResult,
    Capability,
    ClusterTarget,
    MethodSpec,
    RestoreRequest,
)


class VolumeTool:
    name = "volume"
    engines = (ANY_ENGINE,)
    methods = (
        MethodSpec("volume", frozenset({Capability.FULL}), snapshot_volumes=True,
                   description="file copy of the data directory (crash-consistent only on a frozen volume)"),
    )

    def check(self, cluster: ClusterTarget, method: str) -> None:
        if not cluster.data_dir:
            raise UsageError(f"cluster {cluster.name} has no data directory, so the volume method cannot back it up",
                             "register the cluster with --data-dir, or choose an engine method with --method")
        if not os.path.isdir(cluster.data_dir):
            raise UsageError(f"the data directory {cluster.data_dir} of cluster {cluster.name} does not exist",
                             "check the path, or re-register the cluster with the right --data-dir")

    def backup(self, repo: Repository, request: BackupRequest) -> BackupResult:
        self.check(request.cluster, request.method)
        if request.type != "full":
            raise UsageError(f"the volume method takes full backups only, not {request.type}", "use --type full")
        snap = backup_paths(repo, [request.cluster.data_dir], tags=request.tags, metadata=request.metadata,
                            progress=request.progress)
        request.committed(snap.id)
        at = datetime.fromisoformat(snap.time)
        summary = snap.summary or {}
        return BackupResult(
            snapshot_ids=[snap.id],
            logical_size=int(summary.get("bytes_total", summary.get("bytes_read", 0)) or 0),
            bytes_added=int(summary.get("bytes_added", 0) or 0),
            restorable_from=at.astimezone(timezone.utc),
            restorable_to=at.astimezone(timezone.utc),
        )

    def restore(self, repo: Repository, request: RestoreRequest) -> None:
        from backupctl.repository.restore import restore_snapshot

        if len(request.snapshot_ids) != 1:
            raise BackupctlError("a volume backup is one snapshot; got a chain", "restore a single volume backup")
        restore_snapshot(repo, repo.find_snapshot(request.snapshot_ids[0]), request.target_dir,
                         progress=request.progress)
