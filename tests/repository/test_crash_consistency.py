"""Invariant 2: kill -9 at any moment leaves a repository that check passes, without the dead snapshot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc
from backupctl.repository.restore import restore_snapshot
from tests.conftest import PASSWORD
from tests.helpers import tree_digest, write_random


# backupctl whose N-th stored pack never returns: the other threads go on until their buffers run out.
_HOLD_AFTER_PACKS = """
import sys, threading
from repo_plugins import fs
from backupctl.cli import main
hold_at, stored, put = int(sys.argv[1]), [0], fs.FileStore.put
def held_put(self, name, data):
    put(self, name, data)
    if name.startswith("data/"):
        stored[0] += 1
        if stored[0] >= hold_at:
            threading.Event().wait()
fs.FileStore.put = held_put
main(sys.argv[2:])
"""


def _count_packs(root: Path) -> int:
    """Complete packs only: a killed writer may also leave a temporary file, which is not a pack."""
    return sum(1 for p in (root / "data").rglob("*") if p.is_file() and len(p.name) == 64)


@pytest.mark.parametrize("kill_after_packs", [1, 3, 6])
def test_kill_9_mid_backup_leaves_a_consistent_repository(fs_repo_url, tmp_path, kill_after_packs):
    src = tmp_path / "src"
    for i in range(6):
        write_random(src / f"part{i}.bin", 12 * 1024 * 1024, seed=i)
    keep = tmp_path / "keep"
    write_random(keep / "small.bin", 1024 * 1024, seed=42)
    repo = Repository.init(fs_repo_url, PASSWORD, pack_size=4 * 1024 * 1024)
    kept = backup_paths(repo, [str(keep)])
    root = Path(fs_repo_url)
    packs_before = _count_packs(root)

    # The real CLI, held at the kill point: the whole backup takes ~0.6 s here, too short to race.
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_AFTER_PACKS, str(kill_after_packs), "snapshot", "create",
                             "--repo", fs_repo_url, str(src)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _count_packs(root) < packs_before + kill_after_packs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the backup finished before it could be killed"

    repo = Repository.open(fs_repo_url, PASSWORD)
    assert [s.id for s in repo.snapshots()] == [kept.id]          # the dead backup is invisible
    result = check_repository(repo)
    assert result.ok, result.errors
    assert _count_packs(root) > packs_before                       # it did leave data behind...
    report = gc(Repository.open(fs_repo_url, PASSWORD))             # ...which gc reclaims (the dead lock is stale)
    assert report.packs_deleted >= 1 and report.plans_waiting == 0
    assert check_repository(Repository.open(fs_repo_url, PASSWORD), read_data=True).ok
    restore_snapshot(Repository.open(fs_repo_url, PASSWORD), kept, str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(keep)


def test_kill_9_mid_gc_leaves_a_consistent_repository(fs_repo_url, tmp_path):
    repo = Repository.init(fs_repo_url, PASSWORD, pack_size=1024 * 1024)
    snaps = []
    for i in range(4):
        d = tmp_path / f"src{i}"
        write_random(d / "f.bin", 6 * 1024 * 1024, seed=100 + i)
        snaps.append((backup_paths(repo, [str(d)]), d))
    for snap, _ in snaps[:3]:
        repo.forget(snap)
    root = Path(fs_repo_url)
    packs_before = _count_packs(root)
    proc = subprocess.Popen(["backupctl", "repo", "gc", "--repo", fs_repo_url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _count_packs(root) == packs_before and proc.poll() is None:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    result = check_repository(Repository.open(fs_repo_url, PASSWORD), read_data=True)
    assert result.ok, result.errors
    gc(Repository.open(fs_repo_url, PASSWORD))
    assert check_repository(Repository.open(fs_repo_url, PASSWORD), read_data=True).ok
    last, last_src = snaps[3]
    restore_snapshot(Repository.open(fs_repo_url, PASSWORD), last, str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(last_src)
