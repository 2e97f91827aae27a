"""The recovery settings of an earlier restore do not apply to the next one.

A server restored once (in place, say) and then backed up carries that restore's settings in
postgresql.auto.conf. A restore of that backup to the latest state sets no target of its own, so
the old recovery_target_lsn stopped its recovery (found by the WAL expiry review). As pgBackRest
does, they are commented out before the new settings are written.
"""

from __future__ import annotations

import json

from tests.engines.postgresql.conftest import restored_rows


def test_a_backup_carrying_an_earlier_restores_target_restores_to_the_latest_state(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t(id int PRIMARY KEY)")
    conn.execute("INSERT INTO t SELECT generate_series(1, 5)")
    early = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    with open(src.data / "postgresql.auto.conf", "a") as f:     # a primary never reads them
        f.write(f"recovery_target_lsn = '{early}'\nrecovery_target_timeline = '1'\nrestore_command = 'false'\n")
    conn.execute("INSERT INTO t SELECT generate_series(6, 10)")
    full = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)["name"]
    conn.execute("INSERT INTO t SELECT generate_series(11, 15)")
    src.wait_archived(conn)

    proc, target, port = env.restore_started("restored", "--backup", full, check=False)
    assert proc.returncode == 0, proc.stderr
    auto = (target / "postgresql.auto.conf").read_text()
    assert f"# removed by backupctl restore: recovery_target_lsn = '{early}'" in auto, auto
    assert restored_rows({"env": env}, target, port) == list(range(1, 16))
