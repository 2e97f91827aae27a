"""check finds every kind of damage and names the snapshots it affects; damaged reads fail loudly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backupctl.errors import IntegrityError, RepositoryError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.check import check_repository
from backupctl.repository.restore import restore_snapshot
from tests.conftest import PASSWORD
from tests.helpers import make_tree, write_random


@pytest.fixture
def repo_with_two_snapshots(fs_repo_url, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_tree(a, seed=1)
    write_random(b / "big.bin", 3 * 1024 * 1024, seed=99)
    repo = Repository.init(fs_repo_url, PASSWORD, pack_size=4 * 1024 * 1024)
    sa = backup_paths(repo, [str(a)])
    sb = backup_paths(repo, [str(b)])
    assert check_repository(Repository.open(fs_repo_url, PASSWORD), read_data=True).ok
    return Path(fs_repo_url), sa, sb


def _objects(root: Path, prefix: str) -> list[Path]:
    return sorted(p for p in (root / prefix).rglob("*") if p.is_file())


def _pack_of(repo_root: Path, snap) -> Path:
    """A data pack that holds a chunk of ``snap`` (and of no other snapshot of the fixture)."""
    repo = Repository.open(str(repo_root), PASSWORD)
    from backupctl.repository.pack import pack_name
    from backupctl.repository.tree import walk_tree

    for node in walk_tree(repo, snap.tree):
        if node.chunks:
            entry = repo.index.lookup(bytes.fromhex(node.chunks[-1]))
            return repo_root / pack_name(entry.pack)
    raise AssertionError("snapshot has no data")


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_byte_in_a_pack_is_found_by_read_data_and_names_the_snapshot(repo_with_two_snapshots):
    root, sa, sb = repo_with_two_snapshots
    pack = _pack_of(root, sb)
    _flip_byte(pack, 100)
    assert check_repository(Repository.open(str(root), PASSWORD)).ok  # structure alone cannot see it
    result = check_repository(Repository.open(str(root), PASSWORD), read_data=True)
    assert not result.ok
    assert sb.id in result.damaged_snapshots and sa.id not in result.damaged_snapshots
    fds = set(os.listdir("/proc/self/fd"))
    with Repository.open(str(root), PASSWORD) as repo, pytest.raises(IntegrityError):
        restore_snapshot(repo, sb, str(root.parent / "out"))
    assert set(os.listdir("/proc/self/fd")) <= fds       # the failed restore left no file open


def test_truncated_pack_is_found_by_the_structure_check(repo_with_two_snapshots):
    root, _sa, sb = repo_with_two_snapshots
    pack = _pack_of(root, sb)
    pack.write_bytes(pack.read_bytes()[:-10])
    result = check_repository(Repository.open(str(root), PASSWORD))
    assert any("bytes, the index says" in e for e in result.errors)
    assert result.damaged_snapshots == [sb.id]


def test_missing_pack_is_found_and_restore_names_it(repo_with_two_snapshots):
    root, _sa, sb = repo_with_two_snapshots
    _pack_of(root, sb).unlink()
    result = check_repository(Repository.open(str(root), PASSWORD))
    assert any("is missing" in e for e in result.errors) and sb.id in result.damaged_snapshots
    with pytest.raises(IntegrityError, match="missing"):
        restore_snapshot(Repository.open(str(root), PASSWORD), sb, str(root.parent / "out"))


def test_tampered_pack_header_is_found(repo_with_two_snapshots):
    root, _sa, sb = repo_with_two_snapshots
    pack = _pack_of(root, sb)
    _flip_byte(pack, pack.stat().st_size - 20)
    result = check_repository(Repository.open(str(root), PASSWORD))
    assert any("failed authentication" in e for e in result.errors)


def test_tampered_index_is_a_clear_error(repo_with_two_snapshots):
    root, _sa, _sb = repo_with_two_snapshots
    _flip_byte(_objects(root, "index")[0], 40)
    result = check_repository(Repository.open(str(root), PASSWORD))
    assert any("index file" in e and "failed authentication" in e for e in result.errors)


def test_tampered_snapshot_is_found(repo_with_two_snapshots):
    root, sa, _sb = repo_with_two_snapshots
    _flip_byte(root / "snapshots" / sa.id, 30)
    result = check_repository(Repository.open(str(root), PASSWORD))
    assert sa.id in result.damaged_snapshots
    assert any("failed authentication" in e for e in result.errors)


def test_unknown_format_version_is_a_clear_error(repo_with_two_snapshots):
    root, _sa, _sb = repo_with_two_snapshots
    cfg = json.loads((root / "config").read_text())
    cfg["version"] = 99
    (root / "config").write_text(json.dumps(cfg))
    with pytest.raises(RepositoryError, match="format version 99.*reads version 1"):
        Repository.open(str(root), PASSWORD)


def test_tampered_config_fails_authentication(repo_with_two_snapshots):
    root, _sa, _sb = repo_with_two_snapshots
    cfg = json.loads((root / "config").read_text())
    data = bytearray(bytes.fromhex(cfg["data"]))
    data[20] ^= 1
    cfg["data"] = data.hex()
    (root / "config").write_text(json.dumps(cfg))
    with pytest.raises(IntegrityError, match="config failed authentication"):
        Repository.open(str(root), PASSWORD)


def test_read_data_subset_reads_part_of_the_packs(repo_with_two_snapshots):
    root, _sa, _sb = repo_with_two_snapshots
    repo = Repository.open(str(root), PASSWORD)
    result = check_repository(repo, read_data=True, subset=0.25)
    assert result.ok and 1 <= result.packs_read < result.packs


def test_not_a_repository(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(RepositoryError, match="no repository at"):
        Repository.open(str(tmp_path / "empty"), PASSWORD)


def _sealed_blobs(repo: Repository, blobs: list[tuple[bytes, int, bytes, int]]):
    """Entries for blobs sealed as a buggy writer could have: (id, flags, payload, raw length) each."""
    from backupctl.repository.pack import DATA, PackWriter, pack_buffer_size, pack_name

    writer = PackWriter(bytearray(pack_buffer_size(1 << 20, 1 << 20)))
    for blob_id, flags, payload, raw_length in blobs:
        writer.seal(repo.key, blob_id, DATA, flags, payload, raw_length)
    pack_id, data, entries = writer.finish(repo.key)
    repo.store.put(pack_name(pack_id), bytes(data))
    return entries


def test_a_blob_that_does_not_match_its_entry_is_refused_whether_read_or_decoded_in_place(fs_repo_url):
    """Both read paths (a new buffer, or decompressed straight into a restore window) return the
    exact bytes or raise: a frame longer or shorter than the entry says, or content of another id."""
    import zstandard

    from backupctl.repository.pack import COMPRESSED, pack_name

    repo = Repository.init(fs_repo_url, PASSWORD)
    data, other = os.urandom(3000) * 4, os.urandom(12000)
    frame = zstandard.ZstdCompressor().compress(data)
    good, longer, shorter, wrong_id, raw_wrong_id, raw_good = _sealed_blobs(repo, [
        (repo.key.blob_id(data), COMPRESSED, frame, len(data)),
        (repo.key.blob_id(data[:5000]), COMPRESSED, frame, 5000),          # the frame goes on past it
        (repo.key.blob_id(data + b"x"), COMPRESSED, frame, len(data) + 1),  # the frame ends before it
        (repo.key.blob_id(other), COMPRESSED, frame, len(data)),
        (repo.key.blob_id(other), 0, data, len(data)),
        (repo.key.blob_id(data), 0, data, len(data)),
    ])
    for entry in (good, raw_good):
        out = bytearray(b"\xff" * (entry.raw_length + 2))
        repo.read_blob_into(entry, memoryview(out)[1:-1])
        assert bytes(out[1:-1]) == data and out[0] == out[-1] == 0xff       # nothing written outside it
        assert repo.open_blob(entry, repo.store.get_range(pack_name(entry.pack), entry.offset, entry.length)) == data
    for entry in (longer, shorter, wrong_id, raw_wrong_id):
        with pytest.raises(IntegrityError, match="does not match its id"):
            repo.read_blob_into(entry, memoryview(bytearray(entry.raw_length)))
        with pytest.raises(IntegrityError, match="does not match its id|does not decompress"):
            repo.open_blob(entry, repo.store.get_range(pack_name(entry.pack), entry.offset, entry.length))


def test_a_check_whose_lock_may_have_looked_stale_says_its_findings_may_be_a_gcs_doing(repo_with_two_snapshots,
                                                                                       monkeypatch):
    """A check whose lock others may have judged stale (refreshes failed, the process paused) may
    have seen a gc delete packs under it: it says so rather than report only 'missing' packs."""
    from backupctl.repository import lock as lock_module

    root, _sa, _sb = repo_with_two_snapshots
    monkeypatch.setattr(lock_module.Lock, "_may_look_stale", lambda self: True)
    result = check_repository(Repository.open(str(root), PASSWORD))
    assert not result.ok and any("may have looked stale" in e for e in result.errors)
