"""Local disk or NAS mount. Writes go to a temporary name, are fsynced, then renamed, so an
object is either absent or complete even if the machine dies mid-write."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from backupctl.errors import StorageError


class FileStore:
    def __init__(self, url: str) -> None:
        self.url = url
        path = unquote(urlsplit(url).path) if url.startswith("file://") else url
        self.root = Path(path).expanduser().absolute()

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, data: bytes | memoryview) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
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
        _fsync_dir(path.parent)

    def get(self, name: str) -> bytes:
        with open(self._path(name), "rb") as f:
            return f.read()

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        fd = os.open(self._path(name), os.O_RDONLY)
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._path(prefix.rstrip("/")) if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for fname in files:
                if fname.startswith(".tmp-"):
                    continue
                full = os.path.join(dirpath, fname)
                name = os.path.relpath(full, self.root).replace(os.sep, "/")
                if name.startswith(prefix):
                    try:
                        yield name, os.path.getsize(full)
                    except FileNotFoundError:  # deleted while listing
                        continue

    def delete(self, name: str) -> None:
        try:
            os.unlink(self._path(name))
        except FileNotFoundError:
            pass

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def size(self, name: str) -> int:
        return self._path(name).stat().st_size

    def close(self) -> None:
        pass

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
