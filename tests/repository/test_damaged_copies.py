"""A blob stored in several packs (store-everything backups such as wal-push leave copies) stays
readable while one copy is good: restores read another copy, check names no snapshot, and gc keeps a
good copy, never the damaged one alone."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from backupctl.errors import IntegrityError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.check import check_repository
from backupctl.repository.gc import GcReport, _KeptCopies, _repack, gc
from backupctl.repository.pack import pack_name
from backupctl.repository.restore import restore_snapshot, restore_stream
from backupctl.repository.tree import walk_tree
from tests.conftest import PASSWORD

# 6 MB: several chunks, some across the restore's 4 MiB windows (both of its read paths)
SIZE = 6_000_000


def _stored_twice(url: str, tmp_path: Path, data: bytes) -> tuple[str, str]:
    """Two store-everything backups of one file: every blob in two packs. Their snapshot ids."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "f").write_bytes(data)
    Repository.init(url, PASSWORD).close()
    ids = []
    for _ in range(2):
        with Repository.open(url, PASSWORD) as repo:
            ids.append(backup_paths(repo, [str(src)], parent=None, reuse_stored=False).id)
    return ids[0], ids[1]


def _damage_read_copies(url: str, snapshot_id: str, spares_too: bool = False) -> int:
    """Flip a byte inside the copy the index reads of every data blob of the snapshot (and with
    ``spares_too``, inside every other copy). The number of copies damaged."""
    with Repository.open(url, PASSWORD) as repo:
        node = next(n for n in walk_tree(repo, repo.find_snapshot(snapshot_id).tree) if n.chunks)
        copies = [c for cid in node.chunks for c in repo.index.copies(bytes.fromhex(cid))
                  if spares_too or c is repo.index.lookup(bytes.fromhex(cid))]
    for c in copies:
        path = Path(url) / pack_name(c.pack)
        raw = bytearray(path.read_bytes())
        raw[c.offset + c.length // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    return len(copies)


def _restored(url: str, snapshot_id: str, target: Path) -> bytes:
    with Repository.open(url, PASSWORD) as repo:
        restore_snapshot(repo, repo.find_snapshot(snapshot_id), str(target))
    return next(p for p in target.rglob("f")).read_bytes()


def test_a_restore_reads_a_good_copy_when_the_one_the_index_names_is_damaged(fs_repo_url, tmp_path, caplog):
    data = os.urandom(SIZE)
    first, second = _stored_twice(fs_repo_url, tmp_path, data)
    assert _damage_read_copies(fs_repo_url, second) >= 2
    with caplog.at_level(logging.WARNING):
        for n, sid in enumerate((first, second)):
            assert _restored(fs_repo_url, sid, tmp_path / f"out{n}") == data
            with Repository.open(fs_repo_url, PASSWORD) as repo:
                out = io.BytesIO()
                restore_stream(repo, repo.find_snapshot(sid), out, name=next(
                    n.path for n in walk_tree(repo, repo.find_snapshot(sid).tree) if n.chunks))
                assert out.getvalue() == data
    assert "read its copy in pack" in caplog.text


def test_a_restore_fails_when_every_copy_is_damaged(fs_repo_url, tmp_path):
    data = os.urandom(SIZE)
    _, second = _stored_twice(fs_repo_url, tmp_path, data)
    _damage_read_copies(fs_repo_url, second, spares_too=True)
    with pytest.raises(IntegrityError, match="failed authentication"):
        _restored(fs_repo_url, second, tmp_path / "out")


def test_check_names_no_snapshot_while_a_good_copy_is_left(fs_repo_url, tmp_path):
    first, second = _stored_twice(fs_repo_url, tmp_path, os.urandom(SIZE))
    _damage_read_copies(fs_repo_url, second)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo, read_data=True)
    assert result.damaged_snapshots == []
    assert any("corrupted" in e for e in result.errors)              # the damaged pack itself is named
    assert any("good one in another pack" in w for w in result.warnings)


def test_check_names_the_snapshots_when_no_good_copy_is_left(fs_repo_url, tmp_path):
    first, second = _stored_twice(fs_repo_url, tmp_path, os.urandom(SIZE))
    _damage_read_copies(fs_repo_url, second, spares_too=True)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo, read_data=True)
    assert sorted(result.damaged_snapshots) == sorted([first, second])


def test_gc_keeps_the_good_copy_and_drops_the_damaged_one(fs_repo_url, tmp_path):
    """gc keeps one copy of a blob stored twice. It kept the one the index reads without reading
    it: damaged, it reclaimed the good copy, and the data was lost (found in a review)."""
    data = os.urandom(SIZE)
    first, second = _stored_twice(fs_repo_url, tmp_path, data)
    damaged = _damage_read_copies(fs_repo_url, second)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)
    assert report.damaged_copies == damaged and report.copies_verified >= damaged
    assert report.packs_deleted >= 1
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo, read_data=True)
        assert result.ok, result.errors                # the damaged copies went with their pack
    for n, sid in enumerate((first, second)):
        assert _restored(fs_repo_url, sid, tmp_path / f"out{n}") == data


def test_gc_keeps_every_copy_when_none_is_good(fs_repo_url, tmp_path):
    data = os.urandom(SIZE)
    _, second = _stored_twice(fs_repo_url, tmp_path, data)
    damaged = _damage_read_copies(fs_repo_url, second, spares_too=True)
    packs_before = sorted((Path(fs_repo_url) / "data").rglob("*"))
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)
    assert report.damaged_copies == damaged and report.packs_deleted == 0
    assert sorted((Path(fs_repo_url) / "data").rglob("*")) == packs_before


def test_gc_repacks_a_good_copy_of_a_blob_damaged_in_the_pack_it_repacks(fs_repo_url, tmp_path):
    data = os.urandom(SIZE)
    _, second = _stored_twice(fs_repo_url, tmp_path, data)
    _damage_read_copies(fs_repo_url, second)
    messages: list[str] = []
    with Repository.open(fs_repo_url, PASSWORD) as repo, repo.lock("gc", "gc") as lock:
        node = next(n for n in walk_tree(repo, repo.find_snapshot(second).tree) if n.chunks)
        ids = {bytes.fromhex(c) for c in node.chunks}
        damaged_pack = repo.index.lookup(next(iter(ids))).pack
        kept = _KeptCopies(repo.index, ids)
        kept.chosen.update({i: damaged_pack for i in ids})       # as if gc had chosen the damaged copies
        before = set(repo.index.packs)
        report = GcReport()
        _repack(repo, lock, [(damaged_pack, repo.index.pack_entries[damaged_pack])], kept, report, messages.append)
        assert report.blobs_repacked == len(ids)
        repo.reload_index()
        new_packs = set(repo.index.packs) - before
    assert len(new_packs) == 1 and any("repacked its copy from pack" in m for m in messages)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        new_copies = [e for e in repo.index.pack_entries[new_packs.pop()] if e.id in ids]
        assert b"".join(repo.read_copy(e) for e in sorted(new_copies, key=lambda e: node.chunks.index(e.id.hex()))) \
            == data
