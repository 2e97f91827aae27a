"""A backup killed after its data snapshot was stored leaves nothing behind once its Failed row goes.

Before, the catalogue learnt the snapshots only when the backup completed: a killed backup's row named
none, so deleting it (by hand or by retention) left the data snapshot in the repository for good (gc
keeps every snapshot), a full copy of the cluster per killed backup.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

from tests.engines.postgresql.test_backup_failure import FAILING_AFTER_THE_DATA, data_snapshots
from tests.engines.postgresql.test_retention_pitr import run_as_postgres


def test_a_killed_backup_names_its_data_snapshot_and_deleting_it_forgets_it(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    # Killed at the step right after the data snapshot is stored (the check of the stored pg_control).
    killed = run_as_postgres(env, """
import os, signal
from backupctl.catalog.db import session_scope
from backupctl.services.backups import create_backup
import engine_tools.postgresql.backup as pgb
pgb._check_control_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
with session_scope() as s:
    create_backup(s, cluster="src")
""")
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


def test_killed_after_its_label_is_stored_then_deleted_is_not_rebuilt(source):
    """The label snapshot stored, the process killed before the catalogue recorded it: deleting the row
    forgets the data snapshot only, and 'catalog rebuild' must not bring back a backup without its data."""
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    good = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
    killed = run_as_postgres(env, """
import os, signal
from backupctl.catalog.db import session_scope
from backupctl.services.backups import create_backup
import engine_tools.postgresql.backup as pgb
stream = pgb.backup_stream
def stored_then_killed(*a, **k):
    stream(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
pgb.backup_stream = stored_then_killed
with session_scope() as s:
    create_backup(s, cluster="src")
""")
    assert killed.returncode == 128 + 9, killed.stderr
    dead = next(b for b in json.loads(env.backupctl("backup", "list", "--json").stdout) if b["name"] != good["name"])
    env.backupctl("backup", "delete", dead["name"])
    fresh = dataclasses.replace(env, env={**env.env, "BACKUPCTL_HOME": str(env.root / "home-rebuilt")})
    (env.root / "home-rebuilt").mkdir()
    shutil.chown(env.root / "home-rebuilt", "postgres", "postgres")
    rebuilt = json.loads(fresh.backupctl("catalog", "rebuild", "--repo", env.repo_url, "--password-file",
                                         str(env.root / "password"), "--json").stdout)
    assert rebuilt["created"] == [good["name"]] and rebuilt["incomplete"] == [dead["name"]]


CATALOGUE_BUSY_ONCE = """
import sqlalchemy.exc
from sqlalchemy.orm import Session
from backupctl.catalog.db import session_scope
from backupctl.services.backups import create_backup
import engine_tools.postgresql.backup as pgb
busy = []
commit = Session.commit
def commit_unless_busy(self):
    if busy:
        busy.clear()
        raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("database is locked (injected)"))
    commit(self)
Session.commit = commit_unless_busy
paths = pgb.backup_paths
def stored_then_busy(*a, **k):
    snap = paths(*a, **k)
    busy.append(1)            # the commit that records the data snapshot fails
    return snap
pgb.backup_paths = stored_then_busy
"""


def test_a_busy_catalogue_while_a_snapshot_is_recorded_neither_fails_the_backup_nor_leaks(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    out = run_as_postgres(env, CATALOGUE_BUSY_ONCE + """
with session_scope() as s:
    print(create_backup(s, cluster="src").phase)
""")
    assert out.returncode == 0 and out.stdout.split()[-1] == "Completed", out.stderr
    [row] = json.loads(env.backupctl("backup", "list", "--json").stdout)
    assert data_snapshots(env) <= set(row["snapshot_ids"]) and data_snapshots(env)


def test_a_busy_catalogue_then_a_failure_still_forgets_the_snapshot(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    out = run_as_postgres(env, CATALOGUE_BUSY_ONCE + FAILING_AFTER_THE_DATA)
    assert "FAILED the control file check failed (injected)" in out.stdout, out.stderr
    assert data_snapshots(env) == set()
    [row] = json.loads(env.backupctl("backup", "list", "--json").stdout)
    assert row["phase"] == "Failed" and row["snapshot_ids"] == []
