"""Syncing a tree without syncfs(): every regular file and directory, nothing that could block."""

from __future__ import annotations

import os

import pytest

from backupctl import durable


@pytest.fixture
def synced(monkeypatch):
    paths, real_fsync = [], os.fsync

    def fsync(fd):
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(durable, "_syncfs", None)
    monkeypatch.setattr(durable.os, "fsync", fsync)
    return paths


def test_without_syncfs_every_file_and_directory_is_fsynced_and_the_parent_too(tmp_path, synced):
    root = tmp_path / "restored"
    (root / "a" / "b").mkdir(parents=True)
    files = [root / "top.bin", root / "a" / "one", root / "a" / "b" / "two"]
    for f in files:
        f.write_bytes(b"x" * 100)
    os.chmod(root / "a" / "one", 0o200)                # write-only: a user but root opens it for writing
    (root / "link").symlink_to(root / "top.bin")
    os.mkfifo(root / "a" / "fifo")                     # opening it for reading would block
    durable.sync_tree(str(root))
    expected = {str(p) for p in [*files, root, root / "a", root / "a" / "b", tmp_path]}
    assert set(synced) == expected and len(synced) == len(expected)


def test_without_syncfs_a_directory_that_fails_to_list_fails_the_sync_and_one_forbidden_is_skipped(
        tmp_path, synced, monkeypatch):
    root = tmp_path / "restored"
    (root / "broken").mkdir(parents=True)
    (root / "forbidden").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("forbidden"):        # mode 0000, restored as the snapshot says
            raise PermissionError(13, "Permission denied", os.fspath(path))
        if os.fspath(path).endswith("broken"):           # EIO on a NAS: its files would go unsynced
            raise OSError(5, "Input/output error", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(OSError, match="Input/output error"):
        durable.sync_tree(str(root))
    (root / "broken").rmdir()
    durable.sync_tree(str(root))
    assert str(root) in synced and str(tmp_path) in synced


def test_syncfs_is_called_on_the_tree_when_the_c_library_has_it(tmp_path):
    assert durable._syncfs is not None                  # Linux, glibc: the path every restore here takes
    (tmp_path / "f").write_bytes(b"data")
    durable.sync_tree(str(tmp_path))                    # a real syncfs(): returns without error
