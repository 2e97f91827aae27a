"""Engines may store a file in their own encoding; only a decoder restores it, and unchanged
entries of a parent are never confused with encoded ones."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from backupctl.errors import UsageError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.restore import restore_snapshot
from backupctl.repository.tree import walk_tree
from tests.conftest import PASSWORD


class Reversed(io.BytesIO):
    """A toy encoding: the file's bytes reversed."""

    encoding = "reversed-v1"

    def __init__(self, path: str) -> None:
        data = Path(path).read_bytes()
        super().__init__(data[::-1])
        self.logical_size = len(data)


def hook(node, abspath, old):
    return Reversed(abspath) if node.path.endswith(".rel") else None


def test_encoded_entries_round_trip_through_the_engine_decoder(fs_repo_url, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.rel").write_bytes(b"relation data " * 100_000)
    (src / "b.txt").write_bytes(b"plain")
    repo = Repository.init(fs_repo_url, PASSWORD)
    snap = backup_paths(repo, [str(src)], content_hook=hook)
    nodes = {n.path: n for n in walk_tree(repo, snap.tree)}
    assert nodes["a.rel"].encoding == "reversed-v1" and nodes["a.rel"].logical_size == 1_400_000
    assert nodes["b.txt"].encoding is None
    assert snap.summary["bytes_total"] == 1_400_000 + 5

    with pytest.raises(UsageError, match="reversed-v1 encoding"):
        restore_snapshot(repo, snap, str(tmp_path / "refused"))

    def decode(node, path, blobs):
        Path(path).write_bytes(b"".join(blobs)[::-1])

    restore_snapshot(repo, snap, str(tmp_path / "out"), decode=decode)
    assert (tmp_path / "out" / "a.rel").read_bytes() == (src / "a.rel").read_bytes()
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"plain"

    # Without the hook, the next backup must not take the encoded entry as the file's content.
    plain = backup_paths(repo, [str(src)], parent=snap)
    restore_snapshot(repo, plain, str(tmp_path / "plain"))
    assert (tmp_path / "plain" / "a.rel").read_bytes() == (src / "a.rel").read_bytes()
