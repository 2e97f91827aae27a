"""Object stores that hold repositories.

A store knows nothing of backups: it puts, gets and lists named objects. Names are
slash-separated relative paths such as ``data/3f/3f9a...``. Retries, caching and the
repository format live above this layer.

Stores are found by URL scheme through the ``backupctl.repo_plugins`` entry point
group, so a third party can add one; a plain path means the local file system, and a
scheme no plugin claims falls back to fsspec when fsspec knows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from backupctl.errors import UsageError

ENTRY_POINT_GROUP = "backupctl.repo_plugins"


@runtime_checkable
class Store(Protocol):
    """The whole interface a repository needs from an object store."""

    url: str

    def put(self, name: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``name``; durable and all-or-nothing when it returns."""

    def get(self, name: str) -> bytes:
        """Return the whole object; raise ``FileNotFoundError`` when absent."""

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes from ``offset``; raise ``FileNotFoundError`` when absent.
        Only packs are read by range, and they never change once written: a store may keep
        them open between calls (until ``delete`` or ``close``)."""

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """Yield (name, size) of every object whose name starts with ``prefix``."""

    def delete(self, name: str) -> None:
        """Remove the object; absent objects are not an error."""

    def exists(self, name: str) -> bool:
        """Whether the object exists."""

    def size(self, name: str) -> int:
        """Size in bytes; raise ``FileNotFoundError`` when absent."""

    def close(self) -> None:
        """Release connections."""


def _plugins() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def open_store(url: str) -> Store:
    """Open the store a repository URL names (``/path``, ``file:///path``, ``s3://bucket/prefix``, any fsspec URL)."""
    if not url:
        raise UsageError("no repository given", "pass --repo URL or set BACKUPCTL_REPO")
    scheme = urlsplit(url).scheme if "://" in url else "file"
    plugins = _plugins()
    if scheme in plugins:
        return plugins[scheme].load()(url)
    if scheme == "file":  # running from a source tree without installed entry points
        from repo_plugins.fs import FileStore

        return FileStore(url)
    if scheme == "s3":
        from repo_plugins.s3 import S3Store

        return S3Store(url)
    from repo_plugins.fsspec_store import FsspecStore

    return FsspecStore(url)
