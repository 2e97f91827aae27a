"""wal-fetch reads ahead: a fetch that opens the repository also fetches the segments that follow,
and the restore_command calls for those are answered from the spool, without the catalogue or the
repository (pgBackRest's asynchronous archive-get), for the database system they came from only."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
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


def test_concurrent_read_aheads_publish_a_half_written_segment(archive, tmp_path, monkeypatch):
    """From a review: two wal-fetch processes of the same system (two standbys, or a standby and a
    restore, on one host) read ahead into one spool through the same temporary name, and one's
    clean-up removed the other's file in the making: the first then renamed the second one's
    half-written file into place, and the next restore_command served it."""
    repo_url, state, contents = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "1")          # read ahead one segment: 02
    spool = archive_spool.fetched_dir(state, "7")
    real_copy = wal.copy_stream
    x_written, y_half, served = threading.Event(), threading.Event(), threading.Event()
    calls: list[str] = []
    guard = threading.Lock()

    def copy(reader, snap, out, name=None, progress=None):
        with guard:
            calls.append(name)
            first = len(calls) == 1
        if first:                                 # process X: all written, not yet renamed
            n = real_copy(reader, snap, out, name=name)
            x_written.set()
            assert y_half.wait(30)
            return n
        buf = io.BytesIO()                        # process Y: half way through its copy
        n = real_copy(reader, snap, buf, name=name)
        out.write(buf.getvalue()[: n // 2])
        out.flush()
        y_half.set()
        served.wait(30)
        out.write(buf.getvalue()[n // 2:])
        return n

    monkeypatch.setattr(wal, "copy_stream", copy)
    with Repository.open(repo_url, PASSWORD) as repo:
        listing = wal.refresh_listing(repo, state, "c", "default", "7")
    errors: list[BaseException] = []

    def run():
        try:
            with Repository.open(repo_url, PASSWORD) as repo:
                wal.read_ahead(repo, listing, SEGMENTS[0], spool)
        except BaseException as exc:              # noqa: BLE001 - a process's own read-ahead failure
            errors.append(exc)

    x = threading.Thread(target=run)
    x.start()
    assert x_written.wait(30)
    y = threading.Thread(target=run)
    y.start()
    x.join(30)
    dest = _data_dir(tmp_path / "standby", 7) / "pg_wal" / "RECOVERYXLOG"
    took = archive_spool.take_fetched(state, SEGMENTS[1], str(dest))
    got = dest.read_bytes() if took else None
    served.set()
    y.join(30)
    assert not took or got == contents[SEGMENTS[1]], \
        f"served {len(got)} bytes of {SEGMENTS[1]} instead of the {len(contents[SEGMENTS[1]])} archived"


def test_read_ahead_files_are_fsynced_before_they_get_their_name(archive, tmp_path, monkeypatch):
    """From a review: files read ahead got their name unsynced, so after a host crash the spool (kept
    across restarts) could hold an empty or zero-filled file under a segment's name, served with
    exit 0."""
    repo_url, state, _ = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "3")
    synced: set[int] = set()
    real_fsync = os.fsync

    def fsync(fd):
        synced.add(os.fstat(fd).st_ino)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    restored = _data_dir(tmp_path / "restored", 7)
    assert _fetch(repo_url, state, SEGMENTS[0], restored / "pg_wal" / "RECOVERYXLOG")
    spool = Path(archive_spool.fetched_dir(state, "7"))
    spooled = sorted(os.listdir(spool))
    assert spooled == SEGMENTS[1:4]
    not_synced = [n for n in spooled if (spool / n).stat().st_ino not in synced]
    assert not not_synced, f"spooled without fsync: {not_synced}"


def test_spool_holds_more_than_the_cap_after_recoveries_that_end_earlier(archive, tmp_path, monkeypatch):
    """From a review: only files before the one asked for were dropped, so each recovery that ended
    before what an earlier one left (restore drills to earlier points) added a full read-ahead."""
    repo_url, state, _ = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "2")
    restored = _data_dir(tmp_path / "restored", 7)
    dest = restored / "pg_wal" / "RECOVERYXLOG"
    assert _fetch(repo_url, state, SEGMENTS[4], dest)       # recovery 1 ends at 05: 06, 07 stay
    assert _fetch(repo_url, state, SEGMENTS[0], dest)       # recovery 2 ends at 01: 02, 03 stay too
    spool = Path(archive_spool.fetched_dir(state, "7"))
    total = sum((spool / n).stat().st_size for n in os.listdir(spool))
    assert total <= 2 * MIB, f"{total // MIB} MiB in the spool: {sorted(os.listdir(spool))}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a step as another user")
def test_a_spool_the_server_user_cannot_enter_fails_every_fetch(tmp_path):
    """From a review: a spool the server's OS user cannot enter (made 0700 by a wal-fetch run as
    another user) made every wal-fetch exit 126, also for files never read ahead, and recovery
    aborted. It only costs speed: the file comes from the repository."""
    root = Path(tempfile.mkdtemp(prefix="backupctl-fetch-ahead-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        state = root / "home" / "archive" / "default" / "c"
        spool = Path(archive_spool.fetched_dir(str(state), "7"))
        spool.mkdir(parents=True)
        for d in (root / "home", root / "home" / "archive", state.parent, state, spool.parent):
            os.chmod(d, 0o755)
        os.chmod(spool, 0o700)                   # as read_ahead makes it, owned by whoever ran first
        data = _data_dir(root / "data", 7)
        for dirpath, _dirs, files in os.walk(data):
            os.chown(dirpath, 65534, 65534)
            for n in files:
                os.chown(os.path.join(dirpath, n), 65534, 65534)
        code = ("import sys; from backupctl import archive_spool as s; "
                "print(s.take_fetched(sys.argv[1], sys.argv[2], sys.argv[3]))")
        proc = subprocess.run([sys.executable, "-c", code, str(state), SEGMENTS[1],
                               str(data / "pg_wal" / "RECOVERYXLOG")], user=65534, group=65534, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}, cwd=str(data), timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "False", \
            f"take_fetched did not fall back to the repository: {proc.stderr.strip().splitlines()[-1:]}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_read_ahead_leaves_another_fetchs_file_in_the_making_and_drops_a_killed_ones(archive, tmp_path,
                                                                                       monkeypatch):
    repo_url, state, _ = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "1")
    spool = Path(archive_spool.fetched_dir(state, "7"))
    spool.mkdir(parents=True)
    writing, killed = spool / f".{SEGMENTS[1]}.abc.tmp", spool / f".{SEGMENTS[2]}.def.tmp"
    writing.write_bytes(b"half")
    killed.write_bytes(b"half")
    two_hours_ago = os.stat(killed).st_mtime - 2 * wal.STALE_TEMPORARY
    os.utime(killed, (two_hours_ago, two_hours_ago))
    restored = _data_dir(tmp_path / "restored", 7)
    assert _fetch(repo_url, state, SEGMENTS[0], restored / "pg_wal" / "RECOVERYXLOG")
    assert sorted(os.listdir(spool)) == [writing.name, SEGMENTS[1]]


def test_fetching_a_history_file_leaves_the_segments_read_ahead(archive, tmp_path, monkeypatch):
    """Recovery asks for timeline history files between segments (a probe for newer timelines):
    such a fetch emptied the spool (from a review)."""
    repo_url, state, contents = archive
    monkeypatch.setenv("BACKUPCTL_FETCH_AHEAD_MB", "2")
    history = tmp_path / "source" / "pg_wal" / "00000002.history"
    history.write_text("1\t0/5000000\tno recovery target specified\n")
    with Repository.open(repo_url, PASSWORD) as repo:
        wal.push(repo, str(history), cluster="c", org="default", state_dir=state, tags=[])
    restored = _data_dir(tmp_path / "restored", 7)
    assert _fetch(repo_url, state, SEGMENTS[0], restored / "pg_wal" / "RECOVERYXLOG")
    assert _fetch(repo_url, state, "00000002.history", restored / "pg_wal" / "RECOVERYHISTORY")
    assert sorted(os.listdir(archive_spool.fetched_dir(state, "7"))) == SEGMENTS[1:3]
