"""A backup in the recycle bin restores past the WAL fetched ahead.

The restored server's restore_command looked its source up among the registered clusters, so once
the source was unregistered (``--keep all``), every WAL file not fetched ahead failed (exit 126) and
the restore stopped. It now names the repository the restore planned with.
"""

from __future__ import annotations

import json

from tests.engines.postgresql.conftest import restored_rows


def test_a_recycled_backup_restores_to_the_latest_state_through_wal_fetch(source, monkeypatch):
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    full = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    for first in range(6, 26, 5):              # a segment each: more than the 1 MiB fetched ahead
        conn.execute(f"INSERT INTO t SELECT generate_series({first}, {first + 4})")
        src.wait_archived(conn)
    env.backupctl("cluster", "unregister", "src", "--keep", "all")
    src.stop()

    monkeypatch.setenv("BACKUPCTL_RESTORE_PREFETCH_MB", "1")
    proc, target, port = env.restore_started("restored", "--backup", full, check=False)
    assert proc.returncode == 0, proc.stderr
    stages = {s["name"]: s for s in json.loads(proc.stdout)["stages"]}
    assert stages["fetch_wal"]["details"]["files"] < 4, stages["fetch_wal"]     # the rest came through wal-fetch
    assert restored_rows({"env": env}, target, port) == list(range(1, 26))
