"""The protocol every engine tool plugin implements, and the types it exchanges with the core.

A plugin declares which engines it serves (``engines``; ``"*"`` = any cluster) and its
backup methods, each with its capabilities (full, incremental, continuous, pitr,
snapshot). The core never imports a plugin: it finds them through the entry point group
``backupctl.engine_tools`` (see ``engine_tools.registry``), hands a plugin a
``BackupRequest`` and gets a ``BackupResult`` back.

A plugin must pass ``request.metadata`` unchanged (it may add keys of its own) as the
``metadata`` of every repository snapshot it writes: those keys are what lets
``backupctl catalog rebuild`` recreate the catalogue from the repository alone
(see backupctl/catalog/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from backupctl.progress import Progress
    from backupctl.repository import Repository

# The engines a cluster may be registered with. Plugins may add more (their ``engines``).
KNOWN_ENGINES: tuple[str, ...] = ("postgresql", "mysql", "redis")
ANY_ENGINE = "*"


class Capability(str, Enum):
    FULL = "full"
    INCREMENTAL = "incremental"
    CONTINUOUS = "continuous"
    PITR = "pitr"
    SNAPSHOT = "snapshot"


@dataclass(frozen=True)
class MethodSpec:
    """One backup method of a plugin (KubeBlocks ``backupMethods[].name``)."""

    name: str
    capabilities: frozenset[Capability]
    default: bool = False              # the engine's default full method
    snapshot_volumes: bool = False     # exported as KubeBlocks ``snapshotVolumes: true``
    action_set: str | None = None      # exported as KubeBlocks ``actionSetName``
    description: str = ""

    def can(self, capability: Capability | str) -> bool:
        return Capability(capability) in self.capabilities


@dataclass(frozen=True)
class ClusterTarget:
    """What a plugin sees of a cluster. ``password_env`` names the variable holding the password."""

    name: str
    engine: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password_env: str | None = None
    data_dir: str | None = None
    version: str | None = None
    topology: str | None = None


@dataclass
class BackupRequest:
    cluster: ClusterTarget
    method: str
    type: str                                  # full | incremental | continuous | snapshot
    metadata: dict[str, Any]                   # catalogue keys: put into every snapshot written
    tags: list[str] = field(default_factory=list)
    parent_snapshot_ids: list[str] = field(default_factory=list)   # the parent backup's, for incrementals
    # For a full backup: the newest full of the method in the same repository. A plugin may let it
    # speed up re-cutting changed files (the chunker's guide), never skip reading a file.
    previous_snapshot_ids: list[str] = field(default_factory=list)
    progress: Progress | None = None
    # Set when the cluster's logs are archived into the repository this backup writes to: the
    # plugin may then archive the logs the backup needs itself instead of waiting for the server.
    log_context: "LogContext | None" = None
    # Called with each snapshot id as soon as the plugin has committed that snapshot, before the
    # backup completes: the catalogue records it, so a backup killed midway still names what it
    # left in the repository, and deleting its Failed row forgets that too.
    on_snapshot: Callable[[str], None] | None = None

    def committed(self, snapshot_id: str) -> None:
        if self.on_snapshot is not None:
            self.on_snapshot(snapshot_id)


@dataclass
class BackupResult:
    snapshot_ids: list[str]
    logical_size: int = 0
    bytes_added: int = 0
    positions: dict[str, Any] = field(default_factory=dict)   # LSN, binlog file/position, ...
    restorable_from: datetime | None = None
    restorable_to: datetime | None = None


@dataclass
class LogContext:
    """What a plugin needs to archive or fetch a cluster's logs (WAL, binlogs) for the core.

    ``state_dir``: a private directory for this cluster's archiving state (spool, cached
    listings); ``command``: how the database server invokes backupctl (absolute path, and
    the environment it needs), to which the plugin appends the subcommand; ``repository``:
    for a restore, the catalogue repository its logs are read from (the backup's), which the
    fetch command names, so that it does not depend on the cluster being registered still.
    """

    cluster: str
    org: str
    state_dir: str
    command: str
    tags: list[str] = field(default_factory=list)
    repository: str | None = None


@dataclass
class RestoreRequest:
    cluster: ClusterTarget                     # the target (may be a new cluster)
    method: str
    snapshot_ids: list[str]                    # the chain, oldest first
    target_dir: str
    restore_time: datetime | None = None
    progress: Progress | None = None
    target_position: str | None = None         # an engine position to stop at (LSN, binlog position)
    target_transaction: str | None = None      # a transaction id to stop after
    target_name: str | None = None             # a named restore point
    start: bool = False                        # start the restored server and wait until it is promoted
    port: int | None = None                    # the restored server's port
    force: bool = False                        # restore over a non-empty target directory
    log_context: LogContext | None = None      # the source cluster's log archive (point-in-time restores)
    archive_context: LogContext | None = None  # the cluster the restored server archives its own logs for
                                               # (a registered new cluster); None: it archives nothing


@dataclass
class RestoreStage:
    """One step of a restore that the caller (CLI, operator) runs and times on its own.

    ``run`` returns details to record (positions reached, files written), or None.
    """

    name: str
    run: Callable[[], dict[str, Any] | None]


@runtime_checkable
class EngineTool(Protocol):
    name: str
    engines: tuple[str, ...]
    methods: tuple[MethodSpec, ...]

    def check(self, cluster: ClusterTarget, method: str) -> None:
        """Raise backupctl.errors.UsageError if this method cannot back up this cluster (say why)."""

    def backup(self, repo: Repository, request: BackupRequest) -> BackupResult:
        """Take the backup into ``repo``; raise a BackupctlError on failure."""

    def restore(self, repo: Repository, request: RestoreRequest) -> None:
        """Write the backup back; raise a BackupctlError on failure."""


@runtime_checkable
class StagedRestore(Protocol):
    """Optional: a plugin whose restore is a sequence of stages (prepare data, configure, start, replay)."""

    def restore_stages(self, repo: Repository, request: RestoreRequest) -> list[RestoreStage]:
        """The stages, in order; checks that need no change on disk (the target window) run here, up front."""


@runtime_checkable
class LogArchiver(Protocol):
    """Optional: a plugin that archives an engine's logs continuously (WAL, binlogs) for point-in-time restore."""

    def archive_config(self, cluster: ClusterTarget, context: LogContext) -> str:
        """The server configuration lines that archive to, and restore from, backupctl."""

    def push_log(self, repo: Repository, cluster: ClusterTarget, path: str, context: LogContext) -> dict[str, Any]:
        """Store the log file at ``path`` (and others waiting, if the plugin batches)."""

    def fetch_log(self, repo: Repository, cluster: ClusterTarget, name: str, dest: str,
                  context: LogContext) -> bool:
        """Write archived log file ``name`` to ``dest``; False if the archive does not hold it."""

    def log_status(self, repo: Repository, cluster: ClusterTarget, context: LogContext) -> dict[str, Any]:
        """The archived range (per timeline), gaps and the lag."""

    def restore_point(self, repo: Repository, cluster: ClusterTarget, name: str, context: LogContext,
                      wait: float) -> dict[str, Any]:
        """Create a named restore point and make sure the log holding it is archived."""

    def log_windows(self, repo: Repository, cluster: ClusterTarget, context: LogContext,
                    positions: list[dict[str, Any]]) -> list[tuple[datetime, datetime] | None]:
        """For base backups (their ``positions``), the time range the archived logs restore each to
        (consistent from .. last time without a gap), or None for one the archive cannot make
        consistent. Retention keeps what a PITR window needs by these, for logs that are no
        catalogue rows of their own."""

    def expire_logs(self, repo: Repository, cluster: ClusterTarget, context: LogContext,
                    positions: list[dict[str, Any]], others: list[dict[str, Any]],
                    dry_run: bool = False, retired: bool = False) -> dict[str, Any]:
        """Forget the archived logs that none of the cluster's base backups (by their ``positions``)
        replays, nor ``others`` (catalogued elsewhere, of the same database system: they may only
        keep more); the repository's gc then reclaims their space. Returns what went (with
        ``dry_run``, what would go), as JSON-ready figures. ``retired``: the cluster is unregistered
        (no server archives into it any more): logs kept only for a running server go too, and an
        archive nothing replays goes whole."""
