"""Invariant 4: gc never deletes data that a kept or running backup needs, even while backups run."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from backupctl.repository import Repository
from backupctl.repository import lock as lock_module
from backupctl.repository.backup import Archiver, _sources, backup_paths, backup_stream
from backupctl.repository.check import check_repository
from backupctl.repository.gc import gc
from backupctl.repository.plan import load_plans
from backupctl.repository.restore import restore_snapshot, restore_stream
from tests.conftest import PASSWORD
from tests.helpers import tree_digest, write_random


def _running_backup(repo_url: str, src: Path):
    """A backup stopped just before its commit: data uploaded, no index or snapshot yet, lock held."""
    repo = Repository.open(repo_url, PASSWORD)
    lock = repo.lock("shared", "backup")
    archiver = Archiver(repo, lock=lock)
    archiver.add_tree(_sources([str(src)]), None)
    archiver.finish_data()
    return repo, lock, archiver


def _commit(archiver, lock, src: Path):
    snap = archiver.commit(paths=[str(src)], tags=[], parent=None, metadata=None,
                           started=time.monotonic(), hostname=None)
    lock.release()
    return snap


def test_gc_never_deletes_chunks_of_a_running_backup(fs_repo_url, tmp_path):
    Repository.init(fs_repo_url, PASSWORD, pack_size=1024 * 1024)
    src = tmp_path / "src"
    write_random(src / "f.bin", 5 * 1024 * 1024, seed=1)
    repo, lock, archiver = _running_backup(fs_repo_url, src)

    report = gc(Repository.open(fs_repo_url, PASSWORD))
    assert report.orphan_packs >= 1            # its packs are not indexed yet...
    assert report.packs_deleted == 0           # ...but the backup holds a lock, so deletion waits
    assert report.plans_waiting == 1

    snap = _commit(archiver, lock, src)
    report = gc(Repository.open(fs_repo_url, PASSWORD))   # the lock is gone: the plan runs, re-checking use
    assert report.plans_executed == 1 and report.packs_deleted == 0
    restore_snapshot(Repository.open(fs_repo_url, PASSWORD), snap, str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(src)


def test_gc_keeps_forgotten_data_that_a_running_backup_reused(fs_repo_url, tmp_path):
    repo = Repository.init(fs_repo_url, PASSWORD, pack_size=1024 * 1024)
    src = tmp_path / "src"
    write_random(src / "f.bin", 5 * 1024 * 1024, seed=2)
    old = backup_paths(repo, [str(src)])
    # A new backup of the same data starts and dedups against the old snapshot's blobs...
    repo2, lock, archiver = _running_backup(fs_repo_url, src)
    assert archiver.saver.stats.blobs_new == 0
    # ...then the old snapshot is forgotten and gc plans to delete its packs.
    repo.forget(old)
    report = gc(Repository.open(fs_repo_url, PASSWORD))
    assert report.packs_deleted == 0 and report.plans_waiting == 1
    snap = _commit(archiver, lock, src)
    report = gc(Repository.open(fs_repo_url, PASSWORD))
    assert report.plans_executed == 1 and report.packs_deleted == 0   # the new snapshot needs them
    assert check_repository(Repository.open(fs_repo_url, PASSWORD), read_data=True).ok
    restore_snapshot(Repository.open(fs_repo_url, PASSWORD), snap, str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(src)


def test_backup_started_after_a_gc_plan_does_not_reuse_doomed_blobs(fs_repo_url, tmp_path):
    repo = Repository.init(fs_repo_url, PASSWORD, pack_size=1024 * 1024)
    src = tmp_path / "src"
    write_random(src / "f.bin", 3 * 1024 * 1024, seed=3)
    old = backup_paths(repo, [str(src)])
    blocker = Repository.open(fs_repo_url, PASSWORD).lock("shared", "restore")  # keeps the plan waiting
    repo.forget(old)
    assert gc(Repository.open(fs_repo_url, PASSWORD)).plans_waiting == 1
    new = backup_paths(Repository.open(fs_repo_url, PASSWORD), [str(src)], parent=None)
    assert new.summary["blobs_new"] >= 3       # fresh copies, not the blobs about to be deleted
    blocker.release()
    report = gc(Repository.open(fs_repo_url, PASSWORD))
    assert report.packs_deleted >= 1           # the old copies go...
    restore_snapshot(Repository.open(fs_repo_url, PASSWORD), new, str(tmp_path / "out"))  # ...the new stay
    assert tree_digest(tmp_path / "out") == tree_digest(src)
    assert check_repository(Repository.open(fs_repo_url, PASSWORD), read_data=True).ok


def test_gc_repacks_partly_used_packs_and_frees_space(fs_repo_url, tmp_path):
    repo = Repository.init(fs_repo_url, PASSWORD, pack_size=8 * 1024 * 1024)
    keep, drop = tmp_path / "keep", tmp_path / "drop"
    write_random(keep / "k.bin", 2 * 1024 * 1024, seed=4)
    write_random(drop / "d.bin", 5 * 1024 * 1024, seed=5)
    both = backup_paths(repo, [str(keep), str(drop)])      # one pack holding both
    only_keep = backup_paths(repo, [str(keep)])
    repo.forget(both)
    report = gc(Repository.open(fs_repo_url, PASSWORD))
    assert report.packs_repacked == 1 and report.packs_deleted >= 1
    assert report.bytes_freed > 0
    restore_snapshot(Repository.open(fs_repo_url, PASSWORD), only_keep, str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(keep)
    assert check_repository(Repository.open(fs_repo_url, PASSWORD), read_data=True).ok


WORKER = r"""
import sys, time
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.gc import gc
from backupctl.repository.plan import load_plans
url, role, arg = sys.argv[1], sys.argv[2], sys.argv[3]
if role == "backup":
    for i in range(3):
        s = backup_paths(Repository.open(url, "%s"), [arg], parent=None)
        print(s.id, flush=True)
else:
    end = time.monotonic() + float(arg)
    while time.monotonic() < end:
        repo = Repository.open(url, "%s")
        snaps = repo.snapshots()
        if len(snaps) > 2:
            repo.forget(snaps[0])  # make garbage while backups run
        gc(repo)
"""


def test_concurrent_backups_with_gc_running_then_every_snapshot_restores(fs_repo_url, tmp_path):
    Repository.init(fs_repo_url, PASSWORD, pack_size=1024 * 1024)
    sources = []
    for i in range(3):
        d = tmp_path / f"src{i}"
        write_random(d / "own.bin", 3 * 1024 * 1024, seed=10 + i)
        write_random(d / "shared.bin", 2 * 1024 * 1024, seed=99)  # the same data in every source
        sources.append(d)
    script = WORKER % (PASSWORD, PASSWORD)
    backups = [subprocess.Popen([sys.executable, "-c", script, fs_repo_url, "backup", str(d)],
                                stdout=subprocess.PIPE, text=True) for d in sources]
    collector = subprocess.Popen([sys.executable, "-c", script, fs_repo_url, "gc", "8"])
    made = {}
    for proc, d in zip(backups, sources):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        for sid in out.split():
            made[sid] = d
    assert collector.wait(timeout=300) == 0
    gc(Repository.open(fs_repo_url, PASSWORD))          # finish any waiting plan
    repo = Repository.open(fs_repo_url, PASSWORD)
    remaining = repo.snapshots()
    assert remaining and len(made) == 9
    assert check_repository(repo, read_data=True).ok
    for snap in remaining:
        out = tmp_path / f"out-{snap.short_id}"
        restore_snapshot(repo, snap, str(out))
        assert tree_digest(out) == tree_digest(made[snap.id])


def test_a_session_reloading_its_index_sees_other_writers_and_gc_and_else_keeps_it(fs_repo_url, tmp_path):
    """reload_index keeps the index in memory only while no index file came or went and no gc plan
    changed: a long-lived session (a restore fetching WAL) still sees what others wrote meanwhile."""
    src = tmp_path / "src"
    write_random(src / "a", 300_000, seed=1)
    reader = Repository.init(fs_repo_url, PASSWORD)
    first = backup_paths(reader, [str(src)])
    index = reader.reload_index()
    assert reader.reload_index() is index                          # nothing changed: not read again

    writer = Repository.open(fs_repo_url, PASSWORD)
    write_random(src / "b", 300_000, seed=2)
    second = backup_paths(writer, [str(src)])
    fresh = reader.reload_index()
    assert fresh is not index and fresh.blobs.keys() > index.blobs.keys()
    restore_snapshot(reader, reader.find_snapshot(second.id), str(tmp_path / "out"))
    assert tree_digest(tmp_path / "out") == tree_digest(src)

    writer.forget(writer.find_snapshot(second.id))                 # b's data goes (no lock held: at once)
    gc(writer)
    swept = reader.reload_index()
    assert swept is not fresh and len(swept.blobs) < len(fresh.blobs) and swept.file_names != fresh.file_names
    restore_snapshot(reader, reader.find_snapshot(first.id), str(tmp_path / "first"))
    assert (tmp_path / "first" / "a").read_bytes() == (src / "a").read_bytes()


# A store-everything backup (reuse_stored=False, as wal-push: it reads neither the index nor the gc
# plans) racing a plan that dooms a pack holding the same blob (from a review).
def _file(tmp_path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _restores(url: str, snap_id: str, name: str, data: bytes) -> None:
    with Repository.open(url, PASSWORD) as repo:
        out = io.BytesIO()
        restore_stream(repo, repo.find_snapshot(snap_id), out, name=name)
        assert out.getvalue() == data
        assert check_repository(repo, read_data=True).ok


def _pushed_then_forgotten(url: str, tmp_path) -> bytes:
    """A new repository with one forgotten store-everything backup: its pack is unused; its data."""
    Repository.init(url, PASSWORD).close()
    data = os.urandom(700_000)
    with Repository.open(url, PASSWORD) as repo:
        repo.forget(backup_paths(repo, [_file(tmp_path, "a", data)], parent=None, reuse_stored=False))
    return data


def test_a_push_after_the_plan_stores_the_doomed_blob_again(fs_repo_url, tmp_path):
    data = _pushed_then_forgotten(fs_repo_url, tmp_path)
    with Repository.open(fs_repo_url, PASSWORD) as holder, holder.lock("shared", "restore"):
        with Repository.open(fs_repo_url, PASSWORD) as repo:
            assert gc(repo).plans_waiting == 1                    # the old pack is doomed, waiting
        with Repository.open(fs_repo_url, PASSWORD) as repo:     # a push that reads no plan
            new = backup_paths(repo, [_file(tmp_path, "b", data)], parent=None, reuse_stored=False)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)
        assert report.plans_executed == 1 and report.packs_deleted == 1
    _restores(fs_repo_url, new.id, "b", data)


def test_a_push_running_while_the_plan_is_written(fs_repo_url, tmp_path):
    data = _pushed_then_forgotten(fs_repo_url, tmp_path)
    path = _file(tmp_path, "b", data)
    with Repository.open(fs_repo_url, PASSWORD) as pusher, pusher.lock("shared", "backup") as lock:
        archiver = Archiver(pusher, lock=lock, reuse_stored=False)
        try:
            archiver.add_tree(_sources([path]), None)
            archiver.finish_data()                                 # its pack uploaded, not indexed
            with Repository.open(fs_repo_url, PASSWORD) as repo:
                gc(repo)
                plans = load_plans(repo)
                assert len(plans) == 1 and len(plans[0].packs) == 2    # the old pack and the orphan
            new = archiver.commit(paths=[path], tags=[], parent=None, metadata=None,
                                  started=time.monotonic(), hostname=None)
        finally:
            archiver.close()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert gc(repo).plans_executed >= 1     # and the spare copy of the blob, since reclaimed
    _restores(fs_repo_url, new.id, "b", data)


def test_a_gc_refused_between_its_plan_writes_leaves_no_plan_that_skips_running_backups(fs_repo_url, monkeypatch):
    """gc writes the plan, then again with the locks it must wait for. A lock check between the two
    (the first write slow) left a plan waiting for nobody: the next gc executed it at once, under a
    backup that was running when the plan was written (it read no plan, so it reused doomed
    blobs). The second write only adds waits, so it is never refused (from a review)."""
    clock = types.SimpleNamespace(now=time.time())
    monkeypatch.setattr(lock_module, "time", types.SimpleNamespace(time=lambda: clock.now))
    data = _pushed_then_forgotten_stream(fs_repo_url)
    with Repository.open(fs_repo_url, PASSWORD) as writer, writer.lock("shared", "backup") as backup_lock:
        archiver = Archiver(writer, lock=backup_lock)                  # no plan yet: nothing excluded
        try:
            with Repository.open(fs_repo_url, PASSWORD) as first:
                real = first.store

                class SlowPlanWrite:
                    def put(self, name, body):
                        if name.startswith("gc/") and not list(real.list("gc/")):
                            for _ in range(2):                         # the first plan write is slow;
                                clock.now += 8 * 60                    # the backup's refreshes work
                                backup_lock._write(clock.now)
                        return real.put(name, body)

                    def __getattr__(self, attr):
                        return getattr(real, attr)

                first.store = SlowPlanWrite()
                try:
                    gc(first)
                except lock_module.LockedError:
                    pass
                first.store = real
            assert all(backup_lock.info.id in p.wait_for for p in load_plans(writer))  # none left waiting for none
            _reuse_beside_a_gc_then_commit(archiver, data, fs_repo_url)
        finally:
            archiver.close()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo)
        assert result.ok, result.errors


class _SecondPlanWriteFails:
    """gc dies after its plan's first write, before it wrote what the plan waits for."""

    def __init__(self, store) -> None:
        self._store, self.plan_writes = store, 0

    def put(self, name, body):
        if name.startswith("gc/"):
            self.plan_writes += 1
            if self.plan_writes == 2:
                raise OSError("injected: the gc process died here")
        return self._store.put(name, body)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


def test_a_plan_whose_gc_died_before_writing_its_waits_is_dropped_not_executed(fs_repo_url):
    data = _pushed_then_forgotten_stream(fs_repo_url)
    with Repository.open(fs_repo_url, PASSWORD) as writer, writer.lock("shared", "backup") as backup_lock:
        archiver = Archiver(writer, lock=backup_lock)                  # started before the plan: reuses
        try:
            with Repository.open(fs_repo_url, PASSWORD) as first:
                first.store = _SecondPlanWriteFails(first.store)
                with pytest.raises(OSError):
                    gc(first)
            [left] = load_plans(writer)
            assert not left.complete and left.wait_for == []
            again, report = _reuse_beside_a_gc_then_commit(archiver, data, fs_repo_url)
            assert report.plans_executed == 0 and report.packs_deleted == 0   # dropped it; planned again
        finally:
            archiver.close()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        gc(repo)
        out = io.BytesIO()
        restore_stream(repo, again, out)
        assert out.getvalue() == data and check_repository(repo, read_data=True).ok


def _pushed_then_forgotten_stream(url: str) -> bytes:
    Repository.init(url, PASSWORD).close()
    data = os.urandom(700_000)
    with Repository.open(url, PASSWORD) as repo:
        repo.forget(backup_stream(repo, io.BytesIO(data), "old"))      # its blobs are unused now
    return data


class _Wrap:
    def __init__(self, store, on_plan_put) -> None:
        self._store, self._on, self.plan_writes = store, on_plan_put, 0

    def put(self, name, body):
        if name.startswith("gc/"):
            self.plan_writes += 1
            self._on(self.plan_writes)
        return self._store.put(name, body)

    def __getattr__(self, attr):
        return getattr(self._store, attr)


def test_a_late_second_plan_write_does_not_resurrect_a_dropped_plan_without_waits(fs_repo_url, monkeypatch):
    """gc A writes its plan (incomplete), lists locks (none), then its second write hangs past
    STALE_AFTER. gc B drops the incomplete plan and re-plans the same packs; backup X starts after
    the drop, before B's plan is visible (reads no plan, reuses the doomed blobs); B's plan waits
    for X. A's second write lands: A's plan would be back, complete, waiting for nobody, and gc C
    would execute it under X. A deletes it (its lock is lost), and C keeps the packs a waiting
    plan names (from a fifth review)."""
    clock = types.SimpleNamespace(now=time.time())
    monkeypatch.setattr(lock_module, "time", types.SimpleNamespace(time=lambda: clock.now))
    data = _pushed_then_forgotten_stream(fs_repo_url)
    x = {}

    def start_x(n):
        if n == 1:     # B's first plan write: A's plan dropped, B's not yet visible
            x["repo"] = Repository.open(fs_repo_url, PASSWORD)
            x["lock"] = x["repo"].lock("shared", "backup")
            x["archiver"] = Archiver(x["repo"], lock=x["lock"])

    def a_hangs(n):
        if n == 2:     # A's second write hangs; meanwhile gc B runs
            clock.now += 31 * 60
            with Repository.open(fs_repo_url, PASSWORD) as b:
                b.store = _Wrap(b.store, start_x)
                assert gc(b).plans_waiting == 1

    with Repository.open(fs_repo_url, PASSWORD) as a:
        a.store = _Wrap(a.store, a_hangs)
        with pytest.raises(lock_module.LockedError):
            gc(a)
    archiver = x["archiver"]
    try:
        assert [p.wait_for for p in load_plans(x["repo"])] == [[x["lock"].info.id]]    # A's is gone
        _reuse_beside_a_gc_then_commit(archiver, data, fs_repo_url)       # X read no plan
    finally:
        archiver.close()
        x["lock"].release()
        x["repo"].close()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo)
        assert result.ok, result.errors


def _reuse_beside_a_gc_then_commit(archiver, data: bytes, url: str):
    """The running backup stores ``data`` again (reusing the doomed blobs: it read no plan), a gc
    runs while it is live, then it commits; the snapshot and that gc's report."""
    archiver.add_stream(io.BytesIO(data), "again")
    archiver.finish_data()
    with Repository.open(url, PASSWORD) as repo:
        report = gc(repo)
    return archiver.commit(paths=["again"], tags=[], parent=None, metadata=None, started=time.monotonic(),
                           hostname=None), report
