"""A lost or damaged index file loses no data: gc keeps the packs it no longer lists but snapshots
need, and ``repo repair index`` lists them again from the packs' own headers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from backupctl.errors import IntegrityError, LockedError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc
from backupctl.repository.index import INDEX_PREFIX
from backupctl.repository.pack import pack_name, read_header
from backupctl.repository.plan import Plan, load_plans, save_plan
from backupctl.repository.repair import repair_index
from backupctl.repository.restore import restore_snapshot
from backupctl.repository.tree import walk_tree
from tests.conftest import PASSWORD
from tests.helpers import tree_digest, write_random


def _open(url: str) -> Repository:
    return Repository.open(url, PASSWORD)


def _index_files(url: str) -> list[str]:
    return sorted(name for name, _size in _open(url).store.list(INDEX_PREFIX))


def _packs(url: str) -> set[str]:
    return {name for name, _size in _open(url).store.list("data/")}


def _data_pack_holding(url: str, snap, path: str) -> bytes:
    """A pack that holds some of ``path``'s data and none of the snapshot's tree."""
    repo = _open(url)
    node = next(n for n in walk_tree(repo, snap.tree) if n.path.endswith(path))
    tree_packs = {repo.index.lookup(bytes.fromhex(t)).pack for t in snap.tree}
    return next(p for p in (repo.index.lookup(bytes.fromhex(c)).pack for c in node.chunks) if p not in tree_packs)


def _restored(url: str, snap, out: Path) -> dict:
    restore_snapshot(_open(url), snap, str(out))
    return tree_digest(out)


@pytest.fixture
def second_backup_needs_lost_index(repo_url, tmp_path):
    """Two backups of a growing directory; the first is forgotten and its index file lost, so the
    second's copy of one.bin lies in a pack no index lists."""
    src = tmp_path / "src"
    write_random(src / "one.bin", 3 << 20, seed=1)
    repo = Repository.init(repo_url, PASSWORD, pack_size=4 << 20)
    first = backup_paths(repo, [str(src)])
    [first_index] = _index_files(repo_url)
    write_random(src / "two.bin", 1 << 20, seed=2)
    second = backup_paths(_open(repo_url), [str(src)])
    _open(repo_url).forget(first)
    _open(repo_url).store.delete(first_index)
    return repo_url, src, second


def test_gc_keeps_a_pack_no_index_lists_while_a_snapshot_needs_it(second_backup_needs_lost_index, tmp_path):
    url, src, second = second_backup_needs_lost_index
    packs = _packs(url)
    result = check_repository(_open(url))
    assert result.damaged_snapshots == [second.id]
    assert any("repair index" in w for w in result.warnings)     # not "gc reclaims them"
    logged: list[str] = []
    report = gc(_open(url), log=logged.append)
    assert report.unindexed_packs_kept == 1 and report.orphan_packs == 0 and report.packs_deleted == 0
    assert any("repair index" in m for m in logged)
    assert _packs(url) == packs and not load_plans(_open(url))   # no plan waits to delete it either

    report = repair_index(_open(url))
    assert report.rewritten and report.packs_added == 1 and report.missing_packs == 0
    assert len(_index_files(url)) == 1
    assert check_repository(_open(url), read_data=True).ok
    assert _restored(url, second, tmp_path / "out") == tree_digest(src)
    assert gc(_open(url)).unindexed_packs_kept == 0


def test_a_gc_plan_made_before_the_index_was_lost_does_not_delete_the_pack(second_backup_needs_lost_index, tmp_path):
    url, src, second = second_backup_needs_lost_index
    [unlisted] = [bytes.fromhex(n.rsplit("/", 1)[1]) for n in _packs(url)
                  if bytes.fromhex(n.rsplit("/", 1)[1]) not in _open(url).index.packs]
    # the plan a gc makes for a pack that was an orphan when it looked (or one made by an older release)
    save_plan(_open(url), Plan(id=os.urandom(16).hex(), created=time.time(), packs=[unlisted.hex()], blobs=[],
                               wait_for=[], complete=True))
    report = gc(_open(url))
    assert report.plans_executed == 1 and report.packs_deleted == 0 and report.unindexed_packs_kept >= 1
    assert pack_name(unlisted) in _packs(url)
    repair_index(_open(url))
    assert _restored(url, second, tmp_path / "out") == tree_digest(src)


def test_a_damaged_index_file_is_replaced_from_the_pack_headers(repo_url, tmp_path):
    src = tmp_path / "src"
    write_random(src / "a.bin", 2 << 20, seed=3)
    write_random(src / "b.bin", 600_000, seed=4)
    snap = backup_paths(Repository.init(repo_url, PASSWORD), [str(src)])
    repo = _open(repo_url)
    [name] = _index_files(repo_url)
    sealed = bytearray(repo.store.get(name))
    sealed[40] ^= 1
    repo.store.put(name, bytes(sealed))
    with pytest.raises(IntegrityError, match="repair index"):
        _open(repo_url).index                 # every command stops here, and says what to do

    report = repair_index(_open(repo_url))
    assert report.damaged_index_files == [name] and report.packs_added == report.packs == len(_packs(repo_url))
    assert _index_files(repo_url) != [name]
    assert _restored(repo_url, snap, tmp_path / "out") == tree_digest(src)
    assert check_repository(_open(repo_url), read_data=True).ok
    again = repair_index(_open(repo_url))
    assert not again.rewritten and again.headers_read == 0 and "nothing to do" in again.summary_line()


def test_entries_of_a_missing_pack_are_dropped_so_the_next_backup_stores_the_data_again(repo_url, tmp_path):
    src = tmp_path / "src"
    write_random(src / "kept.bin", 1 << 20, seed=5)
    write_random(src / "lost.bin", 3 << 20, seed=6)
    first = backup_paths(Repository.init(repo_url, PASSWORD, pack_size=2 << 20), [str(src)])
    lost = _data_pack_holding(repo_url, first, "lost.bin")
    _open(repo_url).store.delete(pack_name(lost))
    assert first.id in check_repository(_open(repo_url)).damaged_snapshots

    report = repair_index(_open(repo_url))
    assert report.missing_packs == 1 and report.packs_added == 0 and lost not in _open(repo_url).index.packs
    second = backup_paths(_open(repo_url), [str(src)])    # its blobs are no longer taken as stored
    assert second.summary["bytes_added"] >= (src / "lost.bin").stat().st_size // 2
    assert _restored(repo_url, second, tmp_path / "out") == tree_digest(src)
    # the same blobs, stored again: the first snapshot is whole again too
    assert check_repository(_open(repo_url), read_data=True).ok
    assert _restored(repo_url, first, tmp_path / "first") == tree_digest(src)


def test_a_pack_whose_header_cannot_be_read_is_left_in_place_and_named(fs_repo_url, tmp_path):
    src = tmp_path / "src"
    write_random(src / "a.bin", 3 << 20, seed=7)
    snap = backup_paths(Repository.init(fs_repo_url, PASSWORD, pack_size=1 << 20), [str(src)])
    repo = _open(fs_repo_url)
    tree_packs = {pack_name(repo.index.lookup(bytes.fromhex(t)).pack) for t in snap.tree}
    [index_file] = _index_files(fs_repo_url)
    repo.store.delete(index_file)
    packs = sorted(_packs(fs_repo_url) - tree_packs)          # a pack of file data only
    packs.extend(sorted(tree_packs))
    path = Path(fs_repo_url) / packs[0]
    data = bytearray(path.read_bytes())
    data[-10] ^= 1                                   # inside the encrypted header
    path.write_bytes(bytes(data))
    damaged = packs[0].rsplit("/", 1)[1]

    report = repair_index(_open(fs_repo_url))
    assert report.damaged_packs == [damaged] and report.packs == len(packs) - 1
    assert packs[0] in _packs(fs_repo_url)           # nothing is deleted
    assert check_repository(_open(fs_repo_url)).damaged_snapshots == [snap.id]
    report = gc(_open(fs_repo_url))                  # snapshots miss blobs: an unreadable unlisted pack stays
    assert report.unindexed_packs_kept == 1 and packs[0] in _packs(fs_repo_url)


def test_a_header_longer_than_the_first_read_is_read_whole(fs_repo_url, tmp_path):
    src = tmp_path / "src"
    for i in range(2200):                            # 2200 blobs in one pack: a header of ~92 KiB
        (src / f"d{i // 100}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i // 100}" / f"f{i}").write_bytes(os.urandom(40) + str(i).encode())
    snap = backup_paths(Repository.init(fs_repo_url, PASSWORD, pack_size=16 << 20), [str(src)])
    repo = _open(fs_repo_url)
    big = max(repo.index.pack_entries.items(), key=lambda kv: len(kv[1]))
    assert len(big[1]) > 2000
    assert read_header(repo.store, repo.key, big[0], repo.index.packs[big[0]]) == big[1]
    for name in _index_files(fs_repo_url):
        repo.store.delete(name)
    assert repair_index(_open(fs_repo_url)).damaged_packs == []
    assert _restored(fs_repo_url, snap, tmp_path / "out") == tree_digest(src)


def test_repair_waits_for_no_one_and_drops_stale_gc_plans(fs_repo_url, tmp_path):
    src = tmp_path / "src"
    write_random(src / "a.bin", 1 << 20, seed=8)
    snap = backup_paths(Repository.init(fs_repo_url, PASSWORD), [str(src)])
    holder = _open(fs_repo_url).lock("shared", "backup")
    with pytest.raises(LockedError):
        repair_index(_open(fs_repo_url))
    _open(fs_repo_url).forget(snap)
    assert gc(_open(fs_repo_url)).plans_waiting == 1        # waits for the holder
    holder.release()
    report = repair_index(_open(fs_repo_url), read_all_packs=True)
    assert report.plans_dropped == 1 and report.headers_read == report.packs and not load_plans(_open(fs_repo_url))
    assert gc(_open(fs_repo_url)).packs_deleted >= 1       # planned again from the new index


def test_a_backup_whose_parent_tree_is_lost_reads_every_file(repo_url, tmp_path, caplog):
    src = tmp_path / "src"
    write_random(src / "a.bin", 1 << 20, seed=10)
    first = backup_paths(Repository.init(repo_url, PASSWORD), [str(src)])
    repo = _open(repo_url)
    repo.store.delete(pack_name(repo.index.lookup(bytes.fromhex(first.tree[0])).pack))
    repair_index(_open(repo_url))                   # the index no longer takes the lost blobs as stored
    second = backup_paths(_open(repo_url), [str(src)], parent=first)     # not stopped by its parent's damage
    assert "parent snapshot's tree cannot be read" in caplog.text
    assert second.summary["bytes_read"] == (src / "a.bin").stat().st_size
    assert _restored(repo_url, second, tmp_path / "out") == tree_digest(src)


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["backupctl", *args], capture_output=True, text=True, env={**os.environ, **env})


def test_cli_repair_index(tmp_path):
    src = tmp_path / "src"
    write_random(src / "a.bin", 1 << 20, seed=9)
    env = {"BACKUPCTL_REPO": str(tmp_path / "repo")}
    assert _cli("repo", "init", env=env).returncode == 0
    assert _cli("snapshot", "create", str(src), env=env).returncode == 0
    [name] = _index_files(str(tmp_path / "repo"))
    (tmp_path / "repo" / name).write_bytes(b"not an index")

    failed = _cli("snapshot", "restore", "latest", str(tmp_path / "out"), env=env)
    assert failed.returncode != 0 and "repair index" in failed.stderr and "Traceback" not in failed.stderr
    text = _cli("repo", "repair", "index", env=env)
    assert text.returncode == 0, text.stderr
    assert "1 damaged index file(s) replaced" in text.stdout
    as_json = json.loads(_cli("repo", "repair", "index", "--json", env=env).stdout)
    assert as_json["rewritten"] is False and as_json["packs"] >= 1 and as_json["damaged_index_files"] == []
    restored = _cli("snapshot", "restore", "latest", str(tmp_path / "out"), env=env)
    assert restored.returncode == 0, restored.stderr
    assert tree_digest(tmp_path / "out") == tree_digest(src)
