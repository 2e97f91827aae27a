"""Locks: conflicting operations are refused clearly; locks of dead processes are ignored."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import pytest

from backupctl.errors import LockedError
from backupctl.repository import Repository
from backupctl.repository import lock as lock_module
from backupctl.repository.backup import Archiver, backup_stream
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc
from backupctl.repository.lock import Lock, list_locks
from tests.conftest import PASSWORD


def test_exclusive_lock_conflicts_with_a_running_backup(fs_repo_url):
    repo = Repository.init(fs_repo_url, PASSWORD)
    shared = repo.lock("shared", "backup")
    with pytest.raises(LockedError, match=r"shared lock by .*\(backup"):
        repo.lock("exclusive", "migration")
    assert len(list_locks(repo.store, repo.key)) == 1   # the refused lock cleaned up after itself
    second_gc = repo.lock("gc", "gc")
    with pytest.raises(LockedError, match="gc lock"):
        repo.lock("gc", "gc")
    second_gc.release()
    shared.release()
    repo.lock("exclusive", "migration").release()


def test_lock_of_a_dead_process_is_stale_and_ignored(fs_repo_url):
    repo = Repository.init(fs_repo_url, PASSWORD)
    code = ("from backupctl.repository import Repository; import os; "
            f"r = Repository.open({fs_repo_url!r}, {PASSWORD!r}); r.lock('exclusive', 'crashy'); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    [dead] = list_locks(repo.store, repo.key)
    assert dead.is_stale() and dead.purpose == "crashy"
    repo.lock("exclusive", "after the crash").release()


def test_a_lock_that_was_removed_cannot_commit(fs_repo_url):
    repo = Repository.init(fs_repo_url, PASSWORD)
    lock = Lock(repo.store, repo.key, "shared", "backup").acquire()
    repo.store.delete(lock.name)
    with pytest.raises(LockedError, match="not committed"):
        lock.check_still_held()
    lock.release()


def test_repo_locks_lists_and_unlock_removes_only_stale_locks_unless_told(fs_repo_url):
    import json

    from tests.repository.test_cli import run

    repo = Repository.init(fs_repo_url, PASSWORD)
    code = ("from backupctl.repository import Repository; import os; "
            f"r = Repository.open({fs_repo_url!r}, {PASSWORD!r}); r.lock('shared', 'died'); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    live = repo.lock("shared", "still running")
    env = {"BACKUPCTL_PASSWORD": PASSWORD}
    listed = json.loads(run("repo", "locks", "--repo", fs_repo_url, "--json", env=env).stdout)
    assert {(entry["purpose"], entry["stale"]) for entry in listed} == {("died", True), ("still running", False)}

    out = run("repo", "unlock", "--repo", fs_repo_url, env=env).stdout.decode()
    assert "removed shared lock" in out and "(died" in out and "removed 1 lock(s)" in out
    assert [info.purpose for info in list_locks(repo.store, repo.key)] == ["still running"]
    live.check_still_held()                                    # the live lock was left alone

    removed = json.loads(run("repo", "unlock", "--repo", fs_repo_url, "--remove-all", "--json", env=env).stdout)
    assert [entry["purpose"] for entry in removed["removed"]] == ["still running"]
    assert list_locks(repo.store, repo.key) == []
    with pytest.raises(LockedError, match="went stale or was removed"):
        live.check_still_held()
    live._stop.set()


# From a review: the refresh thread set the refresh time before writing it and refreshed again after
# a gap, so a lock every other process judged stale (failed refreshes, a paused process) passed
# check_still_held, and a writer committed a snapshot reusing a blob gc deleted meanwhile.

class _LockWritesDown:
    """The store, with lock writes failing (mode "fail") or hanging (mode "hang": a paused process)
    while ``down`` is set."""

    def __init__(self, store, mode: str) -> None:
        self._store, self.mode = store, mode
        self.down = threading.Event()
        self.up = threading.Event()

    def put(self, name, data):
        if name.startswith("locks/") and self.down.is_set():
            if self.mode == "fail":
                raise OSError("lock write refused (network, throttling)")
            self.up.wait()
        return self._store.put(name, data)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_a_lock_others_may_have_judged_stale_cannot_commit(fs_repo_url, monkeypatch, mode):
    monkeypatch.setattr(lock_module, "STALE_AFTER", 2.0)
    monkeypatch.setattr(lock_module, "REFRESH_EVERY", 0.2)
    Repository.init(fs_repo_url, PASSWORD).close()
    data = os.urandom(600_000)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        old = backup_stream(repo, io.BytesIO(data), "old")
        repo.forget(old)                                       # its blobs are unused now
    with Repository.open(fs_repo_url, PASSWORD) as writer:
        writer.store = flaky = _LockWritesDown(writer.store, mode)
        with writer.lock("shared", "backup") as lock:
            archiver = Archiver(writer)                        # index read: the old blobs are known
            flaky.down.set()
            time.sleep(2.6)                                    # others now judge the lock stale
            with Repository.open(fs_repo_url, PASSWORD) as other:
                assert all(lk.is_stale() for lk in list_locks(other.store, other.key) if lk.kind == "shared")
                report = gc(other)                             # so gc waits for nobody and deletes
                assert report.packs_deleted >= 1
            flaky.up.set()
            flaky.down.clear()
            time.sleep(0.5)
            archiver.add_stream(io.BytesIO(data), "again")     # dedups against the deleted pack
            try:
                with pytest.raises(LockedError, match="went stale"):   # the refreshes did not revive it
                    archiver.commit(paths=["again"], tags=[], parent=None, metadata=None, lock=lock,
                                    started=time.monotonic(), hostname=None)
            finally:
                archiver.close()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert not repo.snapshots() and check_repository(repo).ok
