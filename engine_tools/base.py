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
    progress: Progress | None = None


@dataclass
class BackupResult:
    snapshot_ids: list[str]
    logical_size: int = 0
    bytes_added: int = 0
    positions: dict[str, Any] = field(default_factory=dict)   # LSN, binlog file/position, ...
    restorable_from: datetime | None = None
    restorable_to: datetime | None = None


@dataclass
class RestoreRequest:
    cluster: ClusterTarget                     # the target (may be a new cluster)
    method: str
    snapshot_ids: list[str]                    # the chain, oldest first
    target_dir: str
    restore_time: datetime | None = None
    progress: Progress | None = None


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
