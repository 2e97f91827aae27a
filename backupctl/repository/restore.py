"""Restoring snapshots to a directory or a stream.

Every blob is verified against its keyed id on the way out, so a restore either returns
exactly the bytes that were backed up or stops with an IntegrityError. Blobs are fetched
ahead on a thread pool across file boundaries, so many small files restore as fast as a
few large ones. All-zero chunks become holes: sparse files stay sparse.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from backupctl.errors import IntegrityError, NotFoundError, UsageError
from backupctl.progress import Progress
from backupctl.repository.repo import Repository
from backupctl.repository.snapshot import Snapshot
from backupctl.repository.tree import DIR, FILE, STREAM, SYMLINK, Node, walk_tree

_ZEROS = bytes(8 * 1024 * 1024)


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


def restore_snapshot(repo: Repository, snapshot: Snapshot, target: str, *, include: list[str] | None = None,
                     overwrite: bool = False, progress: Progress | None = None) -> RestoreSummary:
    progress = progress or Progress()
    progress.add_total(int(snapshot.summary.get("bytes_total", 0)), int(snapshot.summary.get("files_new", 0)))
    progress.total_complete()
    started = time.monotonic()
    summary = RestoreSummary()
    target = _check_target(target, overwrite)
    with repo.lock("shared", "restore"):
        repo.reload_index()
        nodes = [n for n in walk_tree(repo, snapshot.tree) if _wanted(n, include)] if include else None
        node_iter = nodes if nodes is not None else walk_tree(repo, snapshot.tree)
        dirs: list[tuple[str, Node]] = []
        files = _FileQueue()

        def chunk_ids() -> Iterator[bytes]:
            for node in node_iter:
                path = _safe_join(target, node.path)
                if node.type == DIR:
                    os.makedirs(path, exist_ok=True)
                    dirs.append((path, node))
                    summary.dirs += 1
                elif node.type in (FILE, STREAM):
                    files.push(path, node)
                    yield from (bytes.fromhex(c) for c in node.chunks)
                elif node.type == SYMLINK:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    if os.path.lexists(path):
                        os.unlink(path)
                    os.symlink(node.target, path)
                    _set_meta(path, node, symlink=True)

        for blob in repo.read_blobs(chunk_ids()):
            files.write(blob)
            summary.bytes += len(blob)
            progress.advance(len(blob))
        files.close_all()
        summary.files = files.count
        progress.advance(0, summary.files)
        for path, node in reversed(dirs):  # children first: setting a parent's mtime last keeps it
            _set_meta(path, node)
    if include and not summary.files and not summary.dirs:
        raise NotFoundError(f"nothing in snapshot {snapshot.short_id} matches {include}", "see 'backupctl snapshot show'")
    summary.duration = time.monotonic() - started
    return summary


class _FileQueue:
    """Files in tree order; blobs arrive in the same order as the files' chunks."""

    def __init__(self) -> None:
        self._queue: list[tuple[str, Node]] = []
        self._pos = 0
        self._fd: int | None = None
        self._cur: tuple[str, Node] | None = None
        self._remaining = 0
        self._written = 0
        self.count = 0

    def push(self, path: str, node: Node) -> None:
        self._queue.append((path, node))
        self._advance_empty()

    def _open_next(self) -> None:
        path, node = self._queue[self._pos]
        self._pos += 1
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._cur, self._remaining, self._written = (path, node), len(node.chunks), 0

    def _advance_empty(self) -> None:
        # Files with no chunks complete without any blob; handle them as soon as they are next.
        while self._cur is None and self._pos < len(self._queue) and not self._queue[self._pos][1].chunks:
            self._open_next()
            self._finish()

    def write(self, blob: bytes) -> None:
        if self._cur is None:
            self._open_next()
        n = len(blob)
        if n <= len(_ZEROS) and blob == _ZEROS[:n]:
            os.lseek(self._fd, n, os.SEEK_CUR)  # leave a hole
        else:
            view = memoryview(blob)
            while view:
                view = view[os.write(self._fd, view):]
        self._written += n
        self._remaining -= 1
        if self._remaining == 0:
            self._finish()
            self._advance_empty()

    def _finish(self) -> None:
        path, node = self._cur
        os.ftruncate(self._fd, self._written)  # trailing holes still count towards the size
        os.close(self._fd)
        self._fd, self._cur = None, None
        if self._written != node.size:
            raise IntegrityError(f"{node.path}: restored {self._written} bytes, the snapshot says {node.size}",
                                 "run 'backupctl repo check --read-data'")
        _set_meta(path, node)
        self.count += 1
        # Forget finished entries so a tree of millions of files does not pile up here.
        if self._pos > 1024:
            del self._queue[:self._pos]
            self._pos = 0

    def close_all(self) -> None:
        self._advance_empty()
        if self._cur is not None or self._pos < len(self._queue):
            raise IntegrityError("the snapshot's tree lists more data than it holds", "run 'backupctl repo check'")


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
    progress = progress or Progress()
    with repo.lock("shared", "restore"):
        repo.reload_index()
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
