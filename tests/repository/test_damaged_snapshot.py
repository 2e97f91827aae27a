"""One damaged snapshot file stops neither listings nor new backups; gc stops on it (it cannot tell
what that snapshot needs) and says how to go on; the snapshot can be forgotten by its id."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from backupctl.errors import IntegrityError
from backupctl.repository import Repository
from backupctl.repository import gc as gc_module
from backupctl.repository.backup import backup_paths
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc
from backupctl.repository.restore import restore_snapshot
from backupctl.repository.snapshot import SNAPSHOTS_PREFIX
from backupctl.services.backups import _forget
from tests.conftest import PASSWORD
from tests.helpers import tree_digest, write_random


def _damage(repo: Repository, snap_id: str) -> None:
    name = SNAPSHOTS_PREFIX + snap_id
    sealed = bytearray(repo.store.get(name))
    sealed[30] ^= 1
    repo.store.put(name, bytes(sealed))


@pytest.fixture
def one_damaged(repo_url, tmp_path):
    src = tmp_path / "src"
    write_random(src / "a.bin", 1 << 20, seed=1)
    repo = Repository.init(repo_url, PASSWORD)
    damaged = backup_paths(repo, [str(src)])
    write_random(src / "b.bin", 1 << 20, seed=2)
    good = backup_paths(Repository.open(repo_url, PASSWORD), [str(src)])
    _damage(repo, damaged.id)
    return repo_url, src, damaged, good


def _packs(url: str) -> set[str]:
    return {n for n, _ in Repository.open(url, PASSWORD).store.list("data/")}


def test_listing_and_new_backups_leave_the_damaged_snapshot_out(one_damaged, tmp_path, caplog):
    url, src, damaged, good = one_damaged
    repo = Repository.open(url, PASSWORD)
    with caplog.at_level(logging.WARNING):
        assert [s.id for s in repo.snapshots()] == [good.id]
    assert f"snapshot forget {damaged.id[:8]}" in caplog.text
    write_random(src / "c.bin", 1 << 20, seed=3)
    third = backup_paths(repo, [str(src)])                    # its parent: the good one
    assert third.parent == good.id and third.summary["bytes_read"] == (src / "c.bin").stat().st_size
    restore_snapshot(Repository.open(url, PASSWORD), third, str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(src)


def test_gc_deletes_nothing_until_the_damaged_snapshot_is_forgotten(one_damaged, tmp_path):
    url, src, damaged, good = one_damaged
    Repository.open(url, PASSWORD).forget(good)           # its data is unused now, but gc cannot know that
    packs = _packs(url)
    with pytest.raises(IntegrityError, match=f"snapshot forget {damaged.id[:8]}") as raised:
        gc(Repository.open(url, PASSWORD))
    assert "deletes nothing" in raised.value.message and _packs(url) == packs

    _forget(Repository.open(url, PASSWORD), damaged.id)  # the catalogue's path: by id, nothing read
    assert not Repository.open(url, PASSWORD).snapshots() and check_repository(Repository.open(url, PASSWORD)).ok
    assert gc(Repository.open(url, PASSWORD)).packs_deleted >= 1


def test_gc_passes_over_a_snapshot_forgotten_after_its_listing(one_damaged, monkeypatch):
    url, _src, damaged, good = one_damaged
    Repository.open(url, PASSWORD).forget(damaged)
    listed = gc_module.list_snapshot_ids
    monkeypatch.setattr(gc_module, "list_snapshot_ids", lambda store: [*listed(store), "ab" * 32])
    report = gc(Repository.open(url, PASSWORD))
    assert report.packs_deleted == 0 and check_repository(Repository.open(url, PASSWORD)).ok


def test_cli_forget_removes_a_snapshot_that_cannot_be_read(tmp_path):
    src = tmp_path / "src"
    write_random(src / "a.bin", 200_000, seed=4)
    env = {**os.environ, "BACKUPCTL_REPO": str(tmp_path / "repo")}
    run = lambda *a: subprocess.run(["backupctl", *a], capture_output=True, text=True, env=env)  # noqa: E731
    assert run("repo", "init").returncode == 0
    assert run("snapshot", "create", str(src)).returncode == 0
    repo = Repository.open(str(tmp_path / "repo"), PASSWORD)
    [snap] = repo.snapshots()
    _damage(repo, snap.id)
    listed = run("snapshot", "list")
    assert listed.returncode == 0 and "no snapshots" in listed.stdout and snap.id[:8] in listed.stderr
    forgotten = run("snapshot", "forget", snap.id[:8])
    assert forgotten.returncode == 0, forgotten.stderr
    assert f"removed snapshot {snap.id[:8]}" in forgotten.stdout
    assert not list(repo.store.list(SNAPSHOTS_PREFIX))
