"""Backing up file trees and streams into a repository.

Order of durability (the crash-consistency argument): packs are uploaded first, then
the index file that lists them, then the snapshot manifest. A process killed before
the manifest lands leaves only unreferenced packs and index entries, which ``check``
reports as reclaimable and ``gc`` removes; it never leaves a visible half snapshot.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from backupctl.errors import BackupctlError, IntegrityError, UsageError
from backupctl.progress import Progress
from backupctl.repository.blobsaver import BlobSaver
from backupctl.repository.chunker import BUFFER_SIZE, BufferPool, Chunker, Guide
from backupctl.repository.gc import compact_index
from backupctl.repository.index import Index, index_hint
from backupctl.repository.lock import Lock
from backupctl.repository.plan import pending_deletions
from backupctl.repository.pack import DATA, TREE
from backupctl.repository.repo import Repository
from backupctl.repository.snapshot import Snapshot, now_iso, save_snapshot
from backupctl.repository.tree import DIR, FILE, STREAM, SYMLINK, Node, TreeSpool, walk_tree

SMALL_FILE = 1024 * 1024  # read in one call; larger files stream through the buffer pool


@dataclass
class _Pending:
    """A tree entry waiting for its data: ``data`` yields the chunk futures (None: unreadable)."""

    node: Node
    data: Future | None = None
    new: bool = False


def _done(value) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


@dataclass
class _Source:
    """One top-level path: where it is on disk and the name it has in the snapshot ('' = root)."""

    abspath: str
    name: str


def _sources(paths: list[str]) -> list[_Source]:
    if not paths:
        raise UsageError("no paths to back up", "name one or more files or directories, or - for stdin")
    absolute = [os.path.abspath(p) for p in paths]
    for p in absolute:
        if not os.path.lexists(p):
            raise UsageError(f"{p} does not exist", "check the path")
    if len(absolute) == 1 and os.path.isdir(absolute[0]):
        return [_Source(absolute[0], "")]
    names = [os.path.basename(p.rstrip("/")) or "root" for p in absolute]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UsageError(f"several paths have the base name {sorted(dup)[0]!r}",
                         "back them up in separate snapshots, or one common parent directory")
    return sorted((_Source(p, n) for p, n in zip(absolute, names)), key=lambda s: s.name)


def _node_from_stat(path: str, st: os.stat_result) -> Node:
    return Node(path=path, type=DIR, mode=st.st_mode, mtime=st.st_mtime_ns, inode=st.st_ino, ctime=st.st_ctime_ns,
                uid=st.st_uid, gid=st.st_gid)


class Warnings(list):
    """What a backup could not read, in order. ``unreadable`` are the read errors among them: not a
    file deleted while the backup ran (a live data directory does that) nor a skipped socket."""

    def __init__(self) -> None:
        super().__init__()
        self.unreadable: list[str] = []

    def add(self, path: str, exc: OSError | None = None, note: str | None = None) -> None:
        text = f"{path}: {note or exc.strerror}"
        self.append(text)
        if exc is not None and not isinstance(exc, FileNotFoundError):
            self.unreadable.append(text)


class _Walker:
    """Depth-first, siblings sorted by name: the order trees are stored in."""

    def __init__(self, warnings: Warnings) -> None:
        self.warnings = warnings

    def walk(self, source: _Source) -> Iterator[tuple[Node, str]]:
        try:
            st = os.lstat(source.abspath)
        except OSError as exc:
            self.warnings.add(source.abspath, exc)
            return
        if source.name:
            yield from self._entry(source.name, source.abspath, st)
        else:  # a single directory: its contents are the snapshot's root
            yield from self._children("", source.abspath)

    def _entry(self, rel: str, abspath: str, st: os.stat_result) -> Iterator[tuple[Node, str]]:
        node = _node_from_stat(rel, st)
        if stat.S_ISDIR(st.st_mode):
            yield node, abspath
            yield from self._children(rel, abspath)
        elif stat.S_ISREG(st.st_mode):
            node.type, node.size = FILE, st.st_size
            yield node, abspath
        elif stat.S_ISLNK(st.st_mode):
            node.type, node.target = SYMLINK, os.readlink(abspath)
            yield node, abspath
        else:
            self.warnings.add(abspath, note="skipped (not a regular file, directory or symlink)")

    def _children(self, rel: str, abspath: str) -> Iterator[tuple[Node, str]]:
        try:
            with os.scandir(abspath) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.warnings.add(abspath, exc)
            return
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as exc:  # vanished between listing and stat: a live data directory
                self.warnings.add(e.path, exc)
                continue
            yield from self._entry(f"{rel}/{e.name}" if rel else e.name, e.path, st)


def _scan_totals(sources: list[_Source], progress: Progress) -> None:
    """Sum sizes ahead of the backup for the progress bar's ETA (runs beside it, like restic's scanner)."""
    walker = _Walker([])
    for src in sources:
        for node, _ in walker.walk(src):
            progress.add_total(node.size, 1 if node.type == FILE else 0)
    progress.total_complete()


def unmodified(node: Node, old: Node, old_size: int, settled_before: int | None = None) -> bool:
    """Whether ``node`` is still the file ``old`` (of ``old_size`` bytes) described: same size, mtime,
    ctime and inode, and with ``settled_before`` (ns), last modified before that. A file written
    while a backup read it can be stored torn and keep the metadata it had when it was listed; an
    engine whose later backups replay its log only from their own start passes its parent's start."""
    return (old_size, old.mtime, old.ctime, old.inode) == (node.size, node.mtime, node.ctime, node.inode) \
        and (settled_before is None or old.mtime < settled_before)


class _ParentTree:
    """Merge-join against the parent snapshot's tree: both are in walk order."""

    def __init__(self, repo: Repository, parent: Snapshot | None, usable: set[bytes] | None,
                 settled_before: int | None = None) -> None:
        self._it = walk_tree(repo, parent.tree) if parent else iter(())
        self._cur: Node | None = self._next()
        self._index = repo.index if parent else Index()
        self._exclude = usable
        self._blob_id = repo.key.blob_id
        self._settled_before = settled_before

    def find(self, node: Node) -> Node | None:
        """The parent's entry for the same path, if it was a file."""
        key = node.sort_key
        while self._cur is not None and self._cur.sort_key < key:
            self._cur = self._next()
        old = self._cur
        if old is None or old.sort_key != key or old.type != FILE:
            return None
        return old

    def _next(self) -> Node | None:
        try:
            return next(self._it, None)
        except IntegrityError as exc:
            # a damaged parent costs reading the rest of the files in full, not the backup
            logging.getLogger(__name__).warning("the parent snapshot's tree cannot be read (%s): the files from "
                                                "here on are read in full", exc)
            self._it = iter(())
            return None

    def unchanged(self, node: Node, old: Node | None) -> list[str] | None:
        """The parent's chunks for ``node`` if the file did not change since (see ``unmodified``)."""
        if old is None or old.encoding is not None or not unmodified(node, old, old.size, self._settled_before):
            return None
        for cid in old.chunks:  # the data must still be there and not be on its way out
            b = bytes.fromhex(cid)
            if b not in self._index or b in self._exclude:
                return None
        return old.chunks

    def guide(self, old: Node | None) -> Guide | None:
        """The parent's chunks of a changed file, to re-cut only what changed (see Chunker.chunks)."""
        if old is None or old.encoding is not None or not old.chunks:
            return None
        chunks = []
        for c in old.chunks:
            entry = self._index.lookup(bytes.fromhex(c))
            if entry is None:
                return None
            chunks.append((entry.raw_length, entry.id))
        return Guide(chunks, self._blob_id)


class EncodedContent(Protocol):
    """What a content hook returns to store a file in an engine's own encoding."""

    encoding: str
    logical_size: int            # the file's size, known once the stream was read to its end

    def readinto(self, view: memoryview) -> int: ...


# (entry, its path on disk, the parent's entry for it) -> the content to store instead, or None
ContentHook = Callable[[Node, str, "Node | None"], "EncodedContent | None"]
# A file's path in the snapshot -> cut it every so many bytes instead of by content (None: by content).
FixedChunks = Callable[[str], "int | None"]


class Archiver:
    """Turns files and streams into blobs and a tree.

    Small files are read and cut on the calling thread; large files are cut on
    ``file_threads`` threads, each reading ahead (the chunker, like the hashing and the
    compression, runs without the GIL). Tree entries are written in walk order whatever
    order the files finish in.
    """

    def __init__(self, repo: Repository, *, lock: Lock, progress: Progress | None = None,
                 compression: int | None = None, workers: int = 2, file_threads: int = 2,
                 content_hook: ContentHook | None = None, fixed_chunks: FixedChunks | None = None,
                 reuse_stored: bool = True) -> None:
        self.repo = repo
        self.lock = lock                # held by the caller; checked before every index file and the snapshot
        self.reuse_stored = reuse_stored
        self.content_hook = content_hook
        self.fixed_chunks = fixed_chunks or (lambda path: None)
        self.progress = progress or Progress()
        self.warnings = Warnings()
        if reuse_stored:
            repo.reload_index()  # after the lock is held: see the gc plans written before it
            self.exclude = pending_deletions(repo)
            known = repo.index
        else:                    # nothing stored is reused, so neither the index nor the plans matter
            self.exclude, known = frozenset(), Index()
        self.saver = BlobSaver(repo, known, lock, workers=workers, compression=compression, exclude=self.exclude)
        # Each large file in progress holds at most three buffers (cutting, queued, being read).
        self._buffers = BufferPool(repo.config.chunk_max + BUFFER_SIZE, 3 * file_threads)
        self._chunkers = threading.local()
        self._files = ThreadPoolExecutor(max_workers=file_threads, thread_name_prefix="file")
        self._file_slots = threading.BoundedSemaphore(2 * file_threads)
        self.spool = TreeSpool()
        self._count_lock = threading.Lock()     # file threads add to counts too
        self.counts = {"files_new": 0, "files_changed": 0, "files_unmodified": 0, "chunks_in_place": 0, "dirs": 0,
                       "bytes_read": 0, "bytes_total": 0}
        self._queue: deque[_Pending] = deque()
        self._tree: list[str] | None = None

    @property
    def chunker(self) -> Chunker:
        """One per thread: a FastCDC instance must not be shared between threads."""
        c = getattr(self._chunkers, "c", None)
        if c is None:
            c = self._chunkers.c = Chunker(self.repo.config, self.repo.key.chunker_seed, self._buffers)
        return c

    # -- data --------------------------------------------------------------------------
    def _read_small(self, path: str, fixed: int | None = None) -> tuple[list[Future], int] | None:
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read(SMALL_FILE + 1)
                while len(data) > SMALL_FILE and (more := f.read(SMALL_FILE)):  # grew since stat
                    data += more
        except OSError as exc:
            self.warnings.add(path, exc)
            return None
        self.progress.advance(len(data))
        return [self.saver.submit(chunk, DATA) for chunk in self.chunker.chunk_bytes(data, fixed)], len(data)

    def _read_large(self, path: str, guide: Guide | None = None, fixed: int | None = None
                    ) -> tuple[list[Future], int] | None:
        try:
            with open(path, "rb", buffering=0) as f:
                return self._chunk_stream(f, guide, fixed)
        except OSError as exc:
            self.warnings.add(path, exc)
            return None
        finally:
            self._file_slots.release()

    def _read_encoded(self, node: Node, content: EncodedContent) -> tuple[list[Future], int] | None:
        try:
            result = self._chunk_stream(content)
        except OSError as exc:
            self.warnings.add(node.path, exc)
            return None
        finally:
            self._file_slots.release()
        node.logical_size = content.logical_size
        return result

    def _chunk_stream(self, stream: BinaryIO, guide: Guide | None = None, fixed: int | None = None
                      ) -> tuple[list[Future], int]:
        """Chunk futures and the byte count actually read (a live file may have changed since its stat)."""
        futures, size = [], 0
        readinto = getattr(stream, "readinto", None) or _readinto_from_read(stream)
        for chunk, release, blob_id in self.chunker.chunks(readinto, guide, fixed):
            size += len(chunk)
            futures.append(self.saver.submit(chunk, DATA, release, blob_id))
            self.progress.advance(len(chunk))
        if guide is not None:
            with self._count_lock:
                self.counts["chunks_in_place"] += guide.taken
        return futures, size

    # -- tree ---------------------------------------------------------------------------
    def _emit(self, pending: _Pending) -> None:
        self._queue.append(pending)
        self._drain(block=False)

    def _drain(self, block: bool) -> None:
        """Write finished entries to the tree, in walk order."""
        while self._queue:
            head = self._queue[0]
            if head.data is not None:
                if not block and not head.data.done():
                    return
                result = head.data.result()
                if not block and result and not all(f.done() for f in result[0]):
                    return
                self._queue.popleft()
                if result is None:  # unreadable: already a warning, not in the tree
                    continue
                futures, head.node.size = result
                head.node.chunks = [f.result().hex() for f in futures]
                self.counts["files_new" if head.new else "files_changed"] += 1
                self.counts["bytes_read"] += head.node.size
                self.progress.advance(0, 1)
            else:
                self._queue.popleft()
            if head.node.type in (FILE, STREAM):
                self.counts["bytes_total"] += head.node.logical_size if head.node.encoding else head.node.size
            self.spool.add(head.node)

    def add_tree(self, sources: list[_Source], parent: Snapshot | None, reuse_unchanged: bool = True,
                 settled_before: int | None = None) -> None:
        """``reuse_unchanged=False``: read every file, even one whose metadata matches the parent's (a
        full backup); the parent then only guides the re-cutting of changed files. ``settled_before``:
        see ``unmodified``."""
        parent_tree = _ParentTree(self.repo, parent, self.exclude, settled_before)
        walker = _Walker(self.warnings)
        for node, abspath in (item for src in sources for item in walker.walk(src)):
            if node.type == FILE:
                old = parent_tree.find(node)
                content = self.content_hook(node, abspath, old) if self.content_hook else None
                if content is not None:
                    node.encoding = content.encoding
                    self._file_slots.acquire()
                    self._emit(_Pending(node, self._files.submit(self._read_encoded, node, content), new=old is None))
                    continue
                reused = parent_tree.unchanged(node, old) if reuse_unchanged else None
                if reused is not None:
                    node.chunks = reused
                    self.counts["files_unmodified"] += 1
                    self.progress.advance(node.size, 1)
                    self._emit(_Pending(node))
                elif node.size <= SMALL_FILE:
                    self._emit(_Pending(node, _done(self._read_small(abspath, self.fixed_chunks(node.path))),
                                        new=parent is None))
                else:
                    self._file_slots.acquire()  # bounds how far the walk runs ahead of the data
                    fixed = self.fixed_chunks(node.path)
                    guide = parent_tree.guide(old) if fixed is None else None
                    self._emit(_Pending(node, self._files.submit(self._read_large, abspath, guide, fixed),
                                        new=parent is None))
            else:
                if node.type == DIR:
                    self.counts["dirs"] += 1
                self._emit(_Pending(node))

    def add_stream(self, stream: BinaryIO, name: str) -> None:
        node = Node(path=name, type=STREAM, mode=0o100600, mtime=time.time_ns())
        self._emit(_Pending(node, _done(self._chunk_stream(stream)), new=True))

    # -- commit -------------------------------------------------------------------------
    def _save_tree(self) -> list[str]:
        self._drain(block=True)
        self._files.shutdown(wait=True)
        f = self.spool.rewind()
        futures = [self.saver.submit(chunk, TREE, release) for chunk, release, _ in self.chunker.chunks(f.readinto)]
        return [fut.result().hex() for fut in futures]

    def finish_data(self) -> None:
        """Store the tree and upload every pack: all data durable, nothing yet indexed or visible."""
        if self._tree is None:
            self._tree = self._save_tree()
            self.saver.flush()

    def commit(self, *, paths: list[str], tags: list[str], parent: Snapshot | None, metadata: dict | None,
               started: float, hostname: str | None) -> Snapshot:
        self.finish_data()
        tree = self._tree
        self.saver.commit_index()       # checks the lock first: no index naming packs a gc took for orphans
        self.lock.check_still_held()
        duration = time.monotonic() - started
        s = self.saver.stats
        summary = dict(self.counts, bytes_added=s.bytes_added, blobs_new=s.blobs_new, blobs_reused=s.blobs_reused,
                       packs=s.packs, tree_entries=self.spool.count, duration=round(duration, 3),
                       throughput=round(self.counts["bytes_total"] / duration) if duration > 0 else 0,
                       warnings=self.warnings[:100], warning_count=len(self.warnings),
                       unreadable=self.warnings.unreadable[:100], unreadable_count=len(self.warnings.unreadable))
        snap = Snapshot(time=now_iso(), hostname=hostname or socket.gethostname(), username=getpass.getuser(),
                        paths=paths, tree=tree, tags=sorted(set(tags)), parent=parent.id if parent else None,
                        summary=summary, metadata=metadata or {})
        if not self.reuse_stored:       # all its blobs are in packs of its own: say where
            own = self.saver.known
            snap.index_hint = index_hint({p: (own.packs[p], es) for p, es in own.pack_entries.items()})
        save_snapshot(self.repo.store, self.repo.key, snap)
        try:
            compact_index(self.repo)
        except (BackupctlError, OSError) as exc:    # the snapshot is committed: the next writer or gc merges
            logging.getLogger(__name__).warning("the repository's index files were not merged: %s", exc)
        return snap

    def close(self) -> None:
        self._files.shutdown(wait=True, cancel_futures=True)
        self.saver.abort()
        self.spool.close()


def _readinto_from_read(stream: BinaryIO):
    def readinto(view: memoryview) -> int:
        data = stream.read(len(view))
        view[:len(data)] = data
        return len(data)

    return readinto


def find_parent(repo: Repository, paths: list[str], hostname: str) -> Snapshot | None:
    """The newest snapshot of the same paths from the same host, as restic picks it."""
    candidates = [s for s in repo.snapshots() if sorted(s.paths) == sorted(paths) and s.hostname == hostname]
    return candidates[-1] if candidates else None


def backup_paths(repo: Repository, paths: list[str], *, tags: list[str] | tuple = (), metadata: dict | None = None,
                 parent: Snapshot | str | None = "auto", progress: Progress | None = None,
                 compression: int | None = None, hostname: str | None = None,
                 content_hook: ContentHook | None = None, reuse_unchanged: bool = True,
                 settled_before: int | None = None, fixed_chunks: FixedChunks | None = None,
                 reuse_stored: bool = True) -> Snapshot:
    """Back up files and directories; unchanged files (size, mtime, ctime, inode) are taken from the parent
    (``reuse_unchanged=False``: read anyway; the parent then only speeds up re-cutting changed files;
    ``settled_before``: only files last modified before it, see ``unmodified``).

    ``content_hook`` lets an engine store some files in its own encoding (see EncodedContent);
    ``fixed_chunks`` lets it cut files of fixed-size pages at fixed offsets.

    ``reuse_stored=False`` (no parent): store every chunk, without reading the repository's index, for
    data that hardly ever repeats what is stored (WAL): its cost then does not grow with the repository."""
    if not reuse_stored and parent is not None:
        raise ValueError("a backup that reuses nothing stored has no parent")
    sources = _sources(paths)
    started = time.monotonic()
    abs_paths = [os.path.abspath(p) for p in paths]
    host = hostname or socket.gethostname()
    progress = progress or Progress()
    with repo.lock("shared", "backup") as lock:
        if parent == "auto":
            parent = find_parent(repo, abs_paths, host)
        elif isinstance(parent, str):
            parent = repo.find_snapshot(parent)
        archiver = Archiver(repo, lock=lock, progress=progress, compression=compression, content_hook=content_hook,
                            fixed_chunks=fixed_chunks, reuse_stored=reuse_stored)
        if progress.shows_totals:  # a second walk of the tree, worth it only for an ETA someone sees
            threading.Thread(target=_scan_totals, args=(sources, progress), daemon=True).start()
        try:
            archiver.add_tree(sources, parent, reuse_unchanged, settled_before)
            return archiver.commit(paths=abs_paths, tags=list(tags), parent=parent, metadata=metadata,
                                   started=started, hostname=host)
        finally:
            archiver.close()


def backup_stream(repo: Repository, stream: BinaryIO, name: str, *, tags: list[str] | tuple = (),
                  metadata: dict | None = None, progress: Progress | None = None, compression: int | None = None,
                  hostname: str | None = None) -> Snapshot:
    """Back up one stream (stdin, a pipe from an engine tool) as a named entry."""
    if not name or "/" in name:
        raise UsageError(f"invalid stream name {name!r}", "give --stdin-name a plain file name such as dump.sql")
    started = time.monotonic()
    with repo.lock("shared", "backup") as lock:
        archiver = Archiver(repo, lock=lock, progress=progress, compression=compression)
        try:
            archiver.add_stream(stream, name)
            return archiver.commit(paths=[name], tags=list(tags), parent=None, metadata=metadata,
                                   started=started, hostname=hostname)
        finally:
            archiver.close()
