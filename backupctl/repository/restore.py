"""Restoring snapshots to a directory or a stream.

Every blob is verified against its keyed id on the way out, so a restore either returns
exactly the bytes that were backed up or stops with an IntegrityError. Blobs are fetched
ahead on a thread pool across file boundaries, so many small files restore as fast as a
few large ones. Files are assembled in aligned windows and each window written once, large
files with O_DIRECT (no copy into the page cache), and the target synced at the end; an incremental
chain's changes are laid over each window in memory, so no byte is written twice. All-zero
chunks become holes: sparse files stay sparse. Directories, files and links are created by
one thread of their own, ahead of the writing.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from backupctl.durable import sync_tree
from backupctl.errors import IntegrityError, NotFoundError, UsageError
from backupctl.progress import Progress
from backupctl.repository.index import index_from_hint
from backupctl.repository.repo import Repository
from backupctl.repository.snapshot import Snapshot
from backupctl.repository.tree import DIR, FILE, STREAM, SYMLINK, Node, walk_tree

_ZEROS = bytes(8 * 1024 * 1024)
_ZERO_VIEW = memoryview(_ZEROS)


@dataclass
class RestoreSummary:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    duration: float = 0.0

    def to_dict(self) -> dict:
        return {"files": self.files, "dirs": self.dirs, "bytes_restored": self.bytes, "duration": round(self.duration, 3),
                "throughput": round(self.bytes / self.duration) if self.duration > 0 else 0}


def _safe_join(root: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(root, rel))
    if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):
        raise IntegrityError(f"tree entry {rel!r} points outside the restore target", "the snapshot is damaged")
    return path


def _check_target(target: str, overwrite: bool) -> tuple[str, bool]:
    """The target's absolute path, created if missing, and whether it was empty."""
    target = os.path.abspath(target)
    empty = True
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise UsageError(f"restore target {target} exists and is not a directory", "choose a new or empty directory")
        empty = not os.listdir(target)
        if not empty and not overwrite:
            raise UsageError(f"restore target {target} is not empty",
                             "choose a new or empty directory, or pass --overwrite to replace files in it")
    os.makedirs(target, exist_ok=True)
    return target, empty


class _Creator:
    """Walks the snapshot on a thread of its own and creates its directories, files (empty) and
    symlinks ahead of the writer, handing each entry on once it exists. Creating files cannot run
    in parallel (the kernel locks their directory) and can be slow (ext4 without a journal scans
    past every recently deleted inode for each new one: up to a millisecond a file); done ahead,
    it overlaps the data of the files before instead of holding up the feeding of the next."""

    AHEAD = 4096                  # entries created and not yet taken: bounds the memory they hold
    # In a target that had files (--overwrite), each created file replaces one: no more of them
    # than the writer is about to fill, so that a failed restore leaves the rest as they were.
    AHEAD_OVER_FILES = 8

    def __init__(self, target: str, empty: bool, nodes: Iterable[Node], renamed: dict[str, str] | None = None) -> None:
        self.target, self.empty, self.nodes = target, empty, nodes
        self.renamed = renamed or {}
        self.made = {target}                          # directories known to exist: no stat per file
        self._queue: queue.Queue = queue.Queue(self.AHEAD if empty else self.AHEAD_OVER_FILES)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-create", daemon=True)

    def __enter__(self) -> _Creator:
        self._thread.start()
        return self

    def __exit__(self, failed: type | None, *exc) -> None:
        self._stop.set()
        # A failed or interrupted restore does not wait on a read the walk is stuck in (the thread
        # stops at its next step); one that ends well finds it done.
        give_up = time.monotonic() + (1.0 if failed else float("inf"))
        while self._thread.is_alive() and time.monotonic() < give_up:
            try:
                self._queue.get(timeout=0.1)          # unblock a put into a full queue
            except queue.Empty:
                pass

    def __iter__(self) -> Iterator[tuple[str, Node]]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        try:
            for node in self.nodes:
                if self._stop.is_set():               # the restore ended: touch nothing more
                    return
                path = _safe_join(self.target, self.renamed.get(node.path, node.path))
                self._create(path, node)
                if not self._put((path, node)):
                    return
        except BaseException as exc:
            self._put(exc)
        else:
            self._put(None)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _create(self, path: str, node: Node) -> None:
        if node.type == DIR:
            self._make_dir(path)
            return
        if node.type not in (FILE, STREAM, SYMLINK) and node.encoding is None:
            return
        if path == self.target:
            raise IntegrityError(f"the snapshot has a {node.type} entry at the root of the tree (path {node.path!r})",
                                 "the snapshot is damaged; restore from another one")
        self._make_dir(os.path.dirname(path))
        if not self.empty and os.path.lexists(path):   # an overwritten target's file, link or directory
            os.unlink(path)
        if node.type == SYMLINK:
            os.symlink(node.target, path)
            _set_meta(path, node, symlink=True)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    def _make_dir(self, path: str) -> None:
        """Make a directory and those above it, refusing to go through a symbolic link: one the
        snapshot made at a directory's path (a damaged tree), or one in an overwritten target."""
        if path in self.made:
            return
        self._make_dir(os.path.dirname(path))
        try:
            os.mkdir(path)
        except OSError:                               # EEXIST, or another error for one that exists (NFS)
            if not os.path.lexists(path):
                raise
            if os.path.islink(path) or not os.path.isdir(path):
                if self.empty:                        # the snapshot put it there itself
                    raise IntegrityError(f"the snapshot has entries under {path}, which it restores as a link or "
                                         "a file; a restore does not write through links",
                                         "the snapshot is damaged; restore from another one") from None
                raise UsageError(f"{path} in the target is a link or a file where the snapshot has a directory; "
                                 "a restore does not write through links",
                                 "remove it from the target, or restore into a new directory") from None
        self.made.add(path)


def _wanted(node: Node, include: list[str] | None) -> bool:
    if not include:
        return True
    return any(node.path == p or node.path.startswith(p.rstrip("/") + "/") for p in include)


# (entry, its path in the target, its stored bytes in order) -> writes the decoded file
Decoder = Callable[[Node, str, Iterator[bytes]], None]
# An entry in an engine's encoding -> what it is applied on top of, oldest first: an entry stored
# whole, then the encoded entries between (an incremental backup's chain). None: on the file
# already in the target.
Layers = Callable[[Node], "list[Node] | None"]
# An encoded entry's stored bytes -> its changes as lists of (offset, bytes), in ascending offset
# across lists (a list per stored blob, say: fewer steps than one per change); the generator
# returns the file's size after them.
Patches = Callable[[Node, Iterator[bytes]], Generator[list[tuple[int, memoryview]], None, int]]


def restore_snapshot(repo: Repository, snapshot: Snapshot, target: str, *, include: list[str] | None = None,
                     overwrite: bool = False, progress: Progress | None = None,
                     decode: Decoder | None = None, layers: Layers | None = None,
                     patches: Patches | None = None, renamed: dict[str, str] | None = None,
                     sync: bool = True) -> RestoreSummary:
    """Restore a snapshot's tree into ``target``. Entries an engine stored in its own encoding are
    handed to ``decode`` (the engine's); without one, such a snapshot is refused. With ``layers``
    and ``patches``, such an entry is assembled from its base (decoded in parallel, as any file)
    and every layer's patches laid over it in memory, so a chain of backups restores in one pass
    over the newest tree and each byte is written once. Entries in ``renamed`` (snapshot path ->
    path in the target) are written under another name. With ``sync`` (the default), the target is
    durable on return (``backupctl.durable``); a caller with more to write syncs it itself."""
    progress = progress or Progress()
    progress.add_total(int(snapshot.summary.get("bytes_total", 0)), int(snapshot.summary.get("files_new", 0)))
    progress.total_complete()
    started = time.monotonic()
    summary = RestoreSummary()
    target, empty = _check_target(target, overwrite)
    with repo.lock("shared", "restore"):
        repo.reload_index()
        node_iter: Iterable[Node] = (n for n in walk_tree(repo, snapshot.tree) if _wanted(n, include))
        if decode is not None or patches is not None:
            # Engine-encoded entries first, the largest first: their layers are read in order, so
            # they are the long pole; starting them at once overlaps them with the rest. The rest
            # keep the tree's order (a stable sort).
            node_iter = sorted(node_iter, key=lambda n: -n.logical_size if n.encoding is not None else 1)
        dirs: list[tuple[str, Node]] = []
        with _FileWriter(repo, progress, patches) as writer, _Creator(target, empty, node_iter, renamed) as created:
            for path, node in created:
                if node.type == DIR:
                    dirs.append((path, node))
                elif node.encoding is not None:
                    below = layers(node) if layers is not None and patches is not None else None
                    if below:
                        writer.add(path, below[0], [*below[1:], node])
                    elif decode is None:
                        raise UsageError(f"snapshot {snapshot.short_id} stores {node.path} in the {node.encoding} "
                                         "encoding of an engine",
                                         "restore this backup with 'backupctl restore create --backup NAME'")
                    else:
                        # Decoders already run several at once on the writer's pool: each reads its
                        # own blobs in order, without a pool of its own.
                        writer.run(lambda n=node, p=path: _decode(repo, decode, n, p), node.logical_size)
                elif node.type in (FILE, STREAM):
                    writer.add(path, node)
        summary.files, summary.bytes, summary.dirs = writer.files, writer.bytes, len(dirs)
        for path, node in reversed(dirs):  # children first: setting a parent's mtime last keeps it
            _set_meta(path, node)
        if sync:
            sync_tree(target)
    if include and not summary.files and not summary.dirs:
        raise NotFoundError(f"nothing in snapshot {snapshot.short_id} matches {include}", "see 'backupctl snapshot show'")
    summary.duration = time.monotonic() - started
    return summary


def _decode(repo: Repository, decode: Decoder, node: Node, path: str) -> None:
    decode(node, path, (repo.read_blob(bytes.fromhex(c)) for c in node.chunks))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # as the writer: never through a link put there since
    try:
        _set_meta(fd, node)
    finally:
        os.close(fd)


# Files are assembled in memory and written in aligned windows of this many bytes: one write per
# window, whatever the chunk boundaries, and layers' patches laid over a window before it is written.
WINDOW = 4 * 1024 * 1024
_ALIGN = 4096                     # O_DIRECT's unit for offsets, lengths and buffer addresses
# Files of at least this size bypass the page cache (O_DIRECT): copying into the page cache costs
# as much CPU as decompressing (system time over 1.6 GB, 2 vCPUs: 4.4-5.4 s buffered, 2.2 s direct),
# and the bytes would be written back anyway by the sync at the end (sync_tree). Smaller files
# are not worth a synchronous write each.
# BACKUPCTL_RESTORE_DIRECT=0 turns it off (a file system where O_DIRECT is slow).
DIRECT_MIN = WINDOW
# A file is opened again after the _Creator made it: never through a link put at its path since.
_WRITE = os.O_WRONLY | os.O_NOFOLLOW
_DIRECT = hasattr(os, "O_DIRECT") and os.environ.get("BACKUPCTL_RESTORE_DIRECT", "1") != "0"


class _WindowBuffer:
    """A page-aligned window buffer (an anonymous map), and its address: chunks are copied into it
    with ctypes.memmove, which runs without the GIL, so the other threads go on decoding meanwhile."""

    __slots__ = ("map", "view", "address", "_array")

    def __init__(self) -> None:
        self.map = mmap.mmap(-1, WINDOW)
        self.view = memoryview(self.map)
        self._array = (ctypes.c_char * WINDOW).from_buffer(self.map)
        self.address = ctypes.addressof(self._array)

    def place(self, at: int, blob: bytes, start: int, n: int) -> None:
        """Copy ``blob[start:start + n]`` to offset ``at``."""
        if type(blob) is not bytes:
            self.view[at:at + n] = memoryview(blob)[start:start + n]
            return
        ctypes.memmove(self.address + at, ctypes.cast(ctypes.c_char_p(blob), ctypes.c_void_p).value + start, n)


class _WindowBuffers:
    """A fixed set of window buffers, reused; taking one waits while all are in use and gives up
    when the restore failed (the windows holding them never complete)."""

    def __init__(self, count: int, failed: Callable[[], BaseException | None]) -> None:
        self._free: list[_WindowBuffer] = []
        self._unmade = count
        self._failed = failed
        self._cond = threading.Condition()

    def get(self) -> _WindowBuffer:
        with self._cond:
            while not self._free and not self._unmade:
                error = self._failed()
                if error is not None:
                    raise error
                self._cond.wait(0.5)
            if self._free:
                return self._free.pop()
            self._unmade -= 1
        return _WindowBuffer()

    def put(self, buf: _WindowBuffer) -> None:
        with self._cond:
            self._free.append(buf)
            self._cond.notify()

    def close(self) -> None:
        self._free.clear()            # the maps go with their last reference


class _Window:
    """One aligned window of a file being assembled: ``remaining`` base bytes still to arrive."""

    __slots__ = ("buf", "view", "start", "length", "padded", "remaining", "zeros", "patched")

    def __init__(self, buf: _WindowBuffer, start: int, length: int, based: int) -> None:
        self.buf, self.view = buf, buf.view
        self.start, self.length, self.remaining = start, length, based
        self.padded = -(-length // _ALIGN) * _ALIGN     # what is written: whole blocks (O_DIRECT)
        self.zeros: list[tuple[int, int]] = []      # ranges of all-zero chunks: holes unless patched
        self.patched = False


class _Layer:
    """One encoded layer's patches, read in order as windows ask for them; those at or past
    ``limit`` (a later layer's size: truncated away since) are dropped."""

    def __init__(self, gen: Generator[list[tuple[int, memoryview]], None, int], limit: int) -> None:
        self.gen, self.limit = gen, limit
        self.batch: list[tuple[int, memoryview]] = []    # the patches read and not yet laid ...
        self.taken = 0                                    # ... from this one on
        self.size: int | None = None

    def more(self) -> bool:
        """Read the next batch of patches; False at the layer's end (``size`` is then set)."""
        if self.size is None:
            try:
                self.batch, self.taken = next(self.gen), 0
                return True
            except StopIteration as stop:
                self.size = stop.value
        self.batch, self.taken = [], 0
        return False


class _OpenFile:
    def __init__(self, path: str, final: Node, fd: int, direct: bool, size: int, base_end: int,
                 layers: list[_Layer], windows: int) -> None:
        self.path, self.final, self.fd = path, final, fd
        self.direct = direct                 # opened with O_DIRECT
        self.spent_fds: list[int] = []       # replaced by one without O_DIRECT, closed at the end
        self.budget = threading.BoundedSemaphore(windows)     # windows this file may hold at once
        self.size, self.base_end, self.layers = size, base_end, layers
        self.windows: dict[int, _Window] = {}
        self.count = (size + WINDOW - 1) // WINDOW
        self.written = 0                    # windows written
        self.next = 0                       # with layers, windows are written in order: the next one
        self.ready: set[int] = set()
        self.writing = False
        self.lock = threading.Lock()


class _FileWriter:
    """Fetches, verifies and places chunks on a thread pool, and writes files in aligned windows.

    ``files`` files are fed to the pool at once, each holding at most ``file_windows`` windows,
    so that a large file waiting on its layers does not hold up the others. At most ``window``
    chunks are in flight and ``buffers`` windows assembled at once: memory stays bounded.
    All-zero chunks become holes. An entry with layers (an incremental chain) is written window
    by window in order, each window's base overlaid with every layer's patches.
    """

    def __init__(self, repo: Repository, progress: Progress, patches: Patches | None = None, threads: int = 4,
                 window: int = 16, buffers: int = 24, files: int = 3, file_windows: int = 8) -> None:
        self.repo, self.progress, self.patches = repo, progress, patches
        self.files = self.bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="restore")
        self._feeders = ThreadPoolExecutor(max_workers=files, thread_name_prefix="restore-feed")
        self._feeding = threading.BoundedSemaphore(2 * files)
        # Layered files in progress at once: each reads its layers ahead (2 blobs a layer), so this
        # bounds that memory as the window buffers bound theirs.
        self._layered = threading.BoundedSemaphore(4)
        self._unfinished: set[_OpenFile] = set()      # opened, not yet complete: their fds are open
        # Windows of layered files are written, and layers' blobs read ahead, on pools of their own:
        # the pool's threads submit to them and wait for them.
        self._writes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="restore-write")
        self._layer_reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="restore-layers")
        self._slots = threading.BoundedSemaphore(window)
        # The next chunk of a file may need every window it spans while the others wait for their
        # chunks: room for that twice over, for each file being fed, so that fed chunks always complete.
        span = -(-repo.config.chunk_max // WINDOW) + 1
        self._file_windows = max(file_windows, 2 * span)
        self._buffers = _WindowBuffers(max(buffers, 2 * files * span), lambda: self._error)
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def run(self, task: Callable[[], None], nbytes: int) -> None:
        """Run an engine's decoder for one file on the pool (its writes release the GIL too)."""
        if self._error is not None:
            raise self._error
        self._slots.acquire()

        def wrapped() -> None:
            try:
                task()
                self.count(1, nbytes)
                self.progress.advance(nbytes, 1)
            except BaseException as exc:
                self._error = self._error or exc
            finally:
                self._slots.release()

        self._pool.submit(wrapped)

    def count(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes

    def add(self, path: str, node: Node, layers: list[Node] | None = None) -> None:
        """Write a file stored whole, or (``layers``) a base with encoded layers over it, the last
        of which is the entry being restored."""
        if self._error is not None:
            raise self._error
        entries = []
        for c in node.chunks:
            entry = self.repo.index.lookup(bytes.fromhex(c))
            if entry is None:
                raise IntegrityError(f"{node.path}: blob {c[:16]} is not in the index",
                                     "run 'backupctl repo check' to see which snapshots are damaged")
            entries.append(entry)
        if sum(e.raw_length for e in entries) != node.size:
            raise IntegrityError(f"{node.path}: its chunks do not add up to its size", "run 'backupctl repo check'")
        self._wait(self._feeding)
        self._feeders.submit(self._feed, self._open_file(path, node, layers or []), entries)

    def _wait(self, semaphore: threading.Semaphore) -> None:
        while not semaphore.acquire(timeout=0.5):
            if self._error is not None:
                raise self._error
        if self._error is not None:
            semaphore.release()
            raise self._error

    def _feed(self, f: _OpenFile, entries: list) -> None:
        """Hand one file's chunks to the pool (on a feeder thread)."""
        try:
            self._feed_chunks(f, entries)
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._feeding.release()

    def _open_file(self, path: str, node: Node, layers: list[Node]) -> _OpenFile:
        """The file opened, with its layers' patches ready to read (nothing is read yet)."""
        final = layers[-1] if layers else node
        size = final.logical_size if layers else node.size
        # a layer's pages past a later layer's size were truncated away by then (the format stores
        # every page past its parent's end, so the later layer has those again if they came back)
        limits = [min([n.logical_size for n in layers[i + 1:]], default=size) for i in range(len(layers))]
        opened = [_Layer(self.patches(n, self._blobs(n)), limit) for n, limit in zip(layers, limits)]
        base_end = min([node.size, *(n.logical_size for n in layers)])
        f = _OpenFile(path, final, *self._open(path, size), size, base_end, opened, self._file_windows)
        with self._lock:
            self._unfinished.add(f)
        return f

    def _feed_chunks(self, f: _OpenFile, entries: list) -> None:
        if f.layers:
            self._wait(self._layered)
        if f.count == 0:
            self._finish(f)
            return
        offset = 0
        for entry in entries:
            if offset >= f.base_end:                     # cut off by a later layer: never read
                break
            end = min(offset + entry.raw_length, f.base_end)
            for j in range(offset // WINDOW, (end - 1) // WINDOW + 1):
                if j not in f.windows:
                    self._open_window(f, j)
            self._wait(self._slots)
            self._pool.submit(self._fill, f, entry, offset)
            offset += entry.raw_length
        for j in range((f.base_end + WINDOW - 1) // WINDOW if f.base_end else 0, f.count):
            self._open_window(f, j)                       # past the base: the layers' pages only
            self._complete(f, j)

    def _blobs(self, node: Node) -> Iterator[bytes]:
        return self.repo.read_blobs([bytes.fromhex(c) for c in node.chunks], window=2, pool=self._layer_reads)

    def _open(self, path: str, size: int) -> tuple[int, bool]:
        """The file (created empty by the _Creator), and whether it was opened with O_DIRECT."""
        if _DIRECT and size >= DIRECT_MIN:
            try:
                return os.open(path, _WRITE | os.O_DIRECT), True
            except OSError:                               # a file system without O_DIRECT (tmpfs)
                pass
        return os.open(path, _WRITE), False

    def _pwrite(self, f: _OpenFile, view: memoryview, offset: int) -> int:
        fd, direct = f.fd, f.direct
        try:
            return os.pwrite(fd, view, offset)
        except OSError as exc:
            # whether *this* write went to the O_DIRECT descriptor: another window's writer may
            # have replaced it since, and this one must then retry, not fail
            if exc.errno != errno.EINVAL or not (direct or fd in f.spent_fds):
                raise
        with f.lock:     # opened with O_DIRECT, but refused at the first write (FUSE, larger blocks)
            if f.direct:
                buffered = os.open(f.path, _WRITE)      # first: if it fails, f.fd is closed once
                f.spent_fds.append(f.fd)
                f.fd, f.direct = buffered, False
        return os.pwrite(f.fd, view, offset)

    def _open_window(self, f: _OpenFile, j: int) -> None:
        start = j * WINDOW
        length = min(WINDOW, f.size - start)
        based = max(0, min(length, f.base_end - start))
        self._wait(f.budget)
        w = _Window(self._buffers.get(), start, length, based)
        if w.padded > based:                             # past the base, and the pad: zeros, not a reused buffer's bytes
            w.view[based:w.padded] = _ZERO_VIEW[:w.padded - based]
        f.windows[j] = w

    def _fill(self, f: _OpenFile, entry, offset: int) -> None:
        try:
            n = entry.raw_length
            pos, end = offset, min(offset + n, f.base_end)
            first = f.windows[offset // WINDOW]
            in_place = end == offset + n and end <= first.start + WINDOW
            if in_place:                 # all of it in one window: decompressed right there
                blob = first.view[offset - first.start:end - first.start]
                self.repo.read_blob_into(entry, blob)
            else:
                blob = self.repo.read_entry(entry)
            zero = n <= len(_ZEROS) and blob == _ZERO_VIEW[:n]      # views: no copy
            while pos < end:
                j = pos // WINDOW
                w = f.windows[j]
                stop = min(end, w.start + WINDOW)
                if not in_place:
                    w.buf.place(pos - w.start, blob, pos - offset, stop - pos)
                if zero:
                    w.zeros.append((pos - w.start, stop - w.start))
                with f.lock:
                    w.remaining -= stop - pos
                    complete = w.remaining == 0
                if complete:
                    self._complete(f, j)
                pos = stop
            self.count(0, max(0, end - offset))
            self.progress.advance(n)
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._slots.release()

    def _complete(self, f: _OpenFile, j: int) -> None:
        """Window ``j`` holds its base: write it, or with layers, overlay every window ready in order
        (the layers are read in order) and hand each to the pool to write."""
        if not f.layers:
            self._write(f, f.windows.pop(j))
            return
        with f.lock:
            f.ready.add(j)
            if f.writing:
                return                                    # the thread writing will take it
            f.writing = True
        while True:
            with f.lock:
                if f.next not in f.ready:
                    f.writing = False
                    return
                f.ready.discard(f.next)
                w = f.windows.pop(f.next)
                f.next += 1
            self._overlay(f, w)
            self._writes.submit(self._write, f, w)

    def _overlay(self, f: _OpenFile, w: _Window) -> None:
        start, end, view = w.start, w.start + w.length, w.view
        for layer in f.layers:                            # oldest first: later layers win
            limit = layer.limit
            while True:
                batch, i = layer.batch, layer.taken
                for offset, data in itertools.islice(batch, i, None):    # the hot loop: one step a page
                    stop = offset + len(data)
                    if stop > end:
                        if offset < end:                  # runs into the next window: lay its head
                            if start <= offset < limit:
                                view[offset - start:end - start] = data[:end - offset]
                                w.patched = True
                            batch[i] = (end, data[end - offset:])
                        break
                    if start <= offset < limit:
                        view[offset - start:stop - start] = data
                        w.patched = True
                    i += 1
                layer.taken = i
                if i < len(batch) or not layer.more():
                    break

    def _write(self, f: _OpenFile, w: _Window) -> None:
        try:
            for a, b in _data_ranges(w.zeros if not w.patched else [], w.length, w.padded):
                view = w.view[a:b]
                offset = w.start + a
                while view:
                    written = self._pwrite(f, view, offset)
                    view, offset = view[written:], offset + written
            self._buffers.put(w.buf)
            f.budget.release()
            with f.lock:
                f.written += 1
                last = f.written == f.count
            if last:
                self._finish(f)
        except BaseException as exc:
            self._error = self._error or exc

    def _finish(self, f: _OpenFile) -> None:
        for layer in f.layers:                            # each layer's end: its size
            while layer.more():
                pass                                      # pages the last layer truncated away
        if f.layers and f.layers[-1].size != f.size:
            raise IntegrityError(f"{f.final.path}: its layers end at {f.layers[-1].size} bytes, the snapshot says "
                                 f"{f.size}", "the backup chain is damaged; restore from another backup")
        os.ftruncate(f.fd, f.size)   # the last window's pad goes; trailing holes still count
        _set_meta(f.fd, f.final)     # by descriptor: whatever is at the path by now
        for fd in [f.fd, *f.spent_fds]:
            os.close(fd)
        if f.layers:
            self._layered.release()
        with self._lock:
            self._unfinished.discard(f)
        self.count(1, f.size - f.base_end)
        self.progress.advance(f.size - f.base_end, 1)

    def __enter__(self) -> "_FileWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[1] is not None:        # the caller failed (or Ctrl-C): the threads stop at their next step
            self._error = self._error or exc[1]
        self._feeders.shutdown(wait=True, cancel_futures=exc[1] is not None)   # in this order: each
        self._pool.shutdown(wait=True, cancel_futures=exc[1] is not None)      # submits to the next
        self._writes.shutdown(wait=True)
        self._layer_reads.shutdown(wait=True)
        self._buffers.close()
        if exc[0] is not None or self._error is not None:
            for f in self._unfinished:                    # the restore failed: they stay incomplete
                for fd in [f.fd, *f.spent_fds]:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        if exc[0] is not None:
            return
        if self._error is not None:
            raise self._error
        if self._unfinished:
            raise IntegrityError(f"{len(self._unfinished)} restored file(s) were not completed",
                                 "run 'backupctl repo check --read-data' and report it")


def _data_ranges(zeros: list[tuple[int, int]], length: int, padded: int) -> list[tuple[int, int]]:
    """The aligned ranges of a window to write: all of it but whole aligned blocks inside all-zero
    chunks (holes; past ``length``, up to ``padded``, is the pad of the file's last block)."""
    holes = []
    for a, b in sorted(zeros):
        a = -(-a // _ALIGN) * _ALIGN
        b = padded if b == length else b // _ALIGN * _ALIGN
        if a < b:
            if holes and a <= holes[-1][1]:
                holes[-1] = (holes[-1][0], max(b, holes[-1][1]))
            else:
                holes.append((a, b))
    out, pos = [], 0
    for a, b in holes:
        if pos < a:
            out.append((pos, a))
        pos = max(pos, b)
    if pos < padded:
        out.append((pos, padded))
    return out


def _set_meta(path: str | int, node: Node, symlink: bool = False) -> None:
    try:
        if os.geteuid() == 0 and node.inode:
            os.chown(path, node.uid, node.gid, follow_symlinks=not symlink)
        if not symlink:
            os.chmod(path, node.mode & 0o7777)
        os.utime(path, ns=(node.mtime, node.mtime), follow_symlinks=not symlink)
    except (OSError, NotImplementedError):
        pass  # metadata is best effort; the data is what must match


def restore_stream(repo: Repository, snapshot: Snapshot, out: BinaryIO, name: str | None = None,
                   progress: Progress | None = None) -> int:
    """Write one stream (or file) of a snapshot to ``out``; returns the byte count."""
    with repo.lock("shared", "restore"):
        if repo.index_loaded:
            repo.reload_index()        # else loaded, under this lock, by the first read that needs it
        return copy_stream(reader_for(repo, snapshot), snapshot, out, name, progress)


def reader_for(repo: Repository, snapshot: Snapshot) -> Repository:
    """``repo``, reading the snapshot's blobs where it says they went first (``Snapshot.index_hint``)."""
    hints = index_from_hint(snapshot.index_hint)
    return repo.with_hints(hints) if hints is not None else repo


def copy_stream(repo: Repository, snapshot: Snapshot, out: BinaryIO, name: str | None = None,
                progress: Progress | None = None) -> int:
    """``restore_stream`` for a caller that already holds a lock and has reloaded the index (one
    session restoring many streams)."""
    progress = progress or Progress()
    candidates = [n for n in walk_tree(repo, snapshot.tree) if n.type in (FILE, STREAM)
                  and (name is None or n.path == name)]
    if len(candidates) != 1:
        what = f"entry {name!r}" if name else "a single stream"
        raise UsageError(f"snapshot {snapshot.short_id} does not hold {what}",
                         "name the entry with --path, or restore to a directory")
    node = candidates[0]
    progress.add_total(node.size)
    progress.total_complete()
    written = 0
    for blob in repo.read_blobs([bytes.fromhex(c) for c in node.chunks]):
        out.write(blob)
        written += len(blob)
        progress.advance(len(blob))
    out.flush()
    if written != node.size:
        raise IntegrityError(f"restored {written} bytes, the snapshot says {node.size}", "run 'backupctl repo check'")
    return written
