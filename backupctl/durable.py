"""Making what was written survive a crash: a directory's entries, or everything under a directory.

A restore reports success only once what it wrote is durable, as pgBackRest's (which fsyncs each
file). On Linux that is one syncfs() of the file system holding the target (as PostgreSQL's
recovery_init_sync_method=syncfs): O_DIRECT writes can sit in a disk's volatile cache and the
files' metadata in the page cache, and one flush at the end costs less than one per file
(measured on a virtual disk over 980 files: fsyncing each as it completed was 0.7-1.0 s slower
than no sync at all; a thread fsyncing finished files, 0.35-1.1 s slower than one syncfs).
Linux before 5.8 does not report writeback errors through syncfs(); PostgreSQL documents the
same. Elsewhere every regular file and directory is fsynced, but for those whose restored mode
forbids opening them, as PostgreSQL's fsync_fname skips them (on macOS, fsync does not flush the
drive's own cache).
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_syncfs = getattr(_libc, "syncfs", None)        # absent from some C libraries (old glibc, musl builds)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory: the entries made, renamed or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(root: str) -> None:
    """Everything under ``root`` (a directory), and its entry in its parent, made durable."""
    if _syncfs is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs of {root} failed: {os.strerror(err)}", root)
        finally:
            os.close(fd)
        return

    def fail(exc: OSError) -> None:              # a directory it cannot list: its files would go unsynced
        if not isinstance(exc, PermissionError):  # ...unless its mode forbids it (see _fsync)
            raise exc

    for dirpath, _, files in os.walk(root, onerror=fail):
        for name in files:
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):     # not links, FIFOs (an open would block), devices
                _fsync(path, os.O_RDONLY | os.O_NONBLOCK)
        _fsync(dirpath, os.O_RDONLY | os.O_DIRECTORY)
    fsync_dir(os.path.dirname(os.path.abspath(root)) or "/")


def _fsync(path: str, flags: int) -> None:
    """fsync one entry. One whose restored mode forbids opening it (0000, or 0200 for reading) is
    skipped, as PostgreSQL's fsync_fname skips EACCES: a restore that wrote everything should not
    fail over a mode the snapshot asked for."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    except PermissionError:
        if flags & os.O_DIRECTORY:
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except PermissionError:
            return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
