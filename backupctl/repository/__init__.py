"""Content-addressed, encrypted, compressed, deduplicated storage shared by every engine.

One file per concept: crypto, key (slots), config, pack, index, snapshot, tree, lock,
blobsaver (the write pipeline), backup, restore, check, gc.
"""

from backupctl.repository.repo import Repository
from backupctl.repository.snapshot import Snapshot

__all__ = ["Repository", "Snapshot"]
