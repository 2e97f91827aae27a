"""A test-only engine tool, installed through a real entry point by the ``chain_tool`` fixture.

Method ``pgfiles`` for postgresql takes full and incremental backups (a file copy of the data
directory each time; an incremental names its parent's snapshots). ``HOLD`` makes a backup wait
until the test sets ``RELEASE`` (``STARTED`` is set once it waits), to keep a backup running.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from backupctl.errors import UsageError
from backupctl.repository.backup import backup_paths
from engine_tools.base import (
    BackupRequest,
    BackupResult,
    Capability,
    ClusterTarget,
    MethodSpec,
    RestoreRequest,
)

HOLD = threading.Event()
STARTED = threading.Event()
RELEASE = threading.Event()


def reset() -> None:
    for e in (HOLD, STARTED, RELEASE):
        e.clear()


class ChainTool:
    name = "chaintool"
    engines = ("postgresql",)
    methods = (MethodSpec("pgfiles", frozenset({Capability.FULL, Capability.INCREMENTAL}),
                          action_set="postgresql-pgfiles", description="test: full and incremental file copies"),)

    def check(self, cluster: ClusterTarget, method: str) -> None:
        if not cluster.data_dir:
            raise UsageError(f"cluster {cluster.name} has no data directory", "register it with --data-dir")

    def backup(self, repo, request: BackupRequest) -> BackupResult:  # noqa: ANN001
        if HOLD.is_set():
            STARTED.set()
            assert RELEASE.wait(30), "the test never released the held backup"
        snap = backup_paths(repo, [request.cluster.data_dir], tags=request.tags, metadata=request.metadata)
        at = datetime.fromisoformat(snap.time).astimezone(timezone.utc)
        summary = snap.summary or {}
        return BackupResult(snapshot_ids=[snap.id], logical_size=int(summary.get("bytes_total", 0) or 0),
                            bytes_added=int(summary.get("bytes_added", 0) or 0), restorable_from=at, restorable_to=at,
                            positions={"parents": list(request.parent_snapshot_ids)})

    def restore(self, repo, request: RestoreRequest) -> None:  # noqa: ANN001
        raise NotImplementedError
