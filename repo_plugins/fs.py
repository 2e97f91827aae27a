"""Local disk or NAS mount. Writes go to a temporary name, are fsynced, then renamed, so an
object is either absent or complete even if the machine dies mid-write."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backupctl.durable import fsync_dir
from backupctl.errors import StorageError


class _OpenPack:
    """A pack open for reading, closed when the last reference to it goes (the store's, or that of
    a read still under way), not before."""

    __slots__ = ("fd",)

    def __init__(self, path: Path) -> None:
        self.fd = -1                                  # __del__ runs even when the open fails
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


class FileStore:
    OPEN_READERS = 64                     # packs kept open for get_range, the most recently read

    def __init__(self, url: str) -> None:
        self.url = url
        path = unquote(urlsplit(url).path) if url.startswith("file://") else url
        self.root = Path(path).expanduser().absolute()
        self._readers: OrderedDict[str, _OpenPack] = OrderedDict()
        self._readers_lock = threading.Lock()

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        _make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(path.parent)

    def get(self, name: str) -> bytes:
        with open(self._path(name), "rb") as f:
            return f.read()

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        # The file is held here until the read returns: evicted meanwhile, it closes only after.
        reader = self._reader(name)
        return os.pread(reader.fd, length, offset)

    def _reader(self, name: str) -> _OpenPack:
        """The object opened for reading, kept open between calls: a restore reads thousands of
        ranges from a few packs, and opening and closing the file around each read cost three
        system calls (and three waits for the GIL) for one. Ranges are read from packs only,
        which never change once written. An evicted file is closed when its last reader is done
        with it (reference counting), so no descriptor is closed under a read."""
        with self._readers_lock:
            f = self._readers.get(name)
            if f is not None:
                self._readers.move_to_end(name)
                return f
        f = _OpenPack(self._path(name))
        with self._readers_lock:          # delete() unlinks under it: checked and kept at one time
            if os.fstat(f.fd).st_nlink == 0:
                return f                  # deleted since it was opened: this read, and no more
            self._readers[name] = f
            while len(self._readers) > self.OPEN_READERS:
                self._readers.popitem(last=False)
        return f

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._path(prefix.rstrip("/")) if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base, onerror=_unless_gone):
            # relpath once per directory, not per file: it costs more than the stat below
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            head = "" if rel == "." else rel + "/"
            for fname in files:
                if fname.startswith(".tmp-"):
                    continue
                full = os.path.join(dirpath, fname)
                name = head + fname
                if name.startswith(prefix):
                    try:
                        yield name, os.path.getsize(full)
                    except FileNotFoundError:  # deleted while listing
                        continue

    def delete(self, name: str) -> None:
        with self._readers_lock:          # no file opened meanwhile is kept (see _reader)
            self._readers.pop(name, None)  # its space is freed once no read holds it
            try:
                os.unlink(self._path(name))
            except FileNotFoundError:
                pass

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def close(self) -> None:
        with self._readers_lock:
            self._readers.clear()         # each closes when no read holds it any more

    def remove_stale_temporaries(self, older_than: float = 3600) -> int:
        """Temporary files of writers killed mid-write; only this store knows they exist."""
        removed, cutoff = 0, time.time() - older_than
        for dirpath, _dirs, files in os.walk(self.root):
            for fname in files:
                full = os.path.join(dirpath, fname)
                try:
                    if fname.startswith(".tmp-") and os.path.getmtime(full) < cutoff:
                        os.unlink(full)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create repository directory {self.root}: {exc.strerror}",
                               "check the path and its permissions") from exc


def _make_dirs(path: Path) -> None:
    """mkdir -p, each new directory's entry fsynced in its parent: a pack or index file that
    survives a crash is found where it was written (data/ab/ on first use)."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:            # another writer made it meanwhile: synced all the same
        pass
    fsync_dir(path.parent)


def _unless_gone(exc: OSError) -> None:
    """A directory that cannot be listed (EIO on a NAS, permissions) fails the listing: read as
    empty, an archive would look as if it had no WAL and a restore would end its recovery early."""
    if not isinstance(exc, FileNotFoundError):       # removed while listing (gc): nothing to miss
        raise StorageError(f"cannot list {exc.filename}: {exc.strerror}",
                           "check the repository's disk or mount and its permissions") from exc
