"""The Repository: an opened store with its key, config and index.

Everything else (backup, restore, check, gc) takes a Repository and works through it.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import zstandard

from backupctl.errors import IntegrityError, NotFoundError, RepositoryError
from backupctl.repository import key as keys
from backupctl.repository.config import CONFIG_NAME, RepoConfig, check_format, decode_config, encode_config
from backupctl.repository.crypto import MasterKey
from backupctl.repository.index import INDEX_PREFIX, Index, load_index
from backupctl.repository.lock import Lock
from backupctl.repository.plan import doomed_packs
from backupctl.repository.pack import COMPRESSED, BlobEntry, pack_name
from backupctl.repository.snapshot import (SNAPSHOTS_PREFIX, Snapshot, list_snapshot_ids, load_snapshot,
                                           resolve_snapshot_id)
from repo_plugins import Store, open_store

_local = threading.local()
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def _undecompressable(what: str, exc: zstandard.ZstdError) -> IntegrityError:
    return IntegrityError(f"{what} does not decompress: {exc}", "run 'backupctl repo check --read-data'")


class Repository:
    def __init__(self, store: Store, key: MasterKey, slot: keys.KeySlot, config: RepoConfig) -> None:
        self.store = store
        self.key = key
        self.slot = slot
        self.config = config
        self._index: Index | None = None
        self._index_lock = threading.Lock()
        self._hints: Index | None = None     # where some blobs were stored: tried before the index
        self._origin: Repository | None = None    # a view's repository, whose index it reads

    # -- opening -----------------------------------------------------------------------
    @classmethod
    def init(cls, url: str, password: str, **config_overrides: int) -> "Repository":
        store = open_store(url)
        if hasattr(store, "check_writable"):
            store.check_writable()
        if store.exists(CONFIG_NAME):
            raise RepositoryError(f"a repository already exists at {url}", "use it, or choose another location")
        master = MasterKey.generate()
        config = RepoConfig.new(**config_overrides)
        slot = keys.new_slot(master, password)
        keys.save_slot(store, slot)
        store.put(CONFIG_NAME, encode_config(config, master))  # written last: the repository exists once this lands
        return cls(store, master, slot, config)

    @classmethod
    def open(cls, url: str, password: str) -> "Repository":
        store = open_store(url)
        try:
            raw = store.get(CONFIG_NAME)
        except FileNotFoundError:
            raise RepositoryError(f"no repository at {url}", "create one with 'backupctl repo init'") from None
        check_format(raw)
        master, slot = keys.open_master_key(store, password)
        return cls(store, master, slot, decode_config(raw, master))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- index ---------------------------------------------------------------------------
    @property
    def index(self) -> Index:
        if self._origin is not None:
            return self._origin.index
        with self._index_lock:             # readers on several threads load it once
            if self._index is None:
                self._index = load_index(self.store, self.key, avoid=doomed_packs(self))
            return self._index

    def reload_index(self) -> Index:
        """The index as the store holds it now (call it holding a lock). The one in memory is kept
        when no index file came or went and the gc plans doom the same packs: a restore or backup
        session that starts several steps pays for one load."""
        index = self._index
        if index is not None and {n for n, _ in self.store.list(INDEX_PREFIX)} == index.file_names \
                and doomed_packs(self) == index.avoid:
            return index
        self._index = None
        return self.index

    @property
    def index_loaded(self) -> bool:
        return (self._origin or self)._index is not None

    def with_hints(self, hints: Index) -> "Repository":
        """This repository reading blobs where ``hints`` says first (a snapshot's index hint): the
        index of the whole repository is loaded only if a blob is not there (any more)."""
        view = copy.copy(self)
        view._hints, view._origin = hints, self._origin or self
        return view

    # -- blobs ---------------------------------------------------------------------------
    def read_blob(self, blob_id: bytes) -> bytes:
        hinted = self._hints.lookup(blob_id) if self._hints is not None else None
        if hinted is not None:
            try:
                return self.read_copy(hinted)
            except IntegrityError:
                pass             # repacked by a gc since, or damaged: the index knows the other copies
        entry = self.index.lookup(blob_id)
        if entry is None:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is not in the index",
                                 "run 'backupctl repo check' to see which snapshots are damaged")
        return self.read_entry(entry)

    def read_entry(self, entry: BlobEntry) -> bytes:
        """``read_blob`` for a caller that has the blob's index entry already."""
        return self._from_any_copy(entry, self.read_copy)

    def read_copy(self, entry: BlobEntry) -> bytes:
        """The blob from this copy of it, and no other: verifying a particular copy."""
        return self.open_blob(entry, self._read_sealed(entry))

    def _from_any_copy(self, entry: BlobEntry, read: Callable[[BlobEntry], _T]) -> _T:
        """``read(entry)``, or when that copy is damaged or gone, the same blob from another pack
        that holds it (store-everything backups leave copies): one bad copy costs nothing while a
        good one is left. The first error is raised when every copy fails."""
        try:
            return read(entry)
        except IntegrityError as first:
            for other in self.index.copies(entry.id):
                if other.pack == entry.pack:
                    continue
                try:
                    result = read(other)
                except IntegrityError:
                    continue
                _log.warning("%s; read its copy in pack %s instead (run 'backupctl repo check --read-data')",
                             first.message, other.pack.hex()[:12])
                return result
            raise

    def _read_sealed(self, entry: BlobEntry) -> bytes:
        try:
            return self.store.get_range(pack_name(entry.pack), entry.offset, entry.length)
        except FileNotFoundError:
            raise IntegrityError(f"pack {entry.pack.hex()[:12]} holding blob {entry.id.hex()[:16]} is missing",
                                 "run 'backupctl repo check' to see which snapshots are damaged") from None

    def _decrypt(self, entry: BlobEntry, sealed: bytes | memoryview, what: str) -> bytes:
        if len(sealed) != entry.length:
            raise IntegrityError(f"{what} is truncated in pack {entry.pack.hex()[:12]}", "run 'backupctl repo check --read-data'")
        return self.key.decrypt(sealed, entry.id, what)

    def _verify(self, entry: BlobEntry, plain: bytes | memoryview, what: str, longer: bool = False) -> None:
        if longer or len(plain) != entry.raw_length or self.key.blob_id(plain) != entry.id:
            raise IntegrityError(f"{what} does not match its id", "run 'backupctl repo check --read-data'")

    def open_blob(self, entry: BlobEntry, sealed: bytes | memoryview) -> bytes:
        """Decrypt, decompress and verify one blob's bytes as read from its pack."""
        what = f"blob {entry.id.hex()[:16]}"
        plain = self._decrypt(entry, sealed, what)
        if entry.flags & COMPRESSED:
            try:
                plain = _decompressor().decompress(plain, max_output_size=entry.raw_length)
            except zstandard.ZstdError as exc:
                raise _undecompressable(what, exc) from None
        self._verify(entry, plain, what)
        return plain

    def read_blob_into(self, entry: BlobEntry, out: memoryview) -> None:
        """``read_blob`` straight into ``out`` (the blob's raw length): decompressed where it is
        needed, without a copy of the plaintext or an allocation of its size."""
        self._from_any_copy(entry, lambda e: self._read_copy_into(e, out))

    def _read_copy_into(self, entry: BlobEntry, out: memoryview) -> None:
        what = f"blob {entry.id.hex()[:16]}"
        payload = self._decrypt(entry, self._read_sealed(entry), what)
        if not entry.flags & COMPRESSED:
            self._verify(entry, payload, what)
            out[:] = payload
            return
        try:
            reader = _decompressor().stream_reader(payload, read_size=len(payload), read_across_frames=False)
            n = 0
            while n < len(out) and (got := reader.readinto(out[n:])):
                n += got
            longer = reader.read(1)                 # the frame must end exactly there
        except zstandard.ZstdError as exc:
            raise _undecompressable(what, exc) from None
        self._verify(entry, out[:n], what, longer=bool(longer))

    def read_blobs(self, blob_ids: list[bytes], threads: int = 4, window: int = 8,
                   pool: ThreadPoolExecutor | None = None) -> Iterator[bytes]:
        """Yield blobs in order, fetching ahead with at most ``window`` in flight, on ``pool`` or
        on a pool of ``threads`` of its own."""
        if pool is None:
            with ThreadPoolExecutor(max_workers=threads) as own:
                yield from self.read_blobs(blob_ids, window=window, pool=own)
            return
        pending: deque[Future[bytes]] = deque()
        for bid in blob_ids:
            if len(pending) >= window:
                yield pending.popleft().result()
            pending.append(pool.submit(self.read_blob, bid))
        while pending:
            yield pending.popleft().result()

    # -- snapshots -----------------------------------------------------------------------
    def snapshots(self, threads: int = 8) -> list[Snapshot]:
        """Every snapshot that can be read. A damaged one is left out with a warning: one bad file must
        not stop listings and new backups (which choose a parent here); gc and check still stop on it."""
        def load(snap_id: str) -> Snapshot | None:
            try:
                return load_snapshot(self.store, self.key, snap_id)
            except FileNotFoundError:           # forgotten since the listing
                return None
            except IntegrityError as exc:
                _log.warning("%s: left out (if it cannot be restored from a copy, remove it with 'backupctl "
                             "snapshot forget %s')", exc.message, snap_id[:8])
                return None

        with ThreadPoolExecutor(max_workers=threads) as pool:
            snaps = [s for s in pool.map(load, list_snapshot_ids(self.store)) if s is not None]
        return sorted(snaps, key=lambda s: (s.time, s.id))

    def find_snapshot(self, ref: str) -> Snapshot:
        if ref == "latest":
            snaps = self.snapshots()
            if not snaps:
                raise NotFoundError("the repository has no snapshots", "create one with 'backupctl snapshot create'")
            return snaps[-1]
        return load_snapshot(self.store, self.key, self.snapshot_id(ref))

    def snapshot_id(self, ref: str) -> str:
        """The full id of the snapshot ``ref`` names ("latest", an id or a unique prefix of one), read
        from the names alone but for "latest": a damaged snapshot can be named, and forgotten."""
        if ref == "latest":
            return self.find_snapshot(ref).id
        return resolve_snapshot_id(list_snapshot_ids(self.store), ref)

    def forget(self, snapshot: Snapshot | str) -> None:
        """Remove a snapshot manifest (given itself or its id); its data is reclaimed by gc."""
        self.store.delete(SNAPSHOTS_PREFIX + (snapshot if isinstance(snapshot, str) else snapshot.id))

    # -- locks ---------------------------------------------------------------------------
    def lock(self, kind: str, purpose: str) -> Lock:
        return Lock(self.store, self.key, kind, purpose).acquire()
