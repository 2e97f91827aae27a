"""The retention sweep against a user acting between its plan and its deletions."""

from __future__ import annotations

from sqlalchemy import select

from backupctl.catalog.db import session_scope
from backupctl.catalog.models import Backup, BackupPolicy
from backupctl.retention.sweep import apply, plan
from backupctl.services.backups import create_backup
from tests.catalog.conftest import backupctl_env, data_dir, repo_path, run  # noqa: F401 - fixtures
from tests.catalog.test_backup_create import _setup


def test_backup_protected_during_a_sweep_is_not_deleted(run, repo_path, data_dir):  # noqa: F811
    _setup(run, repo_path, data_dir)
    run("policy", "create", "p", "--cluster", "pg", "--method", "volume", "--keep-last", "1")
    with session_scope() as s:
        pid = s.scalar(select(BackupPolicy.id).where(BackupPolicy.name == "p"))
        names = []
        for i in range(3):
            (data_dir / f"f{i}").write_bytes(bytes([i]) * 1000)
            names.append(create_backup(s, cluster="pg", method="volume", policy_id=pid).name)
    with session_scope() as sweeper:
        plans = plan(sweeper)                                   # the sweep decides...
        assert {r.id for r in plans[0].decision.deleted()} == set(names[:2])
        with session_scope() as user:                           # ...a user protects one meanwhile...
            b = user.scalar(select(Backup).where(Backup.name == names[0]))
            b.deletion_protection = True
        report = apply(sweeper, plans, reclaim=False)           # ...and the sweep goes on
    with session_scope() as s:
        left = set(s.scalars(select(Backup.name)))
    assert names[0] in left, f"protected backup {names[0]} deleted by the sweep: {report.to_dict()}"
