"""Snapshot manifests: what one backup holds.

A snapshot names its file tree (a stream of JSON lines stored as tree blobs), the paths
it was taken from, tags, its parent, a summary, and free-form engine metadata (JSON)
for the engine plugins. Writing the manifest is the commit point of a backup: it is
written only after every blob and the index that lists them are durable.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone

from backupctl.errors import NotFoundError, UsageError
from backupctl.repository.crypto import MasterKey
from repo_plugins import Store

SNAPSHOTS_PREFIX = "snapshots/"
_AAD = b"backupctl-snapshot"


@dataclass
class Snapshot:
    time: str                       # ISO 8601, UTC
    hostname: str
    username: str
    paths: list[str]
    tree: list[str]                 # hex ids of the tree blobs, in order
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    summary: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)   # engine plugins' own JSON
    # Where its blobs were stored (an index file's encoding, base64), written by backups that reuse
    # nothing stored (wal-push): a read of one WAL file then needs no index of the whole repository.
    # Only a hint: every blob read is verified, and one that moved since is found through the index.
    # Stored in the summary, where releases before it read it as one more figure.
    index_hint: str = ""
    id: str = ""                    # the storage id; not part of the stored JSON

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_dict(self) -> dict:
        return asdict(self)


_FIELDS = {f.name for f in fields(Snapshot)} - {"id"}
_HINT = "index_hint"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def save_snapshot(store: Store, key: MasterKey, snap: Snapshot) -> str:
    body = snap.to_dict()
    body.pop("id")
    hint = body.pop("index_hint")
    if hint:
        body["summary"] = {**body["summary"], _HINT: hint}
    sealed = key.encrypt(json.dumps(body).encode(), _AAD)
    snap.id = hashlib.sha256(sealed).hexdigest()
    store.put(SNAPSHOTS_PREFIX + snap.id, sealed)
    return snap.id


def load_snapshot(store: Store, key: MasterKey, snap_id: str) -> Snapshot:
    raw = key.decrypt(store.get(SNAPSHOTS_PREFIX + snap_id), _AAD, f"snapshot {snap_id[:8]}")
    d = {k: v for k, v in json.loads(raw).items() if k in _FIELDS}     # a later release's fields: ignored
    summary = d.get("summary")
    if isinstance(summary, dict) and _HINT in summary:
        d["summary"] = {k: v for k, v in summary.items() if k != _HINT}
        d["index_hint"] = summary[_HINT]
    return Snapshot(id=snap_id, **d)


def list_snapshot_ids(store: Store) -> list[str]:
    return [name[len(SNAPSHOTS_PREFIX):] for name, _ in store.list(SNAPSHOTS_PREFIX)]


def resolve_snapshot_id(ids: list[str], ref: str) -> str:
    """A full id or a unique prefix of one."""
    matches = [i for i in ids if i.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"snapshot id prefix {ref!r} is ambiguous", "give more characters of the id")
    raise NotFoundError(f"no snapshot {ref!r} in the repository", "see 'backupctl snapshot list'")
