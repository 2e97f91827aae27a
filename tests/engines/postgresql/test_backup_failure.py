"""A backup that fails after its data snapshot was committed leaves nothing in the repository.

No catalogue row names such a snapshot, so it stayed for good: gc keeps every snapshot, and every
later gc counted its data as live.
"""

from __future__ import annotations

import json

from tests.engines.postgresql.test_retention_pitr import py_as_postgres


def data_snapshots(env) -> set[str]:
    listed = env.backupctl("snapshot", "list", "--repo", env.repo_url, "--password-file", str(env.root / "password"),
                           "--json")
    return {s["id"] for s in json.loads(listed.stdout) if "pg-data" in s["tags"]}


# A backup of "src", as postgres, failing at the step after its data snapshot is stored.
FAILING_AFTER_THE_DATA = """
from backupctl.catalog.db import session_scope
from backupctl.errors import BackupctlError
from backupctl.services.backups import create_backup
import engine_tools.postgresql.backup as pgb
def fails(*a, **k):
    raise BackupctlError("the control file check failed (injected)")
pgb._check_control_file = fails
try:
    with session_scope() as s:
        create_backup(s, cluster="src")
except BackupctlError as exc:
    print("FAILED", exc)
"""


def test_a_backup_failing_after_its_data_is_stored_forgets_it(source):
    env, src, conn = source
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    kept = json.loads(env.backupctl("backup", "create", "--cluster", "src", "--json").stdout)
    before = data_snapshots(env)
    assert set(kept["snapshot_ids"]) & before            # the good backup's data snapshot is listed
    out = py_as_postgres(env, FAILING_AFTER_THE_DATA)
    assert "FAILED the control file check failed (injected)" in out, out
    assert data_snapshots(env) == before
    phases = [b["phase"] for b in json.loads(env.backupctl("backup", "list", "--json").stdout)]
    assert phases == ["Completed", "Failed"]
