"""Deduplication: identical data adds almost nothing; an insertion only costs the chunks around it."""

from __future__ import annotations

import io
import random

from backupctl.repository import Repository
from backupctl.repository.backup import backup_paths, backup_stream
from tests.conftest import PASSWORD
from tests.helpers import make_tree


def test_second_identical_backup_adds_almost_nothing(repo_url, tmp_path):
    src = make_tree(tmp_path / "src")
    repo = Repository.init(repo_url, PASSWORD)
    first = backup_paths(repo, [str(src)])
    second = backup_paths(repo, [str(src)], parent=None)  # no parent: every file is read and chunked again
    assert second.summary["bytes_read"] == first.summary["bytes_read"] > 20_000_000
    assert second.summary["blobs_new"] <= 2            # at most the tree blobs (mtimes of restored dirs)
    assert second.summary["bytes_added"] < 200_000


def test_unchanged_files_are_not_read_again(fs_repo_url, tmp_path):
    src = make_tree(tmp_path / "src")
    repo = Repository.init(fs_repo_url, PASSWORD)
    backup_paths(repo, [str(src)])
    (src / "text.csv").write_bytes(b"changed\n")
    second = backup_paths(repo, [str(src)])
    assert second.summary["bytes_read"] == len(b"changed\n")
    assert second.summary["files_changed"] == 1
    assert second.parent is not None


def test_insertion_in_the_middle_of_a_stream_dedups_the_rest(repo_url):
    rnd = random.Random(7)
    data = rnd.randbytes(48 * 1024 * 1024)
    repo = Repository.init(repo_url, PASSWORD)
    first = backup_stream(repo, io.BytesIO(data), "dump")
    shifted = data[:20_000_000] + b"inserted bytes" * 100 + data[20_000_000:]
    second = backup_stream(repo, io.BytesIO(shifted), "dump")
    assert first.summary["bytes_added"] > 48_000_000     # random data does not compress
    # Only the chunk(s) around the insertion are new: at most a few MiB of 48.
    assert second.summary["bytes_added"] < 6 * 1024 * 1024
    assert second.summary["blobs_reused"] >= first.summary["blobs_new"] - 4


def test_compressible_data_is_stored_compressed(fs_repo_url):
    text = b"".join(b"row %d,status=ok,value=%d\n" % (i, i % 13) for i in range(500_000))
    repo = Repository.init(fs_repo_url, PASSWORD)
    snap = backup_stream(repo, io.BytesIO(text), "rows.csv")
    assert snap.summary["bytes_added"] < len(text) / 5
