"""The index: which pack holds each blob, so reads need no pack scans.

Each backup writes one index file ``index/<sha256>`` for the packs it uploaded, after the
packs are durable and before its snapshot. gc, and a writer past 32 files (see gc.py), write
consolidated index files that name the files they supersede. Index files are sealed like
every other object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import zstandard

from backupctl.errors import IntegrityError, RepositoryError
from backupctl.repository.crypto import MasterKey
from backupctl.repository.pack import BlobEntry
from repo_plugins import Store

INDEX_PREFIX = "index/"
_MAGIC = b"BCIDX1\n"
_PACK = struct.Struct("<32sQI")
_ENTRY = struct.Struct("<BBIII32s")
_AAD = b"backupctl-index"
_LOAD_ATTEMPTS = 5

Packs = dict[bytes, tuple[int, list[BlobEntry]]]     # pack id -> (its size, its entries)
REPAIR_HINT = "run 'backupctl repo repair index': it lists the packs again from their own headers"


def encode_index(packs: Packs, supersedes: Iterable[str] = ()) -> bytes:
    meta = json.dumps({"supersedes": sorted(supersedes)}).encode()
    parts = [_MAGIC, struct.pack("<I", len(meta)), meta]
    for pack_id, (size, entries) in packs.items():
        parts.append(_PACK.pack(pack_id, size, len(entries)))
        parts.extend(_ENTRY.pack(e.type, e.flags, e.offset, e.length, e.raw_length, e.id) for e in entries)
    return zstandard.ZstdCompressor(level=3).compress(b"".join(parts))


def decode_index(raw: bytes, name: str, with_entries: bool = True) -> tuple[list[str], Packs]:
    """The files an index file supersedes, and its packs (none with ``with_entries=False``)."""
    try:
        data = zstandard.ZstdDecompressor().decompress(raw)
        if not data.startswith(_MAGIC):
            raise ValueError("bad magic")
        pos = len(_MAGIC)
        (mlen,) = struct.unpack_from("<I", data, pos)
        meta = json.loads(data[pos + 4:pos + 4 + mlen])
        pos += 4 + mlen
        packs: Packs = {}
        while with_entries and pos < len(data):
            pack_id, size, count = _PACK.unpack_from(data, pos)
            pos += _PACK.size
            entries = [BlobEntry(i, t, f, pack_id, o, ln, raw_len)
                       for t, f, o, ln, raw_len, i in _ENTRY.iter_unpack(data[pos:pos + count * _ENTRY.size])]
            pos += count * _ENTRY.size
            packs[pack_id] = (size, entries)
        return meta.get("supersedes", []), packs
    except (ValueError, TypeError, AttributeError, struct.error, zstandard.ZstdError) as exc:
        raise IntegrityError(f"index file {name} is malformed ({exc})", REPAIR_HINT) from None


class Index:
    """All index files merged in memory.

    ``blobs`` maps a blob id to one location, preferring packs outside ``avoid`` (packs a gc
    plan will delete), so readers never start depending on a doomed copy; ``packs`` keeps
    every pack's full entry list, duplicates included.
    """

    def __init__(self, avoid: frozenset[bytes] = frozenset()) -> None:
        self.blobs: dict[bytes, BlobEntry] = {}
        self.packs: dict[bytes, int] = {}
        self.pack_entries: dict[bytes, list[BlobEntry]] = {}
        self.file_names: set[str] = set()  # every index file read, superseded ones included
        self.superseded: set[str] = set()
        self.avoid = avoid
        # the copies of blobs stored more than once, but the one in ``blobs``: built on first need
        self._copies: dict[bytes, list[BlobEntry]] | None = None
        self._copies_lock = threading.Lock()

    def add_pack(self, size: int, entries: list[BlobEntry]) -> None:
        if not entries:
            return
        pack_id = entries[0].pack
        with self._copies_lock:             # a backup adds packs while its reads may look for copies
            self.packs[pack_id] = size
            self.pack_entries[pack_id] = entries
            for e in entries:
                old = self.blobs.get(e.id)
                if old is None or (old.pack in self.avoid and pack_id not in self.avoid):
                    self.blobs[e.id] = e
                    spare = old
                else:
                    spare = e
                if spare is not None and self._copies is not None:
                    self._copies.setdefault(e.id, []).append(spare)

    def lookup(self, blob_id: bytes) -> BlobEntry | None:
        return self.blobs.get(blob_id)

    def copies(self, blob_id: bytes) -> list[BlobEntry]:
        """Every stored copy of a blob, the one ``lookup`` gives first. Only a damaged copy or a gc
        needs the others, so the map of blobs stored more than once is built at the first call."""
        with self._copies_lock:
            if self._copies is None:
                spares: dict[bytes, list[BlobEntry]] = {}
                for entries in self.pack_entries.values():
                    for e in entries:
                        if self.blobs[e.id] is not e:
                            spares.setdefault(e.id, []).append(e)
                self._copies = spares
            first = self.blobs.get(blob_id)
            return [] if first is None else [first, *self._copies.get(blob_id, ())]

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self.blobs

    def __len__(self) -> int:
        return len(self.blobs)

    def entries_by_pack(self) -> dict[bytes, list[BlobEntry]]:
        return self.pack_entries


def index_hint(packs: Packs) -> str:
    """``packs`` as a snapshot's index hint (``Snapshot.index_hint``): the index file encoding."""
    return base64.b64encode(encode_index(packs)).decode()


def index_from_hint(hint: str) -> Index | None:
    """The blobs a snapshot's index hint names, or None without a (readable) one."""
    if not hint or not isinstance(hint, str):
        return None
    try:
        _, packs = decode_index(base64.b64decode(hint), "a snapshot's index hint")
    except (IntegrityError, binascii.Error, ValueError):
        return None                      # only a hint: the index has what it held
    index = Index()
    for size, entries in packs.values():
        index.add_pack(size, entries)
    return index


IndexFile = tuple[str, list[str], Packs | None]    # name, the files it supersedes, its packs (None: gone)


def read_index_file(store: Store, key: MasterKey, name: str, with_entries: bool = True) -> IndexFile:
    """One index file (see ``read_index_files``); IntegrityError if it is damaged."""
    try:
        raw = key.decrypt(store.get(name), _AAD, f"index file {name}")
    except FileNotFoundError:
        return name, [], None
    except IntegrityError as exc:
        raise IntegrityError(exc.message, REPAIR_HINT) from None
    sup, packs = decode_index(raw, name, with_entries=with_entries)
    return name, sup, packs


def read_index_files(store: Store, key: MasterKey, names: list[str], threads: int = 8,
                     without_entries: frozenset[str] = frozenset()) -> list[IndexFile]:
    """Each file's name, the files it supersedes, and its packs (None: the file is gone; empty for
    the files in ``without_entries``, of which only the supersedes list is decoded)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda name: read_index_file(store, key, name, name not in without_entries), names))


def load_index(store: Store, key: MasterKey, avoid: frozenset[bytes] = frozenset(), threads: int = 8) -> Index:
    """Every index file merged. A file that vanishes between the listing and its read was merged
    into a consolidated file (gc, compaction) written before it was deleted: when no file read
    names it as superseded, that file came after the listing, so the files are listed again."""
    for attempt in range(_LOAD_ATTEMPTS):
        time.sleep(0.2 * attempt)       # a listing that lags behind (a NAS's cache) catches up
        index = _load_listed(store, key, avoid, threads)
        if index is not None:
            return index
    raise RepositoryError(f"the repository's index changed {_LOAD_ATTEMPTS} times while it was read",
                          "a gc or an index compaction kept replacing it; run the command again")


def _load_listed(store: Store, key: MasterKey, avoid: frozenset[bytes], threads: int) -> Index | None:
    loaded = read_index_files(store, key, [name for name, _ in store.list(INDEX_PREFIX)], threads)
    index = Index(avoid)
    for _name, sup, _packs in loaded:
        index.superseded.update(sup)
    if any(packs is None and name not in index.superseded for name, _sup, packs in loaded):
        return None
    for name, _sup, packs in loaded:
        if packs is None:                   # gone, and a file read covers it
            continue
        index.file_names.add(name)
        if name in index.superseded:        # a consolidated index covers it; it is about to be deleted
            continue
        for size, entries in packs.values():
            index.add_pack(size, entries)
    return index


def save_index(store: Store, key: MasterKey, packs: Packs, supersedes: Iterable[str] = ()) -> str:
    sealed = key.encrypt(encode_index(packs, supersedes), _AAD)
    name = INDEX_PREFIX + hashlib.sha256(sealed).hexdigest()
    store.put(name, sealed)
    return name
