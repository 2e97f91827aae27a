"""A backup's copy of pg_control must be whole: a copy read while the server rewrote it is refused."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from engine_tools.postgresql.backup import control_file_is_whole
from tests.engines.postgresql.conftest import BINDIR, _chown_postgres, as_postgres


def test_a_real_pg_control_is_whole_and_a_torn_one_is_not():
    root = Path(tempfile.mkdtemp(prefix="backupctl-control-", dir="/tmp"))
    _chown_postgres(root)
    proc = as_postgres([f"{BINDIR}/initdb", "-D", str(root / "data"), "-U", "postgres", "--no-sync",
                        "--no-instructions"])
    assert proc.returncode == 0, proc.stderr
    control = (root / "data" / "global" / "pg_control").read_bytes()
    assert len(control) == 8192 and control_file_is_whole(control)
    for at in (0, 40, 200):                      # a byte of the old contents anywhere in the data
        torn = bytearray(control)
        torn[at] ^= 0xFF
        assert not control_file_is_whole(bytes(torn))
    assert not control_file_is_whole(bytes(8192))                         # all zeros: never written
    shutil.rmtree(root)
