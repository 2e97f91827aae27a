"""The WAL of one database system: a backup is Completed only when its archive holds every segment
from its start to its stop, and a restore replays only its own system's segments."""

from __future__ import annotations

import struct
from datetime import datetime, timezone

import pytest

from backupctl.errors import BackupctlError
from backupctl.repository import Repository
from engine_tools.base import LogContext
from engine_tools.postgresql import wal
from engine_tools.postgresql.backup import _archive_own_wal
from tests.conftest import PASSWORD

SEGMENT = 1024 * 1024


@pytest.fixture
def archive(fs_repo_url, tmp_path):
    """A new repository and a state directory for cluster pg1's archive."""
    state = tmp_path / "state"
    state.mkdir()
    return Repository.init(fs_repo_url, PASSWORD), str(state)


def _push(repo, state: str, path, **kwargs):
    return wal.push(repo, str(path), cluster="pg1", org="default", state_dir=state, tags=[], **kwargs)


def _data_dir(root, system_identifier: int):
    (root / "global").mkdir(parents=True)
    (root / "global" / "pg_control").write_bytes(struct.pack("<Q", system_identifier) + bytes(8184))
    (root / "pg_wal" / "archive_status").mkdir(parents=True)
    for seg in (2, 3):
        (root / "pg_wal" / f"00000001000000000000000{seg}").write_bytes(bytes([seg]) * SEGMENT)
    return root


def test_segments_another_archive_command_took_fail_the_backup_until_the_archive_has_them(archive, tmp_path):
    data = _data_dir(tmp_path / "data", 7)
    # segment 2 was archived by an archive_command that is not this cluster's wal-push (say 'true')
    (data / "pg_wal" / "archive_status" / "000000010000000000000002.done").touch()
    repo, state = archive
    ctx = LogContext(cluster="pg1", org="default", state_dir=state, command="backupctl")
    with pytest.raises(BackupctlError, match="lacks 1 WAL segment.*first 000000010000000000000002") as err:
        _archive_own_wal(repo, ctx, str(data), 1, "0/200028", "0/300100", SEGMENT)
    assert "--archive-config" in str(err.value)
    stored = wal.refresh_listing(repo, ctx.state_dir, "pg1", "default").files["000000010000000000000003"]
    written = datetime.fromtimestamp((data / "pg_wal" / "000000010000000000000003").stat().st_mtime, timezone.utc)
    assert stored.written == written.isoformat()                        # when the server last wrote it

    _push(repo, state, data / "pg_wal" / "000000010000000000000002", batch=False)
    _archive_own_wal(repo, ctx, str(data), 1, "0/200028", "0/300100", SEGMENT)     # now complete


def test_a_segment_archived_from_another_database_does_not_count(archive, tmp_path):
    other = _data_dir(tmp_path / "other", 8)                  # same names, another system identifier
    repo, state = archive
    ctx = LogContext(cluster="pg1", org="default", state_dir=state, command="backupctl")
    _push(repo, state, other / "pg_wal" / "000000010000000000000002", batch=False)
    data = _data_dir(tmp_path / "data", 7)
    (data / "pg_wal" / "archive_status" / "000000010000000000000002.done").touch()
    with pytest.raises(BackupctlError, match="first 000000010000000000000002"):
        _archive_own_wal(repo, ctx, str(data), 1, "0/200028", "0/300100", SEGMENT)


def test_a_restore_fetches_the_segment_of_its_own_system_when_two_share_a_name(archive, tmp_path):
    """A cluster initialised again under the same name archives WAL of the same names."""
    repo, state = archive
    first, second = _data_dir(tmp_path / "first", 7), _data_dir(tmp_path / "second", 8)
    (second / "pg_wal" / "000000010000000000000002").write_bytes(b"\x09" * SEGMENT)
    for data in (first, second):                    # the second system's push is the later one
        _push(repo, state, data / "pg_wal" / "000000010000000000000002", batch=False)
    for system, expected in ((7, bytes([2])), (8, b"\x09")):    # restores of each system's backups
        restored = _data_dir(tmp_path / f"restored-{system}", system)
        dest = restored / "pg_wal" / "RECOVERYXLOG"
        assert wal.fetch(repo, "000000010000000000000002", str(dest), cluster="pg1", org="default", state_dir=state)
        assert dest.read_bytes() == expected * SEGMENT


def test_a_file_archived_again_is_done_if_the_same_and_refused_if_not(archive, tmp_path):
    """PostgreSQL archives a file again after a crash; a former primary may archive other bytes."""
    from backupctl.repository.snapshot import list_snapshot_ids

    repo, state = archive
    data = _data_dir(tmp_path / "data", 7)
    segment = data / "pg_wal" / "000000010000000000000002"
    first = _push(repo, state, segment, batch=False)
    snapshots = len(list_snapshot_ids(repo.store))
    again = _push(repo, state, segment, batch=False)
    assert first.stored == ["000000010000000000000002"] and again.stored == []
    assert len(list_snapshot_ids(repo.store)) == snapshots                     # nothing stored twice
    segment.write_bytes(b"\x05" * SEGMENT)                                      # same name and size, other bytes
    with pytest.raises(BackupctlError, match="archived already, with other contents"):
        _push(repo, state, segment, batch=False)
    restored = _data_dir(tmp_path / "restored", 7)
    wal.fetch(repo, "000000010000000000000002", str(restored / "pg_wal" / "X"), cluster="pg1", org="default",
              state_dir=state)
    assert (restored / "pg_wal" / "X").read_bytes() == bytes([2]) * SEGMENT     # the archived copy is kept


def test_a_batch_leaves_out_a_waiting_file_archived_already(archive, tmp_path):
    repo, state = archive
    data = _data_dir(tmp_path / "data", 7)
    pg_wal = data / "pg_wal"
    _push(repo, state, pg_wal / "000000010000000000000002", batch=False)
    (pg_wal / "000000010000000000000002").write_bytes(b"\x05" * SEGMENT)       # waiting, other bytes
    (pg_wal / "archive_status" / "000000010000000000000002.ready").touch()
    result = _push(repo, state, pg_wal / "000000010000000000000003")
    assert result.stored == ["000000010000000000000003"]                       # stored; the other left out


def test_a_waiting_file_archived_already_is_left_out_without_reading_it_back(archive, tmp_path, monkeypatch):
    """A backlog of such files must not cost a read of each, at every push."""
    repo, state = archive
    data = _data_dir(tmp_path / "data", 7)
    pg_wal = data / "pg_wal"
    _push(repo, state, pg_wal / "000000010000000000000002", batch=False)
    (pg_wal / "archive_status" / "000000010000000000000002.ready").touch()     # archived, not yet noted
    compared = []
    real = wal._same_bytes
    monkeypatch.setattr(wal, "_same_bytes", lambda *a: compared.append(a) or real(*a))
    result = _push(repo, state, pg_wal / "000000010000000000000003")
    assert result.stored == ["000000010000000000000003"] and compared == []
    again = _push(repo, state, pg_wal / "000000010000000000000002")
    assert again.stored == [] and len(compared) == 1                            # asked for: compared once


def test_restore_points_of_another_system_of_the_same_name_are_not_seen(archive, tmp_path):
    repo, state = archive
    for system, lsn in (("7", "0/3000028"), ("8", "0/5000028")):     # the second system's is the later one
        wal.record_restore_point(repo, cluster="pg1", org="default", name="before-upgrade", lsn=lsn, timeline=1,
                                 state_dir=state, tags=[], system_identifier=system)
    assert wal.refresh_listing(repo, state, "pg1", "default", "7").restore_points["before-upgrade"].lsn == "0/3000028"
    assert wal.refresh_listing(repo, state, "pg1", "default", "8").restore_points["before-upgrade"].lsn == "0/5000028"


def test_a_segment_recycled_before_the_backup_reads_it_is_judged_by_the_archive(archive, tmp_path, monkeypatch):
    """Archived by the server and recycled meanwhile: not a traceback, the listing decides."""
    from backupctl import archive_spool

    data = _data_dir(tmp_path / "data", 7)
    repo, state = archive
    _push(repo, state, data / "pg_wal" / "000000010000000000000002", batch=False)
    real = archive_spool.identity

    def identity(path):
        if path.endswith("000000010000000000000003"):
            raise FileNotFoundError(2, "No such file or directory", path)
        return real(path)

    monkeypatch.setattr(archive_spool, "identity", identity)
    ctx = LogContext(cluster="pg1", org="default", state_dir=state, command="backupctl")
    with pytest.raises(BackupctlError, match="first 000000010000000000000003"):
        _archive_own_wal(repo, ctx, str(data), 1, "0/200028", "0/300100", SEGMENT)


def test_the_servers_system_identifier_is_read_as_pg_control_stores_it():
    """PostgreSQL's int8 shows an identifier made after January 2038 as negative."""
    from engine_tools.postgresql.connect import server_system_identifier

    class Conn:
        def execute(self, sql):
            class Row:
                def fetchone(self):
                    return (-7000000000000000000,)
            return Row()

    assert server_system_identifier(Conn()) == str(2**64 - 7000000000000000000)
    packed = struct.pack("<q", -7000000000000000000)            # the same 8 bytes in pg_control
    assert struct.unpack("<Q", packed)[0] == int(server_system_identifier(Conn()))
