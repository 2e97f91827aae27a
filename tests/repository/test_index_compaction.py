"""Index compaction: every backup (every wal-push) writes an index file and every operation reads
them all, so past MAX_INDEX_FILES a writer merges them into one, without losing a pack, beside
readers, backups and gc."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from backupctl.errors import BackupctlError, LockedError
from backupctl.repository import Repository
from backupctl.repository import gc as gc_module
from backupctl.repository.backup import backup_stream
from backupctl.repository.check import check_repository
from backupctl.repository.gc import MAX_INDEX_FILES, compact_index, gc
from backupctl.repository.index import INDEX_PREFIX, load_index
from backupctl.repository.restore import restore_stream
from tests.conftest import PASSWORD


def _index_files(repo: Repository) -> list[str]:
    return [name for name, _ in repo.store.list(INDEX_PREFIX)]


def _push(url: str, n: int) -> tuple[bytes, object]:
    """One small backup from a fresh process's point of view (a new Repository), as wal-push makes."""
    data = os.urandom(20_000 + n)
    with Repository.open(url, PASSWORD) as repo:
        return data, backup_stream(repo, io.BytesIO(data), f"seg-{n}")


def _assert_every_push_restores(url: str, pushed: list[tuple[bytes, object]]) -> None:
    with Repository.open(url, PASSWORD) as repo:
        for data, snap in pushed:
            out = io.BytesIO()
            restore_stream(repo, snap, out)
            assert out.getvalue() == data
        assert check_repository(repo, read_data=True).ok


def test_writers_merge_the_index_files_past_the_limit(repo_url):
    Repository.init(repo_url, PASSWORD)
    pushed = [_push(repo_url, n) for n in range(MAX_INDEX_FILES)]
    with Repository.open(repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == MAX_INDEX_FILES        # up to the limit, one file per push
    pushed.append(_push(repo_url, MAX_INDEX_FILES))               # the one past it merges all but the largest
    with Repository.open(repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == 2
        assert len(repo.index.packs) == MAX_INDEX_FILES + 1      # every pack kept
    pushed += [_push(repo_url, MAX_INDEX_FILES + 1 + n) for n in range(3)]
    with Repository.open(repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == 5                      # the two and three new ones
    _assert_every_push_restores(repo_url, pushed)


def test_a_merge_leaves_the_largest_file_as_it_is(fs_repo_url):
    """gc's consolidated index, or a large backup's, is the largest file: a merge costs what came
    since, not a rewrite of the whole index."""
    Repository.init(fs_repo_url, PASSWORD)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        big_data = os.urandom(24 << 20)                            # some twenty blobs in one index file
        pushed = [(big_data, backup_stream(repo, io.BytesIO(big_data), "big"))]
        (big,) = _index_files(repo)
    pushed += [_push(fs_repo_url, n) for n in range(MAX_INDEX_FILES)]
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        files = _index_files(repo)
        assert big in files and len(files) == 2
    _assert_every_push_restores(fs_repo_url, pushed)


def test_files_a_cut_short_gc_left_are_deleted_never_merged(fs_repo_url):
    """gc wrote its consolidated index and deleted a pack, then died before deleting the old index
    files: they still name the pack. The next merge must take them for what they are (superseded by
    the largest file, which it does not read whole), not merge them into a file nothing supersedes."""
    Repository.init(fs_repo_url, PASSWORD)
    with Repository.open(fs_repo_url, PASSWORD) as repo, repo.lock("gc", "test: no merge yet"):
        pushed = [_push(fs_repo_url, n) for n in range(MAX_INDEX_FILES)]
    _data, forgotten = pushed.pop(0)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        repo.forget(forgotten)
        repo.store = _IndexDeletesFail(repo.store)
        with pytest.raises(OSError):
            gc(repo)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == MAX_INDEX_FILES + 1     # the consolidated one and the old ones
    pushed.append(_push(fs_repo_url, 99))                         # past the limit: the old ones go
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == 2
        result = check_repository(repo, read_data=True)
        assert result.ok and not result.warnings, result.errors + result.warnings
    _assert_every_push_restores(fs_repo_url, pushed)


class _MergeWhileListed:
    """A store whose first index file read comes after another process merged the index files:
    the files listed are gone, the merged one is not in the listing."""

    def __init__(self, store, url: str) -> None:
        self._store, self._url, self.merged = store, url, 0

    def get(self, name: str) -> bytes:
        if name.startswith(INDEX_PREFIX) and not self.merged:
            with Repository.open(self._url, PASSWORD) as other:
                self.merged = compact_index(other)
        return self._store.get(name)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


def test_a_reader_that_listed_files_a_merge_deleted_reads_the_merged_one(fs_repo_url):
    Repository.init(fs_repo_url, PASSWORD)
    with Repository.open(fs_repo_url, PASSWORD) as repo, repo.lock("gc", "test: no merge yet"):
        pushed = [_push(fs_repo_url, n) for n in range(MAX_INDEX_FILES + 2)]
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        store = _MergeWhileListed(repo.store, fs_repo_url)
        index = load_index(store, repo.key, threads=1)
        assert store.merged == MAX_INDEX_FILES + 1                 # all but the largest
        assert len(index.packs) == MAX_INDEX_FILES + 2
        assert all(repo.key.blob_id(data) in index for data, _snap in pushed)
        assert index.file_names == set(_index_files(repo))
    _assert_every_push_restores(fs_repo_url, pushed)


def test_no_merge_beside_a_gc_and_gc_merges_them_itself(fs_repo_url):
    Repository.init(fs_repo_url, PASSWORD)
    with Repository.open(fs_repo_url, PASSWORD) as repo, repo.lock("gc", "test: a gc running"):
        pushed = [_push(fs_repo_url, n) for n in range(MAX_INDEX_FILES + 3)]
        assert len(_index_files(repo)) == MAX_INDEX_FILES + 3   # the writers did not wait, nor merge
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)
        assert report.packs_deleted == 0 and report.index_files_merged == MAX_INDEX_FILES + 2
        assert len(_index_files(repo)) == 2
    _assert_every_push_restores(fs_repo_url, pushed)


def test_gc_waits_for_a_writer_merging_not_for_another_gc(fs_repo_url, monkeypatch):
    monkeypatch.setattr(gc_module, "COMPACTION_WAIT", 2)
    Repository.init(fs_repo_url, PASSWORD)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        with repo.lock("gc", "gc"), pytest.raises(LockedError):
            gc(Repository.open(fs_repo_url, PASSWORD))                 # another gc: at once
        merging = repo.lock("gc", gc_module.COMPACTION)
        threading.Timer(0.5, merging.release).start()
        started = time.monotonic()
        report = gc(Repository.open(fs_repo_url, PASSWORD))             # a merge: waited for
        assert time.monotonic() - started >= 0.5 and report.packs_deleted == 0
        with repo.lock("gc", gc_module.COMPACTION), pytest.raises(LockedError):
            gc(Repository.open(fs_repo_url, PASSWORD))                 # a merge that outlasts the wait


class _IndexDeletesFail:
    """A store that cannot delete index files (the process died right after the merged file, or the
    credentials do not allow deletes)."""

    def __init__(self, store) -> None:
        self._store = store

    def delete(self, name: str) -> None:
        if name.startswith(INDEX_PREFIX):
            raise OSError("injected: cannot delete")
        self._store.delete(name)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


def test_a_merge_cut_short_before_deleting_leaves_a_readable_index(fs_repo_url):
    Repository.init(fs_repo_url, PASSWORD)
    pushed = [_push(fs_repo_url, n) for n in range(MAX_INDEX_FILES)]
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        repo.store = _IndexDeletesFail(repo.store)
        data = os.urandom(30_000)
        snap = backup_stream(repo, io.BytesIO(data), "seg-cut")        # committed although the merge failed
        pushed.append((data, snap))
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        index = repo.index
        assert len(index.file_names) == MAX_INDEX_FILES + 2           # the merged file beside the old ones
        assert len(index.superseded) == MAX_INDEX_FILES
        assert len(index.packs) == MAX_INDEX_FILES + 1
    _assert_every_push_restores(fs_repo_url, pushed)
    pushed.append(_push(fs_repo_url, 99))                               # the next writer deletes them
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == 3                             # merged, the largest, and its own
    _assert_every_push_restores(fs_repo_url, pushed)


def test_merges_that_cannot_delete_do_not_pile_up(fs_repo_url):
    """Credentials without delete permission: one merged copy, not one more per push (from a review)."""
    Repository.init(fs_repo_url, PASSWORD)
    extra = 8
    for n in range(MAX_INDEX_FILES + extra):
        with Repository.open(fs_repo_url, PASSWORD) as repo:
            repo.store = _IndexDeletesFail(repo.store)
            backup_stream(repo, io.BytesIO(os.urandom(20_000 + n)), f"seg-{n}")
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == MAX_INDEX_FILES + extra + 1   # each push's, and one merged
        assert len(repo.index.packs) == MAX_INDEX_FILES + extra


class _SuspendedAfterReading:
    """The merging process's store: once it has read the index files, holding the gc lock, 31
    minutes pass (a VM pause: no lock refresh) and a gc runs elsewhere."""

    def __init__(self, store, url: str, clock: list[float]) -> None:
        self._store, self._url, self._clock, self.gc_report = store, url, clock, None
        self._serial, self._to_read = threading.Lock(), None

    def get(self, name: str) -> bytes:
        with self._serial:                                  # so the last read is the last to finish
            data = self._store.get(name)
            if name.startswith(INDEX_PREFIX) and self.gc_report is None and any(self._store.list("locks/")):
                if self._to_read is None:
                    self._to_read = sum(1 for _ in self._store.list(INDEX_PREFIX))
                self._to_read -= 1
                if not self._to_read:
                    self._clock[0] = 31 * 60                # the lock now looks stale
                    with Repository.open(self._url, PASSWORD) as other:
                        self.gc_report = gc(other)
            return data

    def __getattr__(self, attr):
        return getattr(self._store, attr)


def test_a_merge_whose_lock_went_stale_writes_nothing(fs_repo_url, monkeypatch):
    """From a review: the merge would name the pack the gc deleted meanwhile, and the next backup of
    the same data would dedup against it: a committed snapshot that cannot be restored."""
    Repository.init(fs_repo_url, PASSWORD)
    with Repository.open(fs_repo_url, PASSWORD) as repo, repo.lock("gc", "test: no merge yet"):
        pushed = [_push(fs_repo_url, n) for n in range(MAX_INDEX_FILES + 1)]
    victim_data, victim = pushed.pop(0)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        repo.forget(victim)                                # its pack is unused: the gc deletes it
    real_time, clock = time.time, [0.0]
    monkeypatch.setattr(time, "time", lambda: real_time() + clock[0])
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        repo.store = store = _SuspendedAfterReading(repo.store, fs_repo_url, clock)
        with pytest.raises(BackupctlError):
            compact_index(repo)
    assert store.gc_report is not None and store.gc_report.packs_deleted >= 1
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo)
        assert result.ok, result.errors
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        again = backup_stream(repo, io.BytesIO(victim_data), "seg-again")  # dedups against what the index names
    pushed.append((victim_data, again))
    _assert_every_push_restores(fs_repo_url, pushed)
