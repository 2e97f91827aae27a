"""Engines may store a file in their own encoding; only a decoder restores it, and unchanged
entries of a parent are never confused with encoded ones."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import pytest

from backupctl.errors import UsageError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.restore import restore_snapshot
from backupctl.repository.tree import walk_tree
from tests.conftest import PASSWORD
from tests.helpers import back_up_files


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
    repo, snap = back_up_files(fs_repo_url, src, {"a.rel": b"relation data " * 100_000, "b.txt": b"plain"},
                               content_hook=hook)
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


class Ranges(io.BytesIO):
    """A toy layered encoding: the byte ranges that differ from the parent's copy, at any offset and
    of any length (PostgreSQL's pages are aligned to windows; an engine's patches need not be)."""

    encoding = "ranges-v1"
    END = 2**64 - 1

    def __init__(self, path: str, parent: bytes) -> None:
        data = Path(path).read_bytes()
        out, at = [], 0
        while at < len(data):
            if at < len(parent) and data[at] == parent[at]:
                at += 1
                continue
            stop = at
            while stop < len(data) and (stop >= len(parent) or data[stop] != parent[stop]):
                stop += 1
            out.append(struct.pack("<QQ", at, stop - at) + data[at:stop])
            at = stop
        super().__init__(b"".join(out) + struct.pack("<QQ", self.END, len(data)))
        self.logical_size = len(data)


def ranges_patches(node, blobs):
    """Yields the ranges in lists of one to three, as an engine batches them however it likes."""
    stream, at, batch = b"".join(blobs), 0, []
    while True:
        offset, length = struct.unpack_from("<QQ", stream, at)
        if offset == Ranges.END:
            if batch:
                yield batch
            return length
        batch.append((offset, memoryview(stream)[at + 16:at + 16 + length]))
        at += 16 + length
        if len(batch) == 1 + offset % 3:
            yield batch
            batch = []


def test_layered_patches_at_any_offset_are_laid_across_windows(fs_repo_url, tmp_path, monkeypatch):
    """Patches that start anywhere, run into the next window or over several, past the base's end,
    and past the end a later layer truncates the file to."""
    from backupctl.repository import restore as restore_module

    monkeypatch.setattr(restore_module, "WINDOW", 64 * 1024)
    monkeypatch.setattr(restore_module, "DIRECT_MIN", 0)
    rng = random.Random(5)
    src = tmp_path / "src"
    src.mkdir()
    base = rng.randbytes(1_000_003)
    (src / "f.rel").write_bytes(base)
    repo = Repository.init(fs_repo_url, PASSWORD)
    chain = [backup_paths(repo, [str(src)])]
    grown = bytearray(base)
    for at, length in [(5, 3), (65_530, 20), (100_000, 150_000), (131_071, 1), (999_990, 13)]:
        grown[at:at + length] = rng.randbytes(length)
    grown += rng.randbytes(70_001)                            # past the base, over a window
    cut = bytearray(grown[:1_040_000])                        # inside the patch at 999,990: its tail goes
    cut[7:9] = b"xy"
    for content, parent in ((grown, base), (cut, bytes(grown))):
        (src / "f.rel").write_bytes(content)
        chain.append(backup_paths(repo, [str(src)], parent=chain[-1],
                                  content_hook=lambda node, abspath, old, p=parent: Ranges(abspath, p)))
    nodes = [{n.path: n for n in walk_tree(repo, snap.tree)}["f.rel"] for snap in chain]
    assert [n.encoding for n in nodes] == [None, "ranges-v1", "ranges-v1"]
    for k, expected in ((1, grown), (2, cut)):
        out = tmp_path / f"out{k}"
        restore_snapshot(repo, chain[k], str(out), layers=lambda node, k=k: nodes[:k + 1], patches=ranges_patches)
        assert (out / "f.rel").read_bytes() == bytes(expected)
