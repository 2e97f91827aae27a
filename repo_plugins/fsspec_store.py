"""Any store fsspec knows (``gcs://``, ``az://``, ``sftp://``, ``memory://`` ...).
Atomicity is whatever the underlying file system gives; prefer the native plugins
(``file``, ``s3``) where they exist."""

from __future__ import annotations

from collections.abc import Iterator

from backupctl.errors import UsageError


class FsspecStore:
    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise UsageError(f"no storage plugin for {url!r}: {exc}",
                             "use a path, file://, s3://, or install the fsspec driver for that scheme") from exc
        self.root = self.root.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def put(self, name: str, data: bytes | memoryview) -> None:
        self.fs.makedirs(self._path(name).rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(self._path(name), bytes(data))

    def get(self, name: str) -> bytes:
        return self.fs.cat_file(self._path(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.fs.cat_file(self._path(name), start=offset, end=offset + length)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not self.fs.exists(base):
            return
        for path, info in self.fs.find(base, detail=True).items():
            name = path[len(self.root):].lstrip("/")  # find() returns paths in url_to_fs form, like root
            if name.startswith(prefix):
                yield name, info.get("size", 0)

    def delete(self, name: str) -> None:
        try:
            self.fs.rm_file(self._path(name))
        except FileNotFoundError:
            pass

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._path(name))

    def size(self, name: str) -> int:
        return self.fs.size(self._path(name))

    def check_writable(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

    def close(self) -> None:
        pass
