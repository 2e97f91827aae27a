"""The storage plugins: the same small contract on local disk, S3 (moto over HTTP) and fsspec."""

from __future__ import annotations

import os
import uuid

import pytest

from backupctl.errors import StorageError
from repo_plugins import open_store
from repo_plugins import s3 as s3_module


@pytest.fixture(params=["fs", "s3", "fsspec"])
def store(request, tmp_path):
    if request.param == "fs":
        return open_store(str(tmp_path / "store"))
    if request.param == "fsspec":
        return open_store(f"memory://backupctl-test/{uuid.uuid4().hex}")
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return open_store(f"s3://{bucket}/{uuid.uuid4().hex}?endpoint={endpoint}")


def test_store_contract(store):
    store.put("data/ab/one", b"hello world")
    store.put("index/two", b"")
    assert store.get("data/ab/one") == b"hello world"
    assert store.get_range("data/ab/one", 6, 5) == b"world"
    assert store.size("data/ab/one") == 11
    assert store.exists("data/ab/one") and not store.exists("data/ab/nope")
    assert sorted(store.list("data/")) == [("data/ab/one", 11)]
    assert sorted(n for n, _ in store.list("")) == ["data/ab/one", "index/two"]
    store.put("data/ab/one", b"replaced")            # overwrite is whole
    assert store.get("data/ab/one") == b"replaced"
    store.delete("data/ab/one")
    store.delete("data/ab/one")                      # absent is not an error
    assert not store.exists("data/ab/one")
    with pytest.raises(FileNotFoundError):
        store.get("data/ab/one")
    with pytest.raises(FileNotFoundError):
        store.get_range("data/ab/one", 0, 1)          # read by range before: not served from an open file


def test_local_store_keeps_a_bounded_number_of_packs_open_and_releases_them(tmp_path, monkeypatch):
    import warnings

    from repo_plugins import fs

    monkeypatch.setattr(fs.FileStore, "OPEN_READERS", 3)
    store = open_store(str(tmp_path / "store"))
    for i in range(8):
        store.put(f"data/{i:02x}/pack", bytes([i]) * 100)
    fds = set(os.listdir("/proc/self/fd"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            for i in range(8):
                assert store.get_range(f"data/{i:02x}/pack", 10 + i, 5) == bytes([i]) * 5
        assert len(set(os.listdir("/proc/self/fd")) - fds) == 3          # the three read last
        store.close()
        assert set(os.listdir("/proc/self/fd")) <= fds
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]   # closed on purpose, not leaked


def test_local_store_does_not_keep_a_pack_deleted_while_it_was_being_opened(tmp_path, monkeypatch):
    """delete() drops the kept file; one opened just before the unlink and kept just after it
    would otherwise serve the deleted pack from then on."""
    from repo_plugins import fs

    store = open_store(str(tmp_path / "store"))
    store.put("data/aa/pack", b"0123456789")
    opened = fs._OpenPack

    def open_then_deleted(path):
        pack = opened(path)
        store.delete("data/aa/pack")                 # between the open and keeping it
        return pack

    monkeypatch.setattr(fs, "_OpenPack", open_then_deleted)
    assert store.get_range("data/aa/pack", 2, 3) == b"234"   # the read that had it open
    monkeypatch.setattr(fs, "_OpenPack", opened)
    with pytest.raises(FileNotFoundError):
        store.get_range("data/aa/pack", 2, 3)


def test_local_store_range_reads_from_many_threads_while_packs_are_evicted(tmp_path, monkeypatch):
    """An evicted pack closes when no read holds it: never under a read, never reused by another pack."""
    import sys
    import threading

    from repo_plugins import fs

    monkeypatch.setattr(fs.FileStore, "OPEN_READERS", 2)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)                      # hand the GIL over between any two steps
    store = open_store(str(tmp_path / "store"))
    for i in range(12):
        store.put(f"data/{i:02x}/pack", bytes([i]) * 4096)
    wrong: list = []

    def reader(seed: int) -> None:
        try:
            for k in range(3000):
                i = (seed * 7 + k * 5) % 12
                if store.get_range(f"data/{i:02x}/pack", k % 4000, 64) != bytes([i]) * 64:
                    wrong.append(i)
        except OSError as exc:
            wrong.append(exc)

    try:
        threads = [threading.Thread(target=reader, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert wrong == []


def test_s3_multipart_upload_roundtrip(s3_endpoint, s3_bucket, monkeypatch):
    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    store = open_store(f"s3://{s3_bucket}/{uuid.uuid4().hex}?endpoint={s3_endpoint}")
    store._transfer.multipart_threshold = 5 * 1024 * 1024
    store._transfer.multipart_chunksize = 5 * 1024 * 1024
    data = os.urandom(12 * 1024 * 1024 + 5)
    store.put("data/big", data)
    assert store.get("data/big") == data
    head = store._client.head_object(Bucket=s3_bucket, Key=store._key("data/big"))
    assert head["ETag"].strip('"').endswith("-3")     # it really went up in three parts


def test_s3_server_side_encryption_is_requested(s3_endpoint, s3_bucket):
    store = open_store(f"s3://{s3_bucket}/{uuid.uuid4().hex}?endpoint={s3_endpoint}&sse=AES256")
    store.put("config", b"x")
    head = store._client.head_object(Bucket=s3_bucket, Key=store._key("config"))
    assert head["ServerSideEncryption"] == "AES256"


def test_missing_bucket_is_a_clear_error(s3_endpoint):
    store = open_store(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x?endpoint={s3_endpoint}")
    with pytest.raises(StorageError, match="not reachable"):
        store.check_writable()


def test_plain_path_and_file_url_are_the_same_store(tmp_path):
    a = open_store(str(tmp_path / "r"))
    b = open_store(f"file://{tmp_path}/r")
    a.put("config", b"1")
    assert b.get("config") == b"1"


def test_local_store_listing_fails_on_a_directory_it_cannot_read_and_skips_one_removed(tmp_path, monkeypatch):
    """Read as empty, an unreadable directory would make an archive look as if it had no WAL."""
    store = open_store(str(tmp_path / "repo"))
    for name in ("snapshots/aa/one", "snapshots/bb/two", "snapshots/cc/three"):
        store.put(name, b"x")
    real_scandir = os.scandir

    def scandir(path):
        p = os.fspath(path)
        if p.endswith("bb"):
            raise PermissionError(13, "Permission denied", p)
        if p.endswith("cc"):
            raise FileNotFoundError(2, "No such file or directory", p)    # removed meanwhile (gc)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(StorageError, match="cannot list .*/bb: Permission denied"):
        list(store.list("snapshots/"))
    monkeypatch.setattr(os, "scandir", lambda path: scandir(path) if not os.fspath(path).endswith("bb")
                        else real_scandir(path))
    assert sorted(n for n, _ in store.list("snapshots/")) == ["snapshots/aa/one", "snapshots/bb/two"]


def test_local_store_makes_the_directories_it_creates_durable_too(tmp_path, monkeypatch):
    from repo_plugins import fs

    synced, real = [], fs.fsync_dir

    def fsync_dir(path):
        synced.append(str(path))
        real(path)

    root = tmp_path / "repo"
    root.mkdir()
    store = open_store(str(root))
    monkeypatch.setattr(fs, "fsync_dir", fsync_dir)
    store.put("data/ab/pack-1", b"x")
    assert sorted(synced) == sorted({str(root), str(root / "data"), str(root / "data" / "ab")})
    synced.clear()
    store.put("data/ab/pack-2", b"y")                  # the directory exists: only the new entry
    assert synced == [str(root / "data" / "ab")]
