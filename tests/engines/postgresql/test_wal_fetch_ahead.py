"""wal-fetch reads ahead: a fetch that opens the repository also fetches the segments that follow,
and the restore_command calls for those are answered from the spool, without the catalogue or the
repository (pgBackRest's asynchronous archive-get), for the database system they came from only."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from backupctl import archive_spool
from backupctl.repository import Repository
from engine_tools.postgresql import wal

PASSWORD = "correct horse battery staple"
MIB = 1 << 20
SEGMENTS = [f"0000000100000000000000{i:02X}" for i in range(1, 9)]


def _data_dir(root: Path, system: int | None) -> Path:
    """A data directory with a pg_wal (and, with ``system``, a pg_control naming that system)."""
    (root / "pg_wal" / "archive_status").mkdir(parents=True)
    if system is not None:
        (root / "global").mkdir()
        (root / "global" / "pg_control").write_bytes(struct.pack("<Q", system) + bytes(8184))
    return root


@pytest.fixture
def archive(tmp_path):
    """Segments 01-08 but 07 archived by one batch push of a server of system 7; the repository,
    the state directory, and the segments' bytes."""
    repo_url, state = str(tmp_path / "repo"), str(tmp_path / "state")
    source = _data_dir(tmp_path / "source", 7)
    contents = {}
    for i, name in enumerate(SEGMENTS):
        if name.endswith("07"):
            continue
        contents[name] = os.urandom(1024) * (MIB // 1024)
        (source / "pg_wal" / name).write_bytes(contents[name])
        (source / "pg_wal" / "archive_status" / f"{name}.ready").touch()
    Repository.init(repo_url, PASSWORD).close()
    with Repository.open(repo_url, PASSWORD) as repo:
        wal.push(repo, str(source / "pg_wal" / SEGMENTS[0]), cluster="c", org="default", state_dir=state, tags=[])
    return repo_url, state, contents


def _fetch(repo_url: str, state: str, name: str, dest: Path) -> bool:
    with Repository.open(repo_url, PASSWORD) as repo:
        return wal.fetch(repo, name, str(dest), cluster="c", org="default", state_dir=state)


def test_a_fetch_reads_the_next_segments_ahead_and_their_calls_take_them(archive, tmp_path, monkeypatch):
    repo_url, state, contents = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "4")
    restored = _data_dir(tmp_path / "restored", 7)
    dest = restored / "pg_wal" / "RECOVERYXLOG"
    assert _fetch(repo_url, state, SEGMENTS[0], dest) and dest.read_bytes() == contents[SEGMENTS[0]]
    spool = Path(archive_spool.fetched_dir(state, "7"))
    assert sorted(os.listdir(spool)) == SEGMENTS[1:5]
    assert all((spool / n).read_bytes() == contents[n] for n in SEGMENTS[1:5])
    assert oct(spool.stat().st_mode & 0o777) == "0o700"          # WAL: the server's own data

    assert archive_spool.take_fetched(state, SEGMENTS[1], str(dest))
    assert dest.read_bytes() == contents[SEGMENTS[1]] and not (spool / SEGMENTS[1]).exists()
    assert not archive_spool.take_fetched(state, SEGMENTS[1], str(dest))    # served once

    # 04 through the repository (the spool lost it, say): 03, passed, and 04 go, 05 waits, 06
    # comes, and 07, a gap, ends the read ahead (recovery stops there)
    (spool / SEGMENTS[3]).unlink()
    assert _fetch(repo_url, state, SEGMENTS[3], dest) and dest.read_bytes() == contents[SEGMENTS[3]]
    assert sorted(os.listdir(spool)) == SEGMENTS[4:6]


def test_files_fetched_ahead_go_only_to_the_system_they_came_from(archive, tmp_path, monkeypatch):
    repo_url, state, contents = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "2")
    mine = _data_dir(tmp_path / "mine", 7)
    assert _fetch(repo_url, state, SEGMENTS[0], mine / "pg_wal" / "RECOVERYXLOG")
    other = _data_dir(tmp_path / "other", 8)                      # initialised again: another system
    assert not archive_spool.take_fetched(state, SEGMENTS[1], str(other / "pg_wal" / "RECOVERYXLOG"))
    assert not _fetch(repo_url, state, SEGMENTS[1], other / "pg_wal" / "RECOVERYXLOG")   # nor its archive
    assert archive_spool.take_fetched(state, SEGMENTS[1], str(mine / "pg_wal" / "RECOVERYXLOG"))


def test_no_read_ahead_when_turned_off(archive, tmp_path, monkeypatch):
    repo_url, state, _ = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "0")
    restored = _data_dir(tmp_path / "restored", 7)
    assert _fetch(repo_url, state, SEGMENTS[0], restored / "pg_wal" / "RECOVERYXLOG")
    assert not os.path.exists(archive_spool.fetched_dir(state, "7"))


def test_wal_fetch_answers_from_the_spool_without_the_catalogue(tmp_path):
    """The fast path: with the catalogue unreachable, a file fetched ahead is still served (exit 0);
    one that was not is a failure (126), never 'not archived' (1), which would end recovery."""
    home = tmp_path / "home"
    restored = _data_dir(tmp_path / "restored", 7)
    spool = Path(archive_spool.fetched_dir(str(home / "archive" / "default" / "c"), "7"))
    spool.mkdir(parents=True)
    (spool / SEGMENTS[1]).write_bytes(b"w" * 4096)
    env = {**os.environ, "BACKUPCTL_HOME": str(home), "BACKUPCTL_DATABASE_URL": "postgresql+psycopg://nobody@/none"}
    dest = restored / "pg_wal" / "RECOVERYXLOG"

    def fetch(name: str) -> subprocess.CompletedProcess:
        return subprocess.run(["backupctl", "wal-fetch", "--cluster", "c", name, str(dest)], env=env,
                              capture_output=True, text=True)

    served = fetch(SEGMENTS[1])
    assert served.returncode == 0, served.stderr
    assert dest.read_bytes() == b"w" * 4096 and not (spool / SEGMENTS[1]).exists()
    missed = fetch(SEGMENTS[2])
    assert missed.returncode == 126, missed.stderr


def test_a_file_fetched_ahead_is_copied_to_another_file_system(tmp_path, monkeypatch):
    """rename(2) cannot cross file systems (BACKUPCTL_HOME on one, the data directory on another):
    the file is copied into place, then dropped from the spool."""
    import errno

    state = str(tmp_path / "state")
    restored = _data_dir(tmp_path / "restored", 7)
    spool = Path(archive_spool.fetched_dir(state, "7"))
    spool.mkdir(parents=True)
    (spool / SEGMENTS[1]).write_bytes(b"segment" * 1000)

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(archive_spool.os, "rename", cross_device)
    dest = restored / "pg_wal" / "RECOVERYXLOG"
    assert archive_spool.take_fetched(state, SEGMENTS[1], str(dest))
    assert dest.read_bytes() == b"segment" * 1000 and not (spool / SEGMENTS[1]).exists()
    assert sorted(os.listdir(restored / "pg_wal")) == ["RECOVERYXLOG", "archive_status"]   # no temporary left
