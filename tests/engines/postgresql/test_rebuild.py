"""A catalogue rebuilt from the repository gets a PostgreSQL backup whole: both its snapshots and
its policy. Before, the rebuilt record named only the label snapshot (deleting it left the data
for good) and no policy (retention then never deleted it: "not made by this policy")."""

from __future__ import annotations

import json

from tests.engines.postgresql.test_backup_failure import data_snapshots
from tests.engines.postgresql.test_retention_pitr import policy_backup, py_as_postgres


def test_a_rebuilt_backup_names_its_data_snapshot_and_its_policy(source):
    env, src, conn = source
    env.backupctl("policy", "create", "p1", "--cluster", "src", "--method", "pg-physical", "--keep-last", "1")
    conn.execute("CREATE TABLE t AS SELECT generate_series(1, 1000) AS id")
    f1 = policy_backup(env, "p1", "src")
    original = json.loads(env.backupctl("backup", "show", f1, "--json").stdout)
    py_as_postgres(env, f"""
from sqlalchemy import delete
from backupctl.catalog.db import session_scope
from backupctl.catalog.models import Backup
with session_scope() as s:
    s.execute(delete(Backup).where(Backup.name == {f1!r}))      # the record lost, the repository intact
""")
    rebuilt = json.loads(env.backupctl("catalog", "rebuild", "--repo", env.repo_url, "--password-file",
                                       str(env.root / "password"), "--json").stdout)
    assert rebuilt["created"] == [f1]
    again = json.loads(env.backupctl("backup", "show", f1, "--json").stdout)
    assert sorted(again["snapshot_ids"]) == sorted(original["snapshot_ids"])
    assert again["restorable_from"] == original["restorable_from"]
    # made by p1 again: retention deletes it once a newer one is kept
    f2 = policy_backup(env, "p1", "src")
    report = json.loads(env.backupctl("retention", "run", "--json").stdout)["result"]
    assert report["deleted"] == [f1], report
    assert data_snapshots(env) == {json.loads(env.backupctl("backup", "show", f2, "--json").stdout)
                                   ["positions"]["data_snapshot"]}
