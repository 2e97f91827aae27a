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
    """A file's chunks in its parent snapshot, in order, and where each chunk id occurs."""

    def __init__(self, chunks: list[tuple[int, bytes]], blob_id: Callable[[memoryview], bytes]) -> None:
        self.blob_id = blob_id
        self.chunks = chunks
        self.taken = 0                  # chunks taken without a scan
        self._index = {chunk_id: i for i, (_, chunk_id) in reversed(list(enumerate(chunks)))}

    def after(self, chunk_id: bytes) -> int | None:
        """The index of the parent's chunk that followed one with this id (None: not a parent's)."""
        i = self._index.get(chunk_id)
        return None if i is None else i + 1


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
        self.max_size = config.chunk_max
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

    def chunks(self, readinto: Callable[[memoryview], int], guide: Guide | None = None, fixed: int | None = None
               ) -> Iterator[tuple[memoryview, Callable[[], None], bytes | None]]:
        """Yield (chunk, release, id or None); call ``release`` once the chunk's bytes are no longer needed.

        ``fixed``: cut every ``fixed`` bytes instead (files of fixed-size pages, changed in place: a
        page's chunk stays at its offset, and no byte is scanned); no guide is needed then.

        ``guide``: the chunks of this file in the parent snapshot. Where the file goes on with the
        parent's next chunks, they are taken by their keyed hash, without a scan for cuts, and come
        with their ids. FastCDC decides a cut from the chunk's own bytes and the one byte after it,
        so a parent's chunk is taken once the chunk after it matches too (or it ends at the end of
        the file, or at the maximum size: no byte after it counts). Changed stretches are scanned
        until a scanned chunk is one of the parent's again (by id: an insertion or deletion shifts
        the rest, which is then found too). A changed file then costs about one hash per chunk
        instead of a scan of every byte, and gives exactly the cuts a scan gives.
        """
        if fixed is not None:
            if not 0 < fixed <= self.max_size:        # a chunk must fit the front of a buffer when carried
                raise ValueError(f"fixed chunks of {fixed} bytes: at most chunk_max ({self.max_size})")
            guide = None
        blocks: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()
        reader = threading.Thread(target=self._read_ahead, args=(readinto, blocks, stop), daemon=True)
        reader.start()
        prev: _Buffer | None = None
        tail = (0, 0)  # (start, end) in prev of the unfinished chunk
        expected = 0 if guide is not None and guide.chunks else None   # the parent's chunk that may come next
        confirmed = None                                                # a parent's chunk already found here
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
                    if expected is not None:
                        length, blob_id = guide.chunks[expected]
                        last = expected == len(guide.chunks) - 1
                        if not eof and (at + length > end or (last and at + length == end)):
                            break                # the rest (or whether the file ends here) comes with the next buffer
                        taken, next_found = self._takes(guide, expected, confirmed, buf.view, at, end, eof)
                        if next_found is None and end - at <= self.front:
                            confirmed = expected             # it matched; the chunk after it is not all here
                            break                            # yet: carry both to the next buffer
                        if taken:
                            confirmed = expected + 1 if next_found else None
                            guide.taken += 1
                            buf.ref()
                            yield buf.view[at:at + length], buf.unref, blob_id
                            at += length
                            expected = None if last else expected + 1
                            continue
                        expected = confirmed = None
                    cuts = iter(self._cut(buf.view[at:end], fixed))  # cut as far as needed only
                    c = next(cuts)
                    while c is not None:
                        following = next(cuts, None)
                        if following is None and not eof and c.length != fixed:
                            break                                   # the last may go on in the next buffer
                        chunk = buf.view[at:at + c.length]
                        chunk_id = guide.blob_id(chunk) if guide is not None else None
                        buf.ref()
                        yield chunk, buf.unref, chunk_id
                        at += c.length
                        if chunk_id is not None and (expected := guide.after(chunk_id)) is not None \
                                and expected < len(guide.chunks):
                            break                                   # one of the parent's: follow them again
                        expected = None
                        c = following
                    if expected is None:
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

    def _takes(self, guide: Guide, k: int, confirmed: int | None, view: memoryview, at: int, end: int,
               eof: bool) -> tuple[bool, bool | None]:
        """Whether the parent's chunk ``k`` is where a scan from ``at`` would cut (see chunks()), and
        whether the chunk after it was found too (None: it matched, but the chunk after it goes on
        past ``end``, so the answer needs the next buffer)."""
        length, blob_id = guide.chunks[k]
        if at + length > end or (confirmed != k and guide.blob_id(view[at:at + length]) != blob_id):
            return False, False
        if k == len(guide.chunks) - 1:                 # cut by the end of the file
            return eof and at + length == end, False
        if length == self.max_size:                    # cut by the size limit
            return True, False
        nxt = at + length                              # the byte after it counts: the next chunk must match
        next_length, next_id = guide.chunks[k + 1]
        if nxt + next_length > end:
            return False, (False if eof else None)
        found = guide.blob_id(view[nxt:nxt + next_length]) == next_id
        return found, found

    def chunk_bytes(self, data: bytes | memoryview, fixed: int | None = None) -> Iterator[memoryview]:
        """Cut an in-memory buffer (small files, tree streams)."""
        view = memoryview(data)
        for c in self._cut(view, fixed):
            yield view[c.offset:c.offset + c.length]

    def _cut(self, view: memoryview, fixed: int | None) -> Iterator:
        if fixed is None:
            return self.cdc.cut_buf(view)
        return (_Piece(offset, min(fixed, len(view) - offset)) for offset in range(0, len(view), fixed))


class _Piece:
    """A fixed-size cut, shaped as FastCDC's."""

    __slots__ = ("offset", "length")

    def __init__(self, offset: int, length: int) -> None:
        self.offset, self.length = offset, length
