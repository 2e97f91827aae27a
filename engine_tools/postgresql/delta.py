"""Page-level incremental backups of relation files (pg_probackup's DELTA idea).

Every change to a page of a WAL-logged relation sets the page's LSN (``pd_lsn``, its first
8 bytes) to the LSN of the WAL record that made it. A page whose LSN is older than the
parent backup's *start* LSN is therefore the same as in the parent's copy, and an
incremental stores, per relation file, only:

- pages whose LSN is at or after the parent's start LSN,
- pages whose LSN is 0 (never WAL-logged: new, zeroed or unlogged) - cheap, they compress
  to nothing, and storing them keeps a truncated-then-extended file from keeping old pages,
- pages past the parent's end of file,

and the file's new size. Pages torn by a concurrent write are fixed by replaying WAL from
the incremental's own start, as for a full backup. Files that are not main forks of
relations (visibility maps, free space maps, init forks, pg_xact, config) are stored whole,
deduplicated as usual; a relation file that the parent did not have is stored whole too, and
one unchanged since the parent (size, times, inode) whose parent copy is whole is that copy.

Stream format (``pg-page-delta-v1``): ``MAGIC, page size (u32), 0 (u32)``, then records
``page number (u32) + page``, then ``0xFFFFFFFF (u32) + file size (u64)``.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Generator, Iterator

from backupctl.errors import IntegrityError
from backupctl.repository.backup import unmodified
from backupctl.repository.tree import Node

ENCODING = "pg-page-delta-v1"
PAGE = 8192
MAGIC = b"BCPGDLT1"
_HEADER = struct.Struct("<8sII")
_RECORD = struct.Struct("<I")
_TRAILER = struct.Struct("<IQ")
_END = 0xFFFFFFFF
_READ = 128 * PAGE               # 1 MiB per read
# Main forks of relations, segments included (base/<db>/<relfilenode>[.<n>], global/<relfilenode>[.<n>]).
_RELATION = re.compile(r"^(base/\d+|global)/\d+(\.\d+)?$")


def is_relation_file(path: str) -> bool:
    return _RELATION.match(path) is not None


# Relation files are cut into chunks of this many pages at fixed offsets, not by content: their
# pages change in place, so a chunk keeps its offset, and nothing is scanned for cut points (a
# full backup then costs a hash, not a scan and a hash, per byte; pgBackRest's block incremental
# cuts fixed blocks too). About the mean size of a content-defined chunk.
CHUNK_PAGES = 128


def fixed_chunk_size(path: str) -> int | None:
    """The repository's ``fixed_chunks`` hook: relation files by pages, the rest by content."""
    return CHUNK_PAGES * PAGE if is_relation_file(path) else None


class PageDelta:
    """The delta of one relation file as a stream the repository reads with ``readinto``."""

    encoding = ENCODING

    def __init__(self, path: str, since_lsn: int, parent_size: int, unchanged: bool) -> None:
        self.path = path
        self.since_lsn = since_lsn
        self.parent_pages = (parent_size + PAGE - 1) // PAGE
        self.logical_size = parent_size if unchanged else 0
        self.pages_stored = 0
        self._out = bytearray(_HEADER.pack(MAGIC, PAGE, 0))
        self._pos = 0
        self._gen = self._trailer() if unchanged else self._records()

    def _trailer(self) -> Iterator[bytes]:
        yield _TRAILER.pack(_END, self.logical_size)

    def _records(self) -> Iterator[bytes]:
        buf = bytearray(_READ)
        view = memoryview(buf)
        page_no = 0
        with open(self.path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                self.logical_size += n
                if n % PAGE:  # a page being written as we read; WAL replay rewrites it
                    view[n:n + PAGE - n % PAGE] = bytes(PAGE - n % PAGE)
                words = view[:(n + PAGE - 1) // PAGE * PAGE].cast("I")
                for i in range((n + PAGE - 1) // PAGE):
                    w = i * (PAGE // 4)
                    lsn = (words[w] << 32) | words[w + 1]
                    if lsn >= self.since_lsn or lsn == 0 or page_no >= self.parent_pages:
                        self.pages_stored += 1
                        yield _RECORD.pack(page_no) + view[i * PAGE:(i + 1) * PAGE].tobytes()
                    page_no += 1
                words.release()
        yield from self._trailer()

    def readinto(self, target: memoryview) -> int:
        filled = 0
        while filled < len(target):
            if self._pos >= len(self._out):
                nxt = next(self._gen, None)
                if nxt is None:
                    break
                self._out, self._pos = nxt, 0
            n = min(len(target) - filled, len(self._out) - self._pos)
            target[filled:filled + n] = self._out[self._pos:self._pos + n]
            filled += n
            self._pos += n
        return filled


def content_hook(since_lsn: int, settled_before: int | None = None):
    """The repository content hook of an incremental whose parent started at ``since_lsn``; files
    last modified at ``settled_before`` (ns) or later count as changed (see ``unmodified``)."""

    def hook(node: Node, abspath: str, old: Node | None) -> PageDelta | None:
        if old is None or not is_relation_file(node.path):
            return None                    # new since the parent, or not a relation: stored whole
        parent_size = old.logical_size if old.encoding == ENCODING else old.size
        if old.encoding not in (None, ENCODING):
            return None
        unchanged = unmodified(node, old, parent_size, settled_before)
        if unchanged and old.encoding is None:
            # the parent's chunks, as for any unchanged file: a restore then writes it as a whole
            # file instead of laying an empty delta over its base (most files of an incremental)
            return None
        return PageDelta(abspath, since_lsn, parent_size, unchanged)

    return hook


class _Parser:
    """Reads the stream format from buffers handed over in order (records may straddle them)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.header_done = False
        self.last_page = -1
        self.size: int | None = None          # set by the trailer

    def records(self, buf: bytes, pos: int) -> tuple[list[tuple[int, memoryview]], int]:
        """The complete records of ``buf`` from ``pos`` as (offset, page), and where the first
        incomplete one starts (or the end of the trailer). Page numbers are read in one pass (a
        restore lays tens of thousands of pages: no Python step per field)."""
        n = len(buf)
        if not self.header_done:
            if n - pos < _HEADER.size:
                return [], pos
            magic, page_size, _ = _HEADER.unpack_from(buf, pos)
            if magic != MAGIC or page_size != PAGE:
                raise IntegrityError(f"{self.node.path}: not a page delta", "the backup is damaged")
            self.header_done, pos = True, pos + _HEADER.size
        step = _RECORD.size + PAGE
        view = memoryview(buf)
        whole = (n - pos) // step
        numbers = [no for (no,) in struct.iter_unpack(f"<I{PAGE}x", view[pos:pos + whole * step])]
        if _END in numbers:
            whole = numbers.index(_END)
            del numbers[whole:]
        if numbers and (numbers[0] <= self.last_page or any(a >= b for a, b in zip(numbers, numbers[1:]))):
            raise IntegrityError(f"{self.node.path}: the page delta is out of order", "the backup is damaged")
        if numbers:
            self.last_page = numbers[-1]
        pages = [(no * PAGE, view[at:at + PAGE]) for no, at in zip(numbers, range(pos + _RECORD.size, n, step))]
        pos += whole * step
        if n - pos >= _TRAILER.size and _RECORD.unpack_from(buf, pos)[0] == _END:
            self.size = _TRAILER.unpack_from(buf, pos)[1]
            pos += _TRAILER.size
        return pages, pos


def patches(node: Node, blobs: Iterator[bytes]) -> Generator[list[tuple[int, memoryview]], None, int]:
    """A delta's pages as lists of (offset, page), in ascending order across lists (about one list
    a blob); returns the file's size after them.

    Blobs are parsed in place; only a record cut by a blob boundary is copied (with the head of
    the next blob), so a page is copied once, by whoever writes it."""
    if node.encoding != ENCODING:
        raise IntegrityError(f"{node.path}: unknown encoding {node.encoding!r}", "upgrade backupctl")
    parser = _Parser(node)
    longest = _HEADER.size + _RECORD.size + PAGE       # no header, record or trailer is longer
    rest = b""
    for blob in blobs:
        start = 0
        if rest:
            head = rest + blob[:longest]
            pages, pos = parser.records(head, 0)
            if pages:
                yield pages
            if parser.size is not None:
                return parser.size
            if len(blob) <= longest:                   # the head holds all of this blob
                rest = head[pos:]
                continue
            start = pos - len(rest)                    # the cut record ended inside this blob
        pages, pos = parser.records(blob, start)
        if pages:
            yield pages
        if parser.size is not None:
            return parser.size
        rest = blob[pos:]
    raise IntegrityError(f"{node.path}: the page delta is truncated", "the backup is damaged")
