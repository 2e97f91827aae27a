"""A blob stored in several packs (store-everything backups such as wal-push leave copies) stays
readable while one copy is good: restores read another copy, check names no snapshot, and gc keeps a
good copy, never the damaged one alone: when it plans, and again when the plan executes (the
cases below the marker came from a review)."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from backupctl.errors import IntegrityError
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.check import check_repository
from backupctl.repository.gc import GcReport, _execute, _KeptCopies, _repack, gc
from backupctl.repository.index import Index
from backupctl.repository.pack import BlobEntry
from backupctl.repository.plan import Plan, doomed_packs
from backupctl.repository.pack import pack_name
from backupctl.repository.restore import restore_snapshot, restore_stream
from backupctl.repository.tree import walk_tree
from tests.conftest import PASSWORD

# 6 MB: several chunks, some across the restore's 4 MiB windows (both of its read paths)
SIZE = 6_000_000


def _stored_twice(url: str, tmp_path: Path, data: bytes) -> tuple[str, str]:
    """Two store-everything backups of one file: every blob in two packs. Their snapshot ids."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "f").write_bytes(data)
    Repository.init(url, PASSWORD).close()
    ids = []
    for _ in range(2):
        with Repository.open(url, PASSWORD) as repo:
            ids.append(backup_paths(repo, [str(src)], parent=None, reuse_stored=False).id)
    return ids[0], ids[1]


def _damage_read_copies(url: str, snapshot_id: str, spares_too: bool = False) -> int:
    """Flip a byte inside the copy the index reads of every data blob of the snapshot (and with
    ``spares_too``, inside every other copy). The number of copies damaged."""
    with Repository.open(url, PASSWORD) as repo:
        node = next(n for n in walk_tree(repo, repo.find_snapshot(snapshot_id).tree) if n.chunks)
        copies = [c for cid in node.chunks for c in repo.index.copies(bytes.fromhex(cid))
                  if spares_too or c is repo.index.lookup(bytes.fromhex(cid))]
    for c in copies:
        path = Path(url) / pack_name(c.pack)
        raw = bytearray(path.read_bytes())
        raw[c.offset + c.length // 2] ^= 0x01
        path.write_bytes(bytes(raw))
    return len(copies)


def _restored(url: str, snapshot_id: str, target: Path) -> bytes:
    with Repository.open(url, PASSWORD) as repo:
        restore_snapshot(repo, repo.find_snapshot(snapshot_id), str(target))
    return next(p for p in target.rglob("f")).read_bytes()


def test_a_restore_reads_a_good_copy_when_the_one_the_index_names_is_damaged(fs_repo_url, tmp_path, caplog):
    data = os.urandom(SIZE)
    first, second = _stored_twice(fs_repo_url, tmp_path, data)
    assert _damage_read_copies(fs_repo_url, second) >= 2
    with caplog.at_level(logging.WARNING):
        for n, sid in enumerate((first, second)):
            assert _restored(fs_repo_url, sid, tmp_path / f"out{n}") == data
            with Repository.open(fs_repo_url, PASSWORD) as repo:
                out = io.BytesIO()
                restore_stream(repo, repo.find_snapshot(sid), out, name=next(
                    n.path for n in walk_tree(repo, repo.find_snapshot(sid).tree) if n.chunks))
                assert out.getvalue() == data
    assert "read its copy in pack" in caplog.text


def test_a_restore_fails_when_every_copy_is_damaged(fs_repo_url, tmp_path):
    data = os.urandom(SIZE)
    _, second = _stored_twice(fs_repo_url, tmp_path, data)
    _damage_read_copies(fs_repo_url, second, spares_too=True)
    with pytest.raises(IntegrityError, match="failed authentication"):
        _restored(fs_repo_url, second, tmp_path / "out")


def test_check_names_no_snapshot_while_a_good_copy_is_left(fs_repo_url, tmp_path):
    first, second = _stored_twice(fs_repo_url, tmp_path, os.urandom(SIZE))
    _damage_read_copies(fs_repo_url, second)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo, read_data=True)
    assert result.damaged_snapshots == []
    assert any("corrupted" in e for e in result.errors)              # the damaged pack itself is named
    assert any("good one in another pack" in w for w in result.warnings)


def test_check_names_the_snapshots_when_no_good_copy_is_left(fs_repo_url, tmp_path):
    first, second = _stored_twice(fs_repo_url, tmp_path, os.urandom(SIZE))
    _damage_read_copies(fs_repo_url, second, spares_too=True)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo, read_data=True)
    assert sorted(result.damaged_snapshots) == sorted([first, second])


def test_gc_keeps_the_good_copy_and_drops_the_damaged_one(fs_repo_url, tmp_path):
    """gc keeps one copy of a blob stored twice. It kept the one the index reads without reading
    it: damaged, it reclaimed the good copy, and the data was lost (found in a review)."""
    data = os.urandom(SIZE)
    first, second = _stored_twice(fs_repo_url, tmp_path, data)
    damaged = _damage_read_copies(fs_repo_url, second)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)
    assert report.damaged_copies == damaged and report.copies_verified >= damaged
    assert report.packs_deleted >= 1
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo, read_data=True)
        assert result.ok, result.errors                # the damaged copies went with their pack
    for n, sid in enumerate((first, second)):
        assert _restored(fs_repo_url, sid, tmp_path / f"out{n}") == data


def test_gc_keeps_every_copy_when_none_is_good(fs_repo_url, tmp_path):
    data = os.urandom(SIZE)
    _, second = _stored_twice(fs_repo_url, tmp_path, data)
    damaged = _damage_read_copies(fs_repo_url, second, spares_too=True)
    packs_before = sorted((Path(fs_repo_url) / "data").rglob("*"))
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)
    assert report.damaged_copies == damaged and report.packs_deleted == 0
    assert sorted((Path(fs_repo_url) / "data").rglob("*")) == packs_before


def test_gc_repacks_a_good_copy_of_a_blob_damaged_in_the_pack_it_repacks(fs_repo_url, tmp_path):
    data = os.urandom(SIZE)
    _, second = _stored_twice(fs_repo_url, tmp_path, data)
    _damage_read_copies(fs_repo_url, second)
    messages: list[str] = []
    with Repository.open(fs_repo_url, PASSWORD) as repo, repo.lock("gc", "gc") as lock:
        node = next(n for n in walk_tree(repo, repo.find_snapshot(second).tree) if n.chunks)
        ids = {bytes.fromhex(c) for c in node.chunks}
        damaged_pack = repo.index.lookup(next(iter(ids))).pack
        kept = _KeptCopies(repo.index, ids)
        kept.chosen.update({i: damaged_pack for i in ids})       # as if gc had chosen the damaged copies
        before = set(repo.index.packs)
        report = GcReport()
        _repack(repo, lock, [(damaged_pack, repo.index.pack_entries[damaged_pack])], kept, report, messages.append)
        assert report.blobs_repacked == len(ids)
        repo.reload_index()
        new_packs = set(repo.index.packs) - before
    assert len(new_packs) == 1 and any("repacked its copy from pack" in m for m in messages)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        new_copies = [e for e in repo.index.pack_entries[new_packs.pop()] if e.id in ids]
        assert b"".join(repo.read_copy(e) for e in sorted(new_copies, key=lambda e: node.chunks.index(e.id.hex()))) \
            == data


def _gc_while_a_backup_runs(url: str) -> GcReport:
    """gc while another process holds a lock: its plan waits for the next gc."""
    with Repository.open(url, PASSWORD) as holder, holder.lock("shared", "a backup that runs"):
        with Repository.open(url, PASSWORD) as repo:
            return gc(repo)


def _f_in_a_pack_gc_repacks(url: str, tmp_path: Path):
    """A new repository whose one snapshot holds file f, stored in a pack that mostly holds g,
    which no snapshot uses any more (gc repacks that pack); f's bytes and that snapshot."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(SIZE)
    (src / "f").write_bytes(data)
    (src / "g").write_bytes(os.urandom(3 * SIZE))
    Repository.init(url, PASSWORD).close()
    with Repository.open(url, PASSWORD) as repo:
        both = backup_paths(repo, [str(src)])
    (src / "g").unlink()
    with Repository.open(url, PASSWORD) as repo:
        only_f = backup_paths(repo, [str(src)])              # f's blobs reused from the first pack
        repo.forget(both)
    return data, only_f


# -- from a review ------------------------------------------------------------------------------
def _file_chunks(repo, snapshot_id: str) -> list[bytes]:
    node = next(n for n in walk_tree(repo, repo.find_snapshot(snapshot_id).tree) if n.chunks)
    return [bytes.fromhex(c) for c in node.chunks]


def test_a_plan_that_waits_deletes_the_good_copies_when_the_kept_one_is_damaged_before_it_runs(fs_repo_url, tmp_path):
    """Phase 1 verified the kept copy, but the deletion happens in phase 2, at a later gc when the
    plan had to wait (with a wal-push running every minute, almost always). _execute deletes a
    pack as soon as *some* other copy of each used blob stays, without reading it: when the kept
    copy went bad in between (or was never the one verified), the good copies go and the blob is
    lost."""
    data = os.urandom(SIZE)
    first, second = _stored_twice(fs_repo_url, tmp_path, data)
    report = _gc_while_a_backup_runs(fs_repo_url)
    assert report.plans_waiting == 1 and report.packs_deleted == 0
    assert report.copies_verified >= 2 and report.damaged_copies == 0
    # the copies gc kept (the index prefers them: the others are in the plan) rot meanwhile
    assert _damage_read_copies(fs_repo_url, second) >= 2
    with Repository.open(fs_repo_url, PASSWORD) as repo:       # while the plan waited, reads still work
        for sid in (first, second):
            assert all(repo.read_blob(c) for c in _file_chunks(repo, sid))
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        gc(repo)                                               # executes the plan
    # the good copies must not have been deleted while the only copy left is damaged
    assert _restored(fs_repo_url, second, tmp_path / "out") == data


def test_gc_keeps_every_copy_when_none_is_good_even_in_a_pack_it_would_repack(fs_repo_url, tmp_path):
    """'If no copy is good, gc keeps them all' (README). When the pack holding a spare copy also
    holds unused blobs, keeping that copy turns the pack from 'delete' into 'repack'; _repack
    then finds the kept copy damaged, _good_copy finds no good one and raises: every gc of the
    repository fails from then on (before the change the spare copy's pack was just deleted)."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(SIZE)
    (src / "f").write_bytes(data)
    Repository.init(fs_repo_url, PASSWORD).close()
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        first = backup_paths(repo, [str(src)], parent=None, reuse_stored=False).id
    (src / "g").write_bytes(os.urandom(SIZE))                  # stored beside f's second copy
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        second = backup_paths(repo, [str(src)], parent=None, reuse_stored=False)
        repo.forget(second)                                    # g (half the pack) is unused now
    _damage_read_copies(fs_repo_url, first, spares_too=True)   # every copy of f's chunks
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        chunks = _file_chunks(repo, first)
        packs_of_f = {c.pack for cid in chunks for c in repo.index.copies(cid)}
    assert len(packs_of_f) == 2
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)  # raised on every run: the pack became a repack
    assert report.damaged_copies >= 2
    for p in packs_of_f:                                       # kept them all
        assert (Path(fs_repo_url) / pack_name(p)).exists()


def _flip(url: str, copy) -> None:
    path = Path(url) / pack_name(copy.pack)
    raw = bytearray(path.read_bytes())
    raw[copy.offset + copy.length // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _backup(url: str, path: Path) -> str:
    with Repository.open(url, PASSWORD) as repo:
        return backup_paths(repo, [str(path)], parent=None, reuse_stored=False).id


def _forget(url: str, sid: str) -> None:
    with Repository.open(url, PASSWORD) as repo:
        repo.forget(repo.find_snapshot(sid))


def _pack_of_snapshot_chunks(url: str, sid: str) -> bytes:
    with Repository.open(url, PASSWORD) as repo:
        tree_pack = repo.index.lookup(bytes.fromhex(repo.find_snapshot(sid).tree[0])).pack
    return tree_pack        # reuse_stored=False, one small backup: its chunks and tree share one pack


def _skip_choice_scenario(root: Path, f: bytes):
    """None when the index files were listed in an order the scenario does not need (retry)."""
    url = str(root / "repo")
    big, small = root / "big", root / "small"
    big.mkdir(parents=True)
    small.mkdir()
    (big / "f").write_bytes(f)
    (big / "h").write_bytes(os.urandom(3 * SIZE))      # P1: f is a quarter of it (below the threshold)
    (small / "f").write_bytes(f)
    Repository.init(url, PASSWORD).close()
    a = _backup(url, big)
    p1 = _pack_of_snapshot_chunks(url, a)
    b = _backup(url, small)
    p_skip = _pack_of_snapshot_chunks(url, b)
    _forget(url, b)
    with Repository.open(url, PASSWORD) as repo:
        chunks = _file_chunks(repo, a)
        if any(repo.index.lookup(c).pack != p1 for c in chunks):
            return None
    holder = Repository.open(url, PASSWORD)
    running = holder.lock("shared", "a long backup")
    with Repository.open(url, PASSWORD) as repo:
        r1 = gc(repo)                                   # plan 1: p_skip (p1's copies verified good); waits
    assert r1.plans_waiting == 1 and r1.damaged_copies == 0
    c = _backup(url, small)                             # another store-everything copy of f ...
    p_other = _pack_of_snapshot_chunks(url, c)
    _forget(url, c)                                     # ... in a pack nothing else uses
    with Repository.open(url, PASSWORD) as repo:
        for cid in chunks:
            copies = repo.index.copies(cid)
            if copies[0].pack != p1 or [x.pack for x in copies[1:]] != [p_skip, p_other]:
                running.release()
                holder.close()
                return None
        p1_copies = [x for cid in chunks for x in repo.index.copies(cid) if x.pack == p1]
    for x in p1_copies:                                 # the copies in p1 are damaged now
        _flip(url, x)
    return url, a, holder, running, p1, p_skip, p_other


def test_gc_chooses_a_copy_in_a_pack_a_waiting_plan_deletes_and_dooms_the_only_other_good_copy(tmp_path):
    """_KeptCopies.verify keeps the first good copy in Index.copies order, which includes packs a
    waiting plan (``skip``, the index's ``avoid``) will delete. Here gc sees the damaged copy in p1,
    keeps the copy in p_skip (doomed by plan 1) and plans p_other (the only good copy no plan
    names) away: once both plans run, only the damaged copy is left. The damage was there before
    this gc ran and it read it, so this is not bit rot after the check."""
    f = os.urandom(SIZE)
    for attempt in range(40):
        got = _skip_choice_scenario(tmp_path / f"try{attempt}", f)
        if got:
            break
    else:
        raise AssertionError("no attempt listed the index files in the needed order")
    url, a, holder, running, p1, p_skip, p_other = got
    try:
        with Repository.open(url, PASSWORD) as repo:
            r2 = gc(repo)                               # sees p1's damage; plan 2 waits too
        assert r2.damaged_copies >= 1
        with Repository.open(url, PASSWORD) as repo:
            doomed = doomed_packs(repo)
        # some good copy of f must be left outside every plan
        assert not {p_skip, p_other} <= doomed, "every good copy of f is in a gc plan; only the damaged one stays"
    finally:
        running.release()
        holder.close()
    with Repository.open(url, PASSWORD) as repo:
        gc(repo)
    assert _restored(url, a, tmp_path / "out") == f


def test_gc_verifies_kept_copies_with_one_request_per_pack_not_per_blob(fs_repo_url, tmp_path):
    _stored_twice(fs_repo_url, tmp_path, os.urandom(24_000_000))    # ~20 blobs, each in 2 packs
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        calls: list[str] = []
        get_range = repo.store.get_range

        def counting(name, offset, length):
            calls.append(name)
            return get_range(name, offset, length)

        repo.store.get_range = counting
        report = gc(repo, dry_run=True)
    assert report.copies_verified >= 10
    packs_read = len({n for n in calls if n.startswith("data/")})
    ranged = sum(1 for n in calls if n.startswith("data/"))
    # a read per pack, and one per snapshot's tree blob (read to know which blobs are used)
    assert ranged <= packs_read + 2, \
        f"{ranged} ranged reads of {packs_read} pack(s) to verify {report.copies_verified} blobs"


def _entry(blob_id: bytes, pack: bytes) -> BlobEntry:
    return BlobEntry(blob_id, 0, 0, pack, 0, 100, 100)


def test_copies_sees_a_copy_added_after_its_first_call():
    index = Index()
    blob = os.urandom(32)
    p1, p2, p3 = (os.urandom(32) for _ in range(3))
    index.add_pack(100, [_entry(blob, p1)])
    index.add_pack(100, [_entry(blob, p2)])
    assert [c.pack for c in index.copies(blob)] == [p1, p2]       # builds the map
    index.add_pack(100, [_entry(blob, p3)])                       # a backup commits another copy
    assert [c.pack for c in index.copies(blob)] == [p1, p2, p3]   # the map is stale: p3 is never read


def test_copies_built_while_a_pack_is_added_does_not_crash():
    index = Index()
    for _ in range(300_000):
        index.add_pack(100, [_entry(os.urandom(32), os.urandom(32))])
    errors: list[BaseException] = []
    started = threading.Event()

    def build() -> None:
        started.set()
        try:
            index.copies(os.urandom(32))
        except BaseException as exc:          # RuntimeError: dictionary changed size during iteration
            errors.append(exc)

    t = threading.Thread(target=build)
    t.start()
    started.wait()
    while t.is_alive():
        index.add_pack(100, [_entry(os.urandom(32), os.urandom(32))])
    t.join()
    assert not errors, errors


def test_gc_leaves_a_pack_it_cannot_repack_and_goes_on(fs_repo_url, tmp_path):
    """A used blob with one copy, damaged, in a pack gc repacks: gc raised on every run from then on
    (no space freed again). It leaves that pack as it is, says so, and does the rest."""
    data, only_f = _f_in_a_pack_gc_repacks(fs_repo_url, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "h").write_bytes(os.urandom(SIZE))
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        repo.forget(backup_paths(repo, [str(other)]))           # h's pack is simply deleted
    damaged = _damage_read_copies(fs_repo_url, only_f.id)
    messages: list[str] = []
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo, log=messages.append)
    assert report.damaged_copies >= 1 and report.packs_deleted >= 1     # h's pack went all the same
    assert any("no other copy is intact" in m for m in messages)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        result = check_repository(repo, read_data=True)
    assert result.damaged_snapshots == [only_f.id] and damaged >= 1


def test_a_plan_that_waits_reads_the_copies_its_repack_wrote_before_it_deletes(fs_repo_url, tmp_path):
    """A repack's copies were taken as intact however long the plan waited: if they rotted
    meanwhile, the plan deleted the original pack, whose copies were good (from a review)."""
    data, only_f = _f_in_a_pack_gc_repacks(fs_repo_url, tmp_path)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        chunks = _file_chunks(repo, only_f.id)
        original = {repo.index.lookup(c).pack for c in chunks}
    assert len(original) == 1
    report = _gc_while_a_backup_runs(fs_repo_url)
    assert report.plans_waiting == 1 and report.packs_repacked == 1
    with Repository.open(fs_repo_url, PASSWORD) as repo:     # the repacked copies rot while it waits
        repacked = [c for cid in chunks for c in repo.index.copies(cid) if c.pack not in original]
    assert len(repacked) == len(chunks)
    for c in repacked:
        _flip(fs_repo_url, c)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        report = gc(repo)                                    # executes the plan
    assert report.damaged_copies >= len(chunks)
    assert _restored(fs_repo_url, only_f.id, tmp_path / "out") == data


def test_executing_a_plan_looks_at_the_copies_of_each_blob_once(fs_repo_url, monkeypatch):
    """wal-push stores every chunk again, so a chunk that recurs in WAL (zeros at a switched
    segment's tail) has a copy in nearly every archive pack: ~43,000 for a segment a minute kept
    30 days. Executing a plan listed and sorted every copy once per planned copy: minutes of
    work for one blob (from a review). Once per blob now."""
    Repository.init(fs_repo_url, PASSWORD).close()
    with Repository.open(fs_repo_url, PASSWORD) as repo, repo.lock("gc", "gc") as lock:
        zero = os.urandom(32)
        packs = [os.urandom(32) for _ in range(2000)]
        index = Index()
        for p in packs:        # each archive pack: its copy of the zero chunk and a blob of its own
            index.add_pack(1000, [BlobEntry(zero, 0, 1, p, 0, 100, 4 << 20),
                                  BlobEntry(os.urandom(32), 0, 0, p, 100, 500, 500)])
        repo._index = index
        calls: list[bytes] = []
        copies = Index.copies
        monkeypatch.setattr(Index, "copies", lambda self, b: calls.append(b) or copies(self, b))
        plan = Plan(id=os.urandom(16).hex(), created=time.time(), packs=[p.hex() for p in packs[1000:]],
                    blobs=[], wait_for=[])
        report = GcReport()
        # the staying copy in packs[0] was just read intact by this run: nothing to read again
        _execute(repo, lock, [plan], {zero}, report, lambda _m: None, verified={zero: {packs[0]}})
    assert calls == [] and report.copies_verified == 0 and report.packs_deleted == 0   # packs are fake
