"""Content-defined chunking of streams (FastCDC 2020, seeded per repository).

Data is read into a small pool of reused buffers (fresh memory is slow to touch) and
cut in place; chunks are memoryviews into those buffers, handed to the workers without
copying. The bytes after the last cut of a buffer may belong to a longer chunk, so they
move to the front of the next buffer: the cut points are the same as for one long read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pyfastcdc

from backupctl.repository.config import RepoConfig

BUFFER_SIZE = 12 * 1024 * 1024
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
    def __init__(self, size: int = BUFFER_SIZE, count: int = BUFFERS) -> None:
        self.size = size
        self._free = [_Buffer(self, size) for _ in range(count)]
        self._cond = threading.Condition()

    def get(self) -> _Buffer:
        with self._cond:
            while not self._free:
                self._cond.wait()
            buf = self._free.pop()
        buf.ref()  # the reader's own reference
        return buf

    def put(self, buf: _Buffer) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify()


class Chunker:
    def __init__(self, config: RepoConfig, seed: int, pool: BufferPool | None = None) -> None:
        self.cdc = pyfastcdc.FastCDC(config.chunk_avg, min_size=config.chunk_min, max_size=config.chunk_max, seed=seed)
        self.pool = pool or BufferPool()
        assert self.pool.size >= 2 * config.chunk_max

    def chunks(self, readinto: Callable[[memoryview], int]) -> Iterator[tuple[memoryview, Callable[[], None]]]:
        """Yield (chunk, release) pairs; call ``release`` once the chunk's bytes are no longer needed."""
        buf = self.pool.get()
        filled, eof = 0, False
        try:
            while True:
                while filled < self.pool.size and not eof:
                    n = readinto(buf.view[filled:])
                    if not n:
                        eof = True
                    else:
                        filled += n
                if filled == 0:
                    return
                cuts = [(c.offset, c.length) for c in self.cdc.cut_buf(buf.view[:filled])]
                complete = cuts if eof else cuts[:-1]
                for offset, length in complete:
                    buf.ref()
                    yield buf.view[offset:offset + length], buf.unref
                if eof:
                    return
                tail_start = cuts[-1][0]
                nxt = self.pool.get()
                filled -= tail_start
                nxt.view[:filled] = buf.view[tail_start:tail_start + filled]
                buf.unref()
                buf = nxt
        finally:
            buf.unref()

    def chunk_bytes(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """Cut an in-memory buffer (small files, tree streams)."""
        view = memoryview(data)
        for c in self.cdc.cut_buf(view):
            yield view[c.offset:c.offset + c.length]
