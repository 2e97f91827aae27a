"""A backup killed after its data snapshot was stored leaves nothing behind once its Failed row goes.

Before, the catalogue learnt the snapshots only when the backup completed: a killed backup's row named
none, so deleting it (by hand or by retention) left the data snapshot in the repository for good (gc
keeps every snapshot), a full copy of the cluster per killed backup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.engines.postgresql.test_backup_failure import data_snapshots


def test_a_killed_backup_names_its_data_snapshot_and_deleting_it_forgets_it(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    # Killed at the step right after the data snapshot is stored (the check of the stored pg_control).
    killed = subprocess.run(["runuser", "-u", "postgres", "--", sys.executable, "-c", """
import os, signal
from backupctl.catalog.db import session_scope
from backupctl.services.backups import create_backup
import engine_tools.postgresql.backup as pgb
pgb._check_control_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
with session_scope() as s:
    create_backup(s, cluster="src")
"""], capture_output=True, text=True, env={**os.environ, **env.env}, cwd=str(env.root), timeout=300)
    assert killed.returncode == 128 + 9, killed.stderr      # runuser reports the SIGKILL
    leftover = data_snapshots(env)
    assert len(leftover) == 1

    # The next backup finds the killed one's process gone and marks it Failed; its row names the snapshot.
    good = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
    rows = {b["name"]: b for b in json.loads(env.backupctl("backup", "list", "--json").stdout)}
    dead = next(b for b in rows.values() if b["name"] != good["name"])
    assert dead["phase"] == "Failed" and "interrupted" in dead["error_message"]
    assert dead["snapshot_ids"] == sorted(leftover)

    env.backupctl("backup", "delete", dead["name"])
    remaining = data_snapshots(env)
    assert remaining and remaining <= set(good["snapshot_ids"])      # the good backup's, and only it
