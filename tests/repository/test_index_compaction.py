"""Index compaction: every backup (every wal-push) writes an index file and every operation reads
them all, so past MAX_INDEX_FILES a writer merges them into one, without losing a pack, beside
readers, backups and gc."""

from __future__ import annotations

import io
import os

from backupctl.repository import Repository
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
    pushed.append(_push(repo_url, MAX_INDEX_FILES))               # the one past it merges them
    with Repository.open(repo_url, PASSWORD) as repo:
        files = _index_files(repo)
        assert len(files) == 1
        assert len(repo.index.packs) == MAX_INDEX_FILES + 1      # every pack kept
    pushed += [_push(repo_url, MAX_INDEX_FILES + 1 + n) for n in range(3)]
    with Repository.open(repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == 4                      # the merged one and three new ones
    _assert_every_push_restores(repo_url, pushed)


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
        assert store.merged == MAX_INDEX_FILES + 2
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
        assert report.packs_deleted == 0 and report.index_files_merged == MAX_INDEX_FILES + 3
        assert len(_index_files(repo)) == 1
    _assert_every_push_restores(fs_repo_url, pushed)


class _IndexDeletesFail:
    """A store that cannot delete index files (as if the process died right after the merged file)."""

    def __init__(self, store) -> None:
        self._store = store

    def delete(self, name: str) -> None:
        if name.startswith(INDEX_PREFIX):
            raise OSError("injected: the process died here")
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
        assert len(index.superseded) == MAX_INDEX_FILES + 1
        assert len(index.packs) == MAX_INDEX_FILES + 1
    _assert_every_push_restores(fs_repo_url, pushed)
    pushed.append(_push(fs_repo_url, 99))                               # the next writer tidies up
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert len(_index_files(repo)) == 1
    _assert_every_push_restores(fs_repo_url, pushed)
