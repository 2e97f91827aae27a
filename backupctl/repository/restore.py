"""Restoring snapshots to a directory or a stream.

Every blob is verified against its keyed id on the way out, so a restore either returns
exactly the bytes that were backed up or stops with an IntegrityError. Blobs are fetched
ahead on a thread pool across file boundaries, so many small files restore as fast as a
few large ones. All-zero chunks become holes: sparse files stay sparse.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from backupctl.errors import IntegrityError, NotFoundError, UsageError
from backupctl.progress import Progress
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
    if path != root and not path.startswith(root + os.sep):
        raise IntegrityError(f"tree entry {rel!r} points outside the restore target", "the snapshot is damaged")
    return path


def _check_target(target: str, overwrite: bool) -> str:
    target = os.path.abspath(target)
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise UsageError(f"restore target {target} exists and is not a directory", "choose a new or empty directory")
        if os.listdir(target) and not overwrite:
            raise UsageError(f"restore target {target} is not empty",
                             "choose a new or empty directory, or pass --overwrite to replace files in it")
    os.makedirs(target, exist_ok=True)
    return target


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


def restore_snapshot(repo: Repository, snapshot: Snapshot, target: str, *, include: list[str] | None = None,
                     overwrite: bool = False, progress: Progress | None = None,
                     decode: Decoder | None = None, layers: Layers | None = None) -> RestoreSummary:
    """Restore a snapshot's tree into ``target``. Entries an engine stored in its own encoding are
    handed to ``decode`` (the engine's); without one, such a snapshot is refused. With ``layers``,
    such an entry's base is written first (in parallel chunks, as any file) and then every layer
    decoded onto it in order, so a chain of backups restores in one pass over the newest tree."""
    progress = progress or Progress()
    progress.add_total(int(snapshot.summary.get("bytes_total", 0)), int(snapshot.summary.get("files_new", 0)))
    progress.total_complete()
    started = time.monotonic()
    summary = RestoreSummary()
    target = _check_target(target, overwrite)
    with repo.lock("shared", "restore"):
        repo.reload_index()
        node_iter: Iterable[Node] = (n for n in walk_tree(repo, snapshot.tree) if _wanted(n, include))
        if decode is not None:
            # Engine-encoded entries first, the largest first: decoding one (its base, then its
            # changes, in one thread) is the long pole, so it starts at once and overlaps the rest.
            # The rest keep the tree's order (a stable sort).
            node_iter = sorted(node_iter, key=lambda n: -n.logical_size if n.encoding is not None else 1)
        dirs: list[tuple[str, Node]] = []
        with _FileWriter(repo, progress) as writer:
            for node in node_iter:
                path = _safe_join(target, node.path)
                if node.type == DIR:
                    os.makedirs(path, exist_ok=True)
                    dirs.append((path, node))
                elif node.encoding is not None:
                    if decode is None:
                        raise UsageError(f"snapshot {snapshot.short_id} stores {node.path} in the {node.encoding} "
                                         "encoding of an engine",
                                         "restore this backup with 'backupctl restore create --backup NAME'")
                    below = layers(node) if layers is not None else None
                    if below:
                        def then(n=node, p=path, encoded=[*below[1:], node], base_size=below[0].size):
                            _decode_layers(repo, decode, encoded, p, n)
                            writer.count(0, n.logical_size - base_size)
                        writer.add(path, below[0], then=then)
                    else:
                        # Decoders already run several at once on the writer's pool: each reads its
                        # own blobs in order, without a pool of its own.
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        writer.run(lambda n=node, p=path: _decode_layers(repo, decode, [n], p, n), node.logical_size)
                elif node.type in (FILE, STREAM):
                    writer.add(path, node)
                elif node.type == SYMLINK:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    if os.path.lexists(path):
                        os.unlink(path)
                    os.symlink(node.target, path)
                    _set_meta(path, node, symlink=True)
        summary.files, summary.bytes, summary.dirs = writer.files, writer.bytes, len(dirs)
        for path, node in reversed(dirs):  # children first: setting a parent's mtime last keeps it
            _set_meta(path, node)
    if include and not summary.files and not summary.dirs:
        raise NotFoundError(f"nothing in snapshot {snapshot.short_id} matches {include}", "see 'backupctl snapshot show'")
    summary.duration = time.monotonic() - started
    return summary


def _decode_layers(repo: Repository, decode: Decoder, encoded: list[Node], path: str, last: Node) -> None:
    for node in encoded:
        decode(node, path, (repo.read_blob(bytes.fromhex(c)) for c in node.chunks))
    _set_meta(path, last)


class _OpenFile:
    def __init__(self, path: str, node: Node, fd: int, chunks: int, then: Callable[[], None] | None) -> None:
        self.path, self.node, self.fd, self.remaining, self.then = path, node, fd, chunks, then


class _FileWriter:
    """Fetches, verifies and writes chunks on a thread pool, each at its offset (pwrite).

    Writing into the page cache costs as much kernel time as the decryption costs user time,
    so writes run in parallel too. At most ``window`` chunks are in flight; all-zero chunks
    are left as holes.
    """

    def __init__(self, repo: Repository, progress: Progress, threads: int = 4, window: int = 16) -> None:
        self.repo, self.progress = repo, progress
        self.files = self.bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="restore")
        self._slots = threading.BoundedSemaphore(window)
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

    def add(self, path: str, node: Node, then: Callable[[], None] | None = None) -> None:
        """Write a file stored whole; ``then`` runs once it is complete (on a pool thread)."""
        if self._error is not None:
            raise self._error
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        entries = []
        for c in node.chunks:
            entry = self.repo.index.lookup(bytes.fromhex(c))
            if entry is None:
                raise IntegrityError(f"{node.path}: blob {c[:16]} is not in the index",
                                     "run 'backupctl repo check' to see which snapshots are damaged")
            entries.append(entry)
        if sum(e.raw_length for e in entries) != node.size:
            raise IntegrityError(f"{node.path}: its chunks do not add up to its size", "run 'backupctl repo check'")
        f = _OpenFile(path, node, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), len(entries), then)
        if not entries:
            self._finish(f)
            return
        offset = 0
        for entry in entries:
            self._slots.acquire()
            if self._error is not None:
                self._slots.release()
                raise self._error
            self._pool.submit(self._write, f, entry, offset)
            offset += entry.raw_length

    def _write(self, f: _OpenFile, entry, offset: int) -> None:
        try:
            blob = self.repo.read_blob(entry.id)
            n = len(blob)
            if not (n <= len(_ZEROS) and blob == _ZERO_VIEW[:n]):  # zeros stay a hole (a view: no copy)
                view = memoryview(blob)
                while view:
                    written = os.pwrite(f.fd, view, offset)
                    view, offset = view[written:], offset + written
            with self._lock:
                self.bytes += n
                f.remaining -= 1
                last = f.remaining == 0
            self.progress.advance(n)
            if last:
                self._finish(f)
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._slots.release()

    def _finish(self, f: _OpenFile) -> None:
        os.ftruncate(f.fd, f.node.size)  # trailing holes still count towards the size
        os.close(f.fd)
        _set_meta(f.path, f.node)
        if f.then is not None:
            f.then()
        self.count(1, 0)
        self.progress.advance(0, 1)

    def __enter__(self) -> "_FileWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)
        if self._error is not None and exc[0] is None:
            raise self._error


def _set_meta(path: str, node: Node, symlink: bool = False) -> None:
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
        repo.reload_index()
        return copy_stream(repo, snapshot, out, name, progress)


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
