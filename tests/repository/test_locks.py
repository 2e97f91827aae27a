"""Locks: conflicting operations are refused clearly; locks of dead processes are ignored."""

from __future__ import annotations

import subprocess
import sys

import pytest

from backupctl.errors import LockedError
from backupctl.repository import Repository
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
