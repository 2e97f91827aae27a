"""A snapshot's file tree: one JSON object per line, in walk order, stored as tree blobs.

Walk order is depth-first with siblings sorted by name, so a tree can be merged with its
parent's tree in one pass (unchanged files are found without holding either in memory).
Names that are not valid UTF-8 survive through surrogate escapes.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from backupctl.errors import IntegrityError

FILE, DIR, SYMLINK, STREAM = "file", "dir", "symlink", "stream"


@dataclass(slots=True)
class Node:
    path: str
    type: str
    mode: int = 0
    mtime: int = 0          # nanoseconds
    size: int = 0
    chunks: list[str] = field(default_factory=list)
    target: str | None = None
    inode: int = 0
    ctime: int = 0
    uid: int = 0
    gid: int = 0
    # Set when an engine stored this file's content in its own encoding (e.g. only the pages
    # that changed since a parent backup): ``size`` is then the encoded size and
    # ``logical_size`` the file's. Only that engine can restore such an entry.
    encoding: str | None = None
    logical_size: int = 0

    def to_line(self) -> bytes:
        d = {"path": self.path, "type": self.type, "mode": self.mode, "mtime": self.mtime}
        if self.type in (FILE, STREAM):
            d["size"] = self.size
            d["chunks"] = self.chunks
        if self.target is not None:
            d["target"] = self.target
        if self.encoding is not None:
            d.update(encoding=self.encoding, logical_size=self.logical_size)
        if self.inode:
            d.update(inode=self.inode, ctime=self.ctime, uid=self.uid, gid=self.gid)
        return json.dumps(d, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> "Node":
        try:
            return cls(**json.loads(line))
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"a tree entry is malformed ({exc})", "run 'backupctl repo check'") from None

    @property
    def sort_key(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


class TreeSpool:
    """Collects tree lines on disk past a few MiB, so huge trees do not fill memory."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
        self.count = 0

    def add(self, node: Node) -> None:
        self.file.write(node.to_line())
        self.count += 1

    def rewind(self):
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


def parse_lines(blobs: Iterable[bytes]) -> Iterator[Node]:
    """Turn a sequence of tree blobs back into nodes, streaming."""
    rest = b""
    for blob in blobs:
        data = rest + blob
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line:
                yield Node.from_line(line)
    if rest.strip():
        yield Node.from_line(rest)


def walk_tree(repo, tree_ids: list[str]) -> Iterator[Node]:
    return parse_lines(repo.read_blobs([bytes.fromhex(i) for i in tree_ids]))
