"""`retention run` end to end: catalogue records, repository snapshots and space go; kept backups restore."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from backupctl.catalog.db import session_scope
from backupctl.catalog.models import Backup, BackupPolicy
from backupctl.repository import Repository
from backupctl.repository.restore import restore_snapshot
from backupctl.repository.stats import repository_stats
from backupctl.services.backups import create_backup
from tests.catalog.conftest import PASSWORD
from tests.catalog.test_backup_create import _same_tree, _setup


def test_retention_run_deletes_expired_backups_snapshots_and_space(run, repo_path: Path, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    _setup(run, repo_path, data_dir)
    run("policy", "create", "daily", "--cluster", "pg", "--schedule", "volume=0 3 * * *", "--keep-last", "1")
    names = []
    with session_scope() as s:
        policy_id = s.scalar(select(BackupPolicy.id).where(BackupPolicy.name == "daily"))
        for i in range(3):
            (data_dir / f"changing-{i}.bin").write_bytes(bytes([i]) * 300_000 + bytes(range(256)) * i)
            names.append(create_backup(s, cluster="pg", method="volume", policy_id=policy_id).name)
        # The first two are from ten days ago: outside the schedule's 7d retentionPeriod and not the last one.
        for b in s.scalars(select(Backup).where(Backup.name.in_(names[:2]))):
            b.started_at -= timedelta(days=10)
            b.completed_at -= timedelta(days=10)
    with Repository.open(str(repo_path), PASSWORD) as repo:
        stored_before = repository_stats(repo)["stored_bytes"]
        assert len(repo.snapshots()) == 3

    dry = json.loads(run("retention", "run", "--dry-run", "--json").stdout)
    assert dry["dry_run"] is True
    assert sorted(d["id"] for p in dry["policies"] for d in p["delete"]) == sorted(names[:2])
    [kept] = [k for p in dry["policies"] for k in p["keep"]]
    assert kept["id"] == names[2] and kept["reasons"]
    assert len(json.loads(run("backup", "list", "--json").stdout)) == 3      # dry run changed nothing

    done = run("retention", "run", "--json")
    assert done.exit_code == 0, done.output
    left = json.loads(run("backup", "list", "--json").stdout)
    assert [b["name"] for b in left] == [names[2]]
    with Repository.open(str(repo_path), PASSWORD) as repo:
        snaps = repo.snapshots()
        assert [s.metadata["backup"] for s in snaps] == [names[2]]
        assert repository_stats(repo)["stored_bytes"] < stored_before      # gc reclaimed the space
        restore_snapshot(repo, snaps[0], str(tmp_path / "restored"))
    assert _same_tree(data_dir, tmp_path / "restored")
