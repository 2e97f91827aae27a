"""The write pipeline: hash, deduplicate, compress, seal and pack blobs on a thread pool.

The chunker, BLAKE3, zstd and AES-GCM all release the GIL, so two worker threads keep two
cores busy. Memory stays bounded and mostly reused: at most ``max_in_flight`` chunks wait
for workers, and pack buffers come from a fixed pool (one filling, ``max_uploads`` being
uploaded), so a backup's footprint does not grow with the data.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from backupctl.repository.index import Index, Packs, save_index
from backupctl.repository.lock import Lock
from backupctl.repository.pack import COMPRESSED, PackWriter, pack_buffer_size, pack_name

# Store a chunk raw unless compression saves at least this fraction.
_MIN_SAVING = 0.03
# Write an index file every so many new blobs, so memory does not grow with the size of a backup.
INDEX_EVERY_BLOBS = 50_000


@dataclass
class SaveStats:
    blobs_new: int = 0
    blobs_reused: int = 0
    bytes_added: int = 0         # bytes written to the repository's packs, headers included
    packs: int = 0


class PackBuffers:
    """A fixed set of reusable pack buffers; taking one waits while all are being uploaded."""

    def __init__(self, count: int, size: int) -> None:
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._size, self._made, self._count = size, 0, count
        self._lock = threading.Lock()

    def get(self) -> bytearray:
        with self._lock:
            if self._free.empty() and self._made < self._count:
                self._made += 1
                return bytearray(self._size)
        return self._free.get()

    def put(self, buf: bytearray) -> None:
        self._free.put(buf)


class BlobSaver:
    def __init__(self, repo, known: Index, lock: Lock, workers: int = 2, compression: int | None = None,
                 max_in_flight: int = 8, max_uploads: int = 2, exclude: frozenset[bytes] = frozenset()) -> None:
        self.repo = repo
        self.key = repo.key
        self.known = known               # blobs stored already: reused, not stored again
        self.exclude = exclude           # blobs a gc plan will delete: never reuse them
        self.lock = lock                 # the writer's: checked around each index file
        self.level = repo.config.compression if compression is None else compression
        self.pack_size = repo.config.pack_size
        self.stats = SaveStats()
        self.new_packs: Packs = {}
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._buffers = PackBuffers(max_uploads + 1, pack_buffer_size(self.pack_size, repo.config.chunk_max))
        self._writer: PackWriter | None = None
        self._local = threading.local()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blob")
        self._uploader = ThreadPoolExecutor(max_workers=max_uploads, thread_name_prefix="upload")
        self._uploads: list[Future] = []

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "zc", None)
        if c is None:
            c = self._local.zc = zstandard.ZstdCompressor(level=self.level)
        return c

    def submit(self, data: bytes | memoryview, blob_type: int, done: Callable[[], None] | None = None,
               blob_id: bytes | None = None) -> Future:
        """Queue one chunk; the future yields its id. ``done`` runs once the data is no longer needed.
        ``blob_id``: the chunk's id when the caller has just computed it."""
        self._slots.acquire()
        future = self._workers.submit(self._save, data, blob_type, blob_id)

        def release(_f: Future) -> None:
            self._slots.release()
            if done is not None:
                done()

        future.add_done_callback(release)
        return future

    def _save(self, data: bytes | memoryview, blob_type: int, blob_id: bytes | None = None) -> bytes:
        if blob_id is None:
            blob_id = self.key.blob_id(data)
        with self._lock:
            if (blob_id in self.known and blob_id not in self.exclude) or blob_id in self._pending:
                self.stats.blobs_reused += 1
                return blob_id
            self._pending.add(blob_id)
        raw_length = len(data)
        flags, payload = 0, data
        if self.level > 0 and raw_length > 0:
            compressed = self._compressor().compress(data)
            if len(compressed) <= raw_length * (1 - _MIN_SAVING):
                flags, payload = COMPRESSED, compressed
        full = None
        with self._lock:  # sealing in place is fast (AES-GCM ~6 GB/s); holding the lock keeps offsets simple
            if self._writer is None:
                self._writer = PackWriter(self._buffers.get())
            self._writer.seal(self.key, blob_id, blob_type, flags, payload, raw_length)
            self.stats.blobs_new += 1
            if self._writer.size >= self.pack_size:
                full, self._writer = self._writer, None
        if full is not None:
            self._queue_upload(full)
        return blob_id

    def _queue_upload(self, writer: PackWriter) -> None:
        future = self._uploader.submit(self._upload, writer)
        with self._lock:
            self._uploads.append(future)

    def _upload(self, writer: PackWriter) -> None:
        pack_id, data, entries = writer.finish(self.key)
        size = len(data)
        try:
            self.repo.store.put(pack_name(pack_id), data)
        finally:
            data.release()
            self._buffers.put(writer.release())
        with self._lock:
            self.new_packs[pack_id] = (size, entries)
            self.stats.packs += 1
            self.stats.bytes_added += size
            unindexed = sum(len(e) for _s, e in self.new_packs.values())
        if unindexed >= INDEX_EVERY_BLOBS:
            self.commit_index()

    def flush(self) -> None:
        """Wait for every chunk, upload the partial pack, and surface any worker error."""
        self._workers.shutdown(wait=True)
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None and writer.count:
            self._queue_upload(writer)
        self._uploader.shutdown(wait=True)
        for future in self._uploads:
            future.result()

    def abort(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._uploader.shutdown(wait=True, cancel_futures=True)

    def commit_index(self) -> str | None:
        """Index the packs uploaded so far (they are durable), then forget them here.

        An index file without a snapshot is harmless: a killed backup's indexed blobs are
        simply unused, and gc collects them.
        """
        with self._lock:
            packs, self.new_packs = self.new_packs, {}
        if not packs:
            return None
        # On a lock that may have looked stale, a gc may have taken these packs for orphans: no index
        # names them then, not even one whose write landed late (no snapshot will use them).
        self.lock.check_still_held()
        name = save_index(self.repo.store, self.key, packs)
        self.lock.confirm_written(name)
        with self._lock:
            self.known.file_names.add(name)     # read, in effect: a reload finds nothing new in it
            for size, entries in packs.values():
                self.known.add_pack(size, entries)
                self._pending.difference_update(e.id for e in entries)
        return name
