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

    def chunks(self, readinto: Callable[[memoryview], int]) -> Iterator[tuple[memoryview, Callable[[], None]]]:
        """Yield (chunk, release) pairs; call ``release`` once the chunk's bytes are no longer needed."""
        blocks: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        reader = threading.Thread(target=self._read_ahead, args=(readinto, blocks, stop), daemon=True)
        reader.start()
        prev: _Buffer | None = None
        tail = (0, 0)  # (start, end) in prev of the unfinished chunk
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
                cuts = [(start + c.offset, c.length) for c in self.cdc.cut_buf(buf.view[start:end])]
                complete = cuts if eof else cuts[:-1]
                for offset, length in complete:
                    buf.ref()
                    yield buf.view[offset:offset + length], buf.unref
                if eof:
                    buf.unref()
                    return
                prev, tail = buf, (cuts[-1][0], end)
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
