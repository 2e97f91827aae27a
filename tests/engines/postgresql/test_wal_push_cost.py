"""A WAL push reads none of the repository's index: the server runs it once per segment, and the
index grows with everything the repository holds (a 200 GB database's backups: ~200,000 entries,
~0.4 s to load). It stores every chunk instead, which gc and check handle as any duplicate."""

from __future__ import annotations

import io
import os

from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths, backup_stream
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc
from backupctl.repository.index import INDEX_PREFIX
from engine_tools.postgresql import wal

PASSWORD = "correct horse battery staple"


class _CountingStore:
    """The repository's store, counting the index files read."""

    def __init__(self, store) -> None:
        self._store, self.index_reads = store, 0

    def get(self, name: str) -> bytes:
        self.index_reads += name.startswith(INDEX_PREFIX)
        return self._store.get(name)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


def _segment(pg_wal, name: str, data: bytes) -> str:
    pg_wal.mkdir(parents=True, exist_ok=True)
    (pg_wal / name).write_bytes(data)
    return str(pg_wal / name)


def _push(repo_url: str, path: str, state: str) -> tuple[wal.PushResult, int]:
    with Repository.open(repo_url, PASSWORD) as repo:
        repo.store = counting = _CountingStore(repo.store)
        return wal.push(repo, path, cluster="c", org="default", state_dir=state, tags=[]), counting.index_reads


def _fetched(repo_url: str, name: str, tmp_path, state: str) -> bytes:
    out = tmp_path / f"fetched-{name}"
    with Repository.open(repo_url, PASSWORD) as repo:
        assert wal.fetch(repo, name, str(out), cluster="c", org="default", state_dir=state)
    return out.read_bytes()


def test_a_push_reads_no_index_file_however_much_the_repository_holds(tmp_path):
    repo_url, state, pg_wal = str(tmp_path / "repo"), str(tmp_path / "state"), tmp_path / "data" / "pg_wal"
    with Repository.init(repo_url, PASSWORD) as repo:
        for n in range(5):                                    # other backups: five index files
            backup_stream(repo, io.BytesIO(os.urandom(300_000)), f"base-{n}")
    segment = os.urandom(1 << 20)
    name = "000000010000000000000001"
    pushed, index_reads = _push(repo_url, _segment(pg_wal, name, segment), state)
    assert pushed.stored == [name] and index_reads == 0
    assert _fetched(repo_url, name, tmp_path, state) == segment
    # PostgreSQL asking again for a file archived already compares it with the stored copy, read
    # where its snapshot says its blobs went (no index either), and stores nothing
    again, index_reads = _push(repo_url, str(pg_wal / name), state)
    assert again.stored == [] and index_reads == 0


def test_the_same_bytes_pushed_twice_are_two_copies_gc_and_check_handle(tmp_path):
    repo_url, state, pg_wal = str(tmp_path / "repo"), str(tmp_path / "state"), tmp_path / "data" / "pg_wal"
    Repository.init(repo_url, PASSWORD).close()
    segment = os.urandom(1 << 20)
    first, second = "000000010000000000000001", "000000010000000000000002"
    _push(repo_url, _segment(pg_wal, first, segment), state)
    _push(repo_url, _segment(pg_wal, second, segment), state)
    with Repository.open(repo_url, PASSWORD) as repo:
        assert len(repo.index.packs) == 2                     # stored twice, once per push
        older = next(s for s in repo.snapshots() if s.metadata[wal.ARCHIVE_KEY]["files"][0]["name"] == first)
        repo.forget(older)
        gc(repo)                                              # one copy stays, the one the index reads
    assert _fetched(repo_url, second, tmp_path, state) == segment
    with Repository.open(repo_url, PASSWORD) as repo:
        assert check_repository(repo, read_data=True).ok
        for snap in repo.snapshots():
            repo.forget(snap)
        gc(repo)                                              # nothing uses either copy any more
        assert check_repository(repo, read_data=True).ok and not list(repo.store.list("data/"))


def test_gc_keeps_one_spare_copy_at_most_of_a_chunk_every_push_stores_again(tmp_path):
    """A chunk that repeats across pushes is stored by each (they read no index). gc used to count
    every copy of a used blob as used, and to repack each into a new pack: the copies grew by one a
    gc (from a review). Now a used blob keeps the copy the index reads; the others are reclaimed
    with their packs (one may wait in a pack mostly still used)."""
    repo_url = str(tmp_path / "repo")
    Repository.init(repo_url, PASSWORD).close()
    common = os.urandom(50_000)
    copies, previous = [], None
    for n in range(6):
        src = tmp_path / f"push{n}"
        src.mkdir()
        (src / "common").write_bytes(common)
        (src / "unique").write_bytes(os.urandom(600_000))
        with Repository.open(repo_url, PASSWORD) as repo:
            snap = backup_paths(repo, [str(src)], parent=None, reuse_stored=False)
            if previous is not None:
                repo.forget(previous)
            previous = snap
            gc(repo)
        with Repository.open(repo_url, PASSWORD) as repo:
            blob = repo.key.blob_id(common)
            copies.append(sum(e.id == blob for es in repo.index.entries_by_pack().values() for e in es))
    assert max(copies) <= 2, copies
    with Repository.open(repo_url, PASSWORD) as repo:
        assert check_repository(repo, read_data=True).ok
