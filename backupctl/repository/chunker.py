"""Content-defined chunking of streams (FastCDC 2020, seeded per repository).

Data is read into a small pool of reused buffers (fresh memory is slow to touch) and
cut in place; chunks are memoryviews into those buffers, handed to the workers without
copying. The bytes after the last cut of a buffer may belong to a longer chunk, so they
move to the front of the next buffer: the cut points are the same as for one long read.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import pyfastcdc

from backupctl.repository.config import RepoConfig

BUFFER_SIZE = 8 * 1024 * 1024
BUFFERS = 4


class _Buffer:
    def __init__(self, pool: "BufferPool", size: int) -> None:
        self.pool = pool
        self.data = bytearray(size)
        self.view = memoryview(self.data)
        self._refs = 0
        self._lock = threading.Lock()

    def ref(self) -> None:
        with self._lock:
            self._refs += 1

    def unref(self) -> None:
        with self._lock:
            self._refs -= 1
            free = self._refs == 0
        if free:
            self.pool.put(self)


class BufferPool:
    """At most ``count`` buffers, made when first needed (a backup of small files or of one WAL
    segment never touches most of them) and then reused."""

    def __init__(self, size: int, count: int = BUFFERS) -> None:
        self.size = size
        self._free: list[_Buffer] = []
        self._unmade = count
        self._cond = threading.Condition()

    def get(self) -> _Buffer:
        with self._cond:
            while not self._free and not self._unmade:
                self._cond.wait()
            if self._free:
                buf = self._free.pop()
            else:
                self._unmade -= 1
                buf = _Buffer(self, self.size)
        buf.ref()  # the reader's own reference
        return buf

    def put(self, buf: _Buffer) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify()


class Guide:
    """A file's chunks in its parent snapshot, by the offset each starts at."""

    def __init__(self, chunks: list[tuple[int, bytes]], blob_id: Callable[[memoryview], bytes]) -> None:
        self.blob_id = blob_id
        self._starts: dict[int, tuple[int, bytes, bool]] = {}
        offset = 0
        for i, (length, chunk_id) in enumerate(chunks):
            self._starts[offset] = (length, chunk_id, i == len(chunks) - 1)
            offset += length

    def at(self, offset: int) -> tuple[int, bytes, bool] | None:
        """(length, id, is the file's last chunk) of the parent's chunk starting at ``offset``."""
        return self._starts.get(offset)


class Chunker:
    """Reads ahead on a thread while the caller's thread cuts: both release the GIL, so a large
    file costs max(read, cut) rather than their sum.

    Each buffer keeps ``chunk_max`` bytes free at its front. The bytes after the last cut of
    one buffer (at most one unfinished chunk) are copied into the free front of the next,
    right before the data the reader put there, so cut points match one long read.
    """

    def __init__(self, config: RepoConfig, seed: int, pool: BufferPool | None = None) -> None:
        self.cdc = pyfastcdc.FastCDC(config.chunk_avg, min_size=config.chunk_min, max_size=config.chunk_max, seed=seed)
        self.front = config.chunk_max
        self.pool = pool or BufferPool(self.front + BUFFER_SIZE)
        assert self.pool.size >= 2 * self.front

    def _read_ahead(self, readinto: Callable[[memoryview], int], out: queue.Queue, stop: threading.Event) -> None:
        try:
            eof = False
            while not eof and not stop.is_set():
                buf = self.pool.get()
                filled, room = 0, self.pool.size - self.front
                while filled < room:
                    n = readinto(buf.view[self.front + filled:])
                    if not n:
                        eof = True
                        break
                    filled += n
                out.put((buf, filled, eof))
        except BaseException as exc:  # handed to the cutting thread
            out.put(exc)

    def chunks(self, readinto: Callable[[memoryview], int], guide: Guide | None = None
               ) -> Iterator[tuple[memoryview, Callable[[], None], bytes | None]]:
        """Yield (chunk, release, id or None); call ``release`` once the chunk's bytes are no longer needed.

        ``guide``: the chunks of this file in the parent snapshot. Where the file still holds one of
        them at the same offset (its keyed hash matches), it is taken without scanning for a cut and
        comes with its id: FastCDC cuts a chunk from its own bytes only, so scanning would cut there
        too. Only changed stretches are scanned, until a cut lands on one of the parent's again. A
        file changed in place then costs one hash of each chunk instead of a scan of every byte.
        """
        blocks: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        reader = threading.Thread(target=self._read_ahead, args=(readinto, blocks, stop), daemon=True)
        reader.start()
        prev: _Buffer | None = None
        tail = (0, 0)  # (start, end) in prev of the unfinished chunk
        pos = 0        # the file offset of the unfinished chunk
        try:
            while True:
                item = blocks.get()
                if isinstance(item, BaseException):
                    raise item
                buf, filled, eof = item
                carried = tail[1] - tail[0]
                start = self.front - carried
                if carried:
                    buf.view[start:self.front] = prev.view[tail[0]:tail[1]]
                if prev is not None:
                    prev.unref()
                    prev = None
                end = self.front + filled
                if end == start:
                    buf.unref()
                    return
                at = start
                while at < end:
                    known = guide.at(pos) if guide is not None else None
                    if known is not None:
                        length, blob_id, last = known
                        if at + length > end and not eof:
                            break                                   # the rest comes with the next buffer
                        # the parent's last chunk was cut by the end of the file: valid at the end only
                        if at + length <= end and (not last or (eof and at + length == end)) \
                                and guide.blob_id(buf.view[at:at + length]) == blob_id:
                            buf.ref()
                            yield buf.view[at:at + length], buf.unref, blob_id
                            at, pos = at + length, pos + length
                            continue
                    cuts = iter(self.cdc.cut_buf(buf.view[at:end]))   # cut as far as needed only
                    c, back_on_guide = next(cuts), False
                    while c is not None:
                        following = next(cuts, None)
                        if following is None and not eof:
                            break                                   # the last may go on in the next buffer
                        buf.ref()
                        yield buf.view[at:at + c.length], buf.unref, None
                        at, pos = at + c.length, pos + c.length
                        if guide is not None and guide.at(pos) is not None:
                            back_on_guide = True                    # a cut of the parent's again
                            break
                        c = following
                    if not back_on_guide:
                        break
                if eof:
                    buf.unref()
                    return
                prev, tail = buf, (at, end)
        finally:
            stop.set()
            if prev is not None:
                prev.unref()
            while reader.is_alive() or not blocks.empty():  # let the reader finish and return its buffers
                try:
                    item = blocks.get(timeout=0.1)
                except queue.Empty:
                    continue
                if not isinstance(item, BaseException):
                    item[0].unref()
            reader.join()

    def chunk_bytes(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """Cut an in-memory buffer (small files, tree streams)."""
        view = memoryview(data)
        for c in self.cdc.cut_buf(view):
            yield view[c.offset:c.offset + c.length]
