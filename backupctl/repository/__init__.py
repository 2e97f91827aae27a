"""Content-addressed, encrypted, compressed, deduplicated storage shared by every engine.

One file per concept: crypto (AEAD, keyed ids, KDF), key (key slots), config (format
version and parameters), chunker (FastCDC over reused buffers), pack, index, snapshot,
tree, lock, plan and gc (two-phase garbage collection), blobsaver (the write pipeline),
backup, restore, check, stats; repo ties an opened store to its key and index.
"""

from backupctl.repository.repo import Repository
from backupctl.repository.snapshot import Snapshot

__all__ = ["Repository", "Snapshot"]
