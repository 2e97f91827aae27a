"""The catalogue keys written into every backup's repository snapshot ``metadata``.

They make the repository self-describing: ``backupctl catalog rebuild`` recreates the
backup records from them alone. Writers call ``snapshot_metadata``; readers call
``parse_snapshot_metadata``. The keys (all JSON) are documented in README.md beside this file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CATALOG_FORMAT = 1

# key names, in one place
K_FORMAT = "catalog_format"
K_BACKUP = "backup"
K_ORG = "org"
K_CLUSTER = "cluster"
K_ENGINE = "engine"
K_METHOD = "method"
K_TYPE = "type"
K_PARENT = "parent"
K_POLICY = "policy"
K_POSITIONS = "positions"
K_RESTORABLE_FROM = "restorable_from"
K_RESTORABLE_TO = "restorable_to"
# Snapshots of the backup stored without a manifest, before this one (a PostgreSQL backup's data
# snapshot: without a manifest, a backup that never completed is not brought back by a rebuild).
K_MEMBERS = "members"


@dataclass
class BackupManifest:
    backup: str
    org: str
    cluster: str
    engine: str
    method: str
    type: str
    parent: str | None = None
    policy: str | None = None
    positions: dict[str, Any] = field(default_factory=dict)
    restorable_from: datetime | None = None
    restorable_to: datetime | None = None
    members: list[str] = field(default_factory=list)


def snapshot_metadata(m: BackupManifest) -> dict[str, Any]:
    """The metadata dict to give ``backup_paths``/``backup_stream`` for this backup."""
    return {
        K_FORMAT: CATALOG_FORMAT,
        K_BACKUP: m.backup,
        K_ORG: m.org,
        K_CLUSTER: m.cluster,
        K_ENGINE: m.engine,
        K_METHOD: m.method,
        K_TYPE: m.type,
        K_PARENT: m.parent,
        K_POLICY: m.policy,
        K_POSITIONS: dict(m.positions),
        K_RESTORABLE_FROM: m.restorable_from.isoformat() if m.restorable_from else None,
        K_RESTORABLE_TO: m.restorable_to.isoformat() if m.restorable_to else None,
        K_MEMBERS: list(m.members),
    }


def parse_snapshot_metadata(metadata: dict[str, Any] | None) -> BackupManifest | None:
    """The manifest in a snapshot's metadata, or None for a snapshot that is not a catalogued backup."""
    if not metadata or not isinstance(metadata.get(K_FORMAT), int):
        return None
    required = (K_BACKUP, K_CLUSTER, K_ENGINE, K_METHOD, K_TYPE)
    if not all(isinstance(metadata.get(k), str) and metadata.get(k) for k in required):
        return None

    def when(key: str) -> datetime | None:
        v = metadata.get(key)
        try:
            return datetime.fromisoformat(v) if isinstance(v, str) else None
        except ValueError:
            return None

    positions = metadata.get(K_POSITIONS)
    members = metadata.get(K_MEMBERS)
    return BackupManifest(
        backup=metadata[K_BACKUP], org=metadata.get(K_ORG) or "default", cluster=metadata[K_CLUSTER],
        engine=metadata[K_ENGINE], method=metadata[K_METHOD], type=metadata[K_TYPE],
        parent=metadata.get(K_PARENT) or None, policy=metadata.get(K_POLICY) or None,
        positions=positions if isinstance(positions, dict) else {},
        restorable_from=when(K_RESTORABLE_FROM), restorable_to=when(K_RESTORABLE_TO),
        members=[x for x in members if isinstance(x, str)] if isinstance(members, list) else [],
    )
