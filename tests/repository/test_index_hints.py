"""A snapshot that reuses nothing stored (wal-push) records where its blobs went, so reading one WAL
file back (wal-fetch, a restore_command per segment) needs no index of the whole repository; the
hint is only a hint: blobs that moved or are damaged are found through the index."""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import pytest

import backupctl.repository.repo as repo_module
from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths
from backupctl.repository.gc import gc
from backupctl.repository.restore import restore_stream
from backupctl.repository.snapshot import SNAPSHOTS_PREFIX, _AAD, load_snapshot
from tests.conftest import PASSWORD


def _push(url: str, path: Path, data: bytes, reuse_stored: bool = False) -> str:
    path.write_bytes(data)
    with Repository.open(url, PASSWORD) as repo:
        return backup_paths(repo, [str(path)], parent=None if not reuse_stored else "auto",
                            reuse_stored=reuse_stored).id


def _read(url: str, snapshot_id: str, edit=None) -> tuple[bytes, bool]:
    """The snapshot's one file, read in a new session, and whether the index had to be loaded."""
    loads = []
    real_load = repo_module.load_index

    def counted(*args, **kwargs):
        loads.append(1)
        return real_load(*args, **kwargs)

    with Repository.open(url, PASSWORD) as repo, pytest.MonkeyPatch.context() as patch:
        patch.setattr(repo_module, "load_index", counted)
        snap = repo.find_snapshot(snapshot_id)
        if edit is not None:
            snap = dataclasses.replace(snap, **edit(snap))
        out = io.BytesIO()
        restore_stream(repo, snap, out)
        return out.getvalue(), bool(loads)


def test_a_store_everything_snapshot_is_read_without_the_index(fs_repo_url, tmp_path):
    Repository.init(fs_repo_url, PASSWORD).close()
    _push(fs_repo_url, tmp_path / "other", os.urandom(3_000_000), reuse_stored=True)
    data = os.urandom(5_000_000)
    sid = _push(fs_repo_url, tmp_path / "seg", data)
    assert _read(fs_repo_url, sid) == (data, False)


def test_a_backup_that_reuses_stored_blobs_records_no_hint(fs_repo_url, tmp_path):
    Repository.init(fs_repo_url, PASSWORD).close()
    data = os.urandom(1_000_000)
    sid = _push(fs_repo_url, tmp_path / "f", data, reuse_stored=True)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        stored = json.loads(repo.key.decrypt(repo.store.get(SNAPSHOTS_PREFIX + sid), _AAD))
    assert "index_hint" not in stored          # as before hints: older releases read it
    assert _read(fs_repo_url, sid) == (data, True)


def test_a_hint_a_gc_made_stale_falls_back_to_the_index(fs_repo_url, tmp_path):
    """The same segment pushed twice: two packs hold its blobs, gc keeps one copy and deletes the
    other pack, so one snapshot's hint names a pack that is gone."""
    Repository.init(fs_repo_url, PASSWORD).close()
    data = os.urandom(2_000_000)
    first, second = _push(fs_repo_url, tmp_path / "a", data), _push(fs_repo_url, tmp_path / "b", data)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        assert gc(repo).packs_deleted == 1
    reads = [_read(fs_repo_url, sid) for sid in (first, second)]
    assert [r[0] == data for r in reads] == [True, True]
    assert sorted(loaded for _, loaded in reads) == [False, True]    # the stale one needed the index


def test_a_wrong_or_unreadable_hint_is_ignored(fs_repo_url, tmp_path):
    Repository.init(fs_repo_url, PASSWORD).close()
    data, other = os.urandom(2_000_000), os.urandom(2_000_000)
    sid, other_sid = _push(fs_repo_url, tmp_path / "a", data), _push(fs_repo_url, tmp_path / "b", other)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        other_hint = load_snapshot(repo.store, repo.key, other_sid).index_hint
    assert _read(fs_repo_url, sid, lambda s: {"index_hint": "not base64 !"}) == (data, True)
    assert _read(fs_repo_url, sid, lambda s: {"index_hint": other_hint}) == (data, True)


def test_a_snapshot_with_fields_of_a_later_release_loads(fs_repo_url, tmp_path):
    Repository.init(fs_repo_url, PASSWORD).close()
    data = os.urandom(100_000)
    sid = _push(fs_repo_url, tmp_path / "a", data)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        body = json.loads(repo.key.decrypt(repo.store.get(SNAPSHOTS_PREFIX + sid), _AAD))
        body["written_by_a_later_release"] = {"x": 1}
        repo.store.put(SNAPSHOTS_PREFIX + sid, repo.key.encrypt(json.dumps(body).encode(), _AAD))
    assert _read(fs_repo_url, sid) == (data, False)


# The fields of a snapshot as releases before hints know them: they load a snapshot with
# Snapshot(**stored), so any other top-level field fails every command that lists snapshots.
FIELDS_BEFORE_HINTS = {"time", "hostname", "username", "paths", "tree", "tags", "parent", "summary", "metadata"}


def test_a_hinted_snapshot_stays_readable_by_releases_before_hints(fs_repo_url, tmp_path):
    """From a review: the hint was a top-level field, so one upgraded wal-push broke gc, retention
    and listings on every host still running the release before it. It is kept in the summary."""
    Repository.init(fs_repo_url, PASSWORD).close()
    data = os.urandom(200_000)
    sid = _push(fs_repo_url, tmp_path / "000000010000000000000001", data)
    with Repository.open(fs_repo_url, PASSWORD) as repo:
        stored = json.loads(repo.key.decrypt(repo.store.get(SNAPSHOTS_PREFIX + sid), _AAD))
        snap = load_snapshot(repo.store, repo.key, sid)
    assert set(stored) <= FIELDS_BEFORE_HINTS and stored["summary"]["index_hint"]
    assert snap.index_hint == stored["summary"]["index_hint"] and "index_hint" not in snap.summary
    assert _read(fs_repo_url, sid) == (data, False)
    # a later release's hint in another form is no hint, not a crash
    assert _read(fs_repo_url, sid, lambda s: {"index_hint": {"v2": "..."}}) == (data, True)
