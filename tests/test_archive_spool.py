"""The spool answers "archived" only for the very file a batch push stored."""

from __future__ import annotations

import os

from backupctl import archive_spool

NAME = "000000010000000000000005"


def _segment(path, fill: int, mtime_ns: int):
    path.write_bytes(bytes([fill]) * 4096)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_a_marked_file_is_answered_once(tmp_path):
    seg = _segment(tmp_path / NAME, 1, 1_700_000_000_000_000_000)
    archive_spool.mark(str(tmp_path / "state"), NAME, archive_spool.identity(str(seg)))
    assert archive_spool.take(str(tmp_path / "state"), str(seg)) is True
    assert archive_spool.take(str(tmp_path / "state"), str(seg)) is False          # consumed


def test_another_file_of_the_same_name_and_size_is_not_answered_from_a_stale_marker(tmp_path):
    """A cluster initialised again under the same name starts its WAL names over."""
    state = str(tmp_path / "state")
    (tmp_path / "old").mkdir()
    old = _segment(tmp_path / "old" / NAME, 1, 1_700_000_000_000_000_000)
    archive_spool.mark(state, NAME, archive_spool.identity(str(old)))
    new = _segment(tmp_path / NAME, 2, 1_800_000_000_000_000_000)                  # same size, other content
    assert archive_spool.take(state, str(new)) is False
    assert not archive_spool.is_marked(state, NAME)                                # dropped: stored again


def test_a_marker_that_holds_only_a_size_is_not_trusted(tmp_path):
    seg = _segment(tmp_path / NAME, 1, 1_700_000_000_000_000_000)
    os.makedirs(tmp_path / "state" / "pushed")
    (tmp_path / "state" / "pushed" / NAME).write_text("4096")                      # written by an older version
    assert archive_spool.take(str(tmp_path / "state"), str(seg)) is False
