"""The recycle bin: backups kept when their cluster was unregistered go after a recycle-bin period,
chains stay whole, `retention run --dry-run` says why; `backup recover` takes one back out."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from backupctl.catalog.db import session_scope
from backupctl.catalog.models import Backup
from backupctl.repository import Repository
from backupctl.retention.policy import BackupRecord
from backupctl.retention.recycle_bin import RecycledBackup, decide_recycle_bin
from tests.catalog.conftest import PASSWORD
from tests.catalog.test_schedule_types import _setup

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _rec(rid: str, parent: str | None = None, days_in_bin: int = 0, **kw) -> RecycledBackup:
    start = NOW - timedelta(days=100)
    return RecycledBackup(BackupRecord(rid, "incremental" if parent else "full", start, start + timedelta(hours=1),
                                       parent_id=parent, **kw), recycled_at=NOW - timedelta(days=days_in_bin))


def test_a_recycled_full_stays_while_a_recycled_incremental_that_needs_it_stays() -> None:
    d = decide_recycle_bin([_rec("full", days_in_bin=40), _rec("inc", "full", days_in_bin=10)], timedelta(days=30), NOW)
    assert d.delete == {}
    assert d.keep["full"] == ["needed by inc"]
    assert d.keep["inc"][0].startswith("in the recycle bin until 2026-06-21")
    d = decide_recycle_bin([_rec("full", days_in_bin=40), _rec("inc", "full", days_in_bin=31)], timedelta(days=30), NOW)
    assert [r.id for r in d.deleted()] == ["inc", "full"]                   # children before parents
    assert d.delete["full"].startswith("in the recycle bin since 2026-04-22 00:00 UTC, longer than 30d")


def test_protected_and_needed_by_a_live_backup_stay() -> None:
    backups = [_rec("p", days_in_bin=90, protected=True),
               RecycledBackup(_rec("f", days_in_bin=90).record, NOW - timedelta(days=90), needed_by="live-inc")]
    d = decide_recycle_bin(backups, timedelta(days=30), NOW)
    assert d.delete == {} and d.keep == {"p": ["deletion protection on"],
                                         "f": ["needed by live-inc, which is not in the recycle bin"]}


def _two_backups_then_unregister(run, data_dir) -> tuple[str, str]:
    full = json.loads(run("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--json").stdout)["name"]
    (data_dir / "more").write_bytes(b"y" * 70_000)
    inc = json.loads(run("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--type", "incremental",
                         "--json").stdout)["name"]
    run("cluster", "unregister", "pg", "--keep", "all")
    return full, inc


def _age_in_bin(names_days: dict[str, int]) -> None:
    with session_scope() as s:
        for name, days in names_days.items():
            s.execute(update(Backup).where(Backup.name == name)
                      .values(recycled_at=datetime.now(timezone.utc) - timedelta(days=days)))


def test_retention_removes_recycled_backups_after_the_period_and_dry_run_says_why(run, chain_tool, repo_path,
                                                                                  data_dir) -> None:
    _setup(run, repo_path, data_dir)
    run("policy", "create", "p", "--cluster", "pg", "--schedule", "pgfiles=0 3 * * *", "--keep-last", "1")
    full, inc = _two_backups_then_unregister(run, data_dir)
    shown = json.loads(run("backup", "show", full, "--json").stdout)
    assert shown["recycled"] is True and shown["recycled_at"] is not None

    dry = json.loads(run("retention", "run", "--dry-run", "--json").stdout)
    assert dry["policies"] == []                         # the unregistered cluster's policy no longer applies
    assert dry["recycle_bin"]["period"] == "30d" and dry["recycle_bin"]["delete"] == []
    assert {k["id"]: k["reasons"][0].split(" until ")[0] for k in dry["recycle_bin"]["keep"]} == \
        {full: "in the recycle bin", inc: "in the recycle bin"}

    _age_in_bin({full: 40, inc: 5})                      # the full expired, but the incremental needs it
    dry = json.loads(run("retention", "run", "--dry-run", "--json").stdout)
    assert dry["recycle_bin"]["delete"] == []
    assert {k["id"]: k["reasons"] for k in dry["recycle_bin"]["keep"]}[full] == [f"needed by {inc}"]
    text = run("retention", "run", "--dry-run").stdout
    assert f"keep   {full} (full): needed by {inc}" in text

    _age_in_bin({inc: 31})
    dry = json.loads(run("retention", "run", "--dry-run", "--json").stdout)
    assert [(d["id"], d["reason"].split(",")[1].strip()) for d in dry["recycle_bin"]["delete"]] == \
        [(inc, "longer than 30d"), (full, "longer than 30d")]
    assert f"would delete {inc} (incremental): in the recycle bin since" in run("retention", "run", "--dry-run").stdout
    assert len(json.loads(run("backup", "list", "--json").stdout)) == 2        # a dry run changes nothing

    done = json.loads(run("retention", "run", "--json").stdout)
    assert done["result"]["deleted"] == [inc, full] and done["result"]["errors"] == {}
    assert json.loads(run("backup", "list", "--json").stdout) == []
    with Repository.open(str(repo_path), PASSWORD) as repo:
        assert repo.snapshots() == []


def test_the_recycle_bin_period_comes_from_the_environment(run, chain_tool, repo_path, data_dir,
                                                           monkeypatch) -> None:
    _setup(run, repo_path, data_dir)
    full, inc = _two_backups_then_unregister(run, data_dir)
    _age_in_bin({full: 3, inc: 3})
    monkeypatch.setenv("BACKUPCTL_RECYCLE_BIN_RETENTION", "2d12h")
    dry = json.loads(run("retention", "run", "--dry-run", "--json").stdout)
    assert dry["recycle_bin"]["period"] == "2d12h"
    assert sorted(d["id"] for d in dry["recycle_bin"]["delete"]) == sorted([full, inc])
    monkeypatch.setenv("BACKUPCTL_RECYCLE_BIN_RETENTION", "2 weeks")
    line = run.fails("retention", "run", "--dry-run")
    assert line.startswith("error: invalid BACKUPCTL_RECYCLE_BIN_RETENTION '2 weeks': retention period '2 weeks' "
                           "does not parse")


def test_recover_attaches_a_recycled_backup_and_its_chain_to_a_registered_cluster(run, chain_tool, repo_path,
                                                                                  data_dir, tmp_path) -> None:
    _setup(run, repo_path, data_dir)
    full, inc = _two_backups_then_unregister(run, data_dir)
    run("cluster", "register", "cache", "--engine", "redis", "--host", "h", "--port", "6379")
    line = run.fails("backup", "recover", inc, "--cluster", "cache")
    assert line == (f"error: backup {inc} is a postgresql backup and cluster cache is redis (recover it into a "
                    "postgresql cluster: register one with 'backupctl cluster register NAME --engine postgresql ...')")
    run("cluster", "register", "pg2", "--engine", "postgresql", "--host", "h", "--port", "5432",
        "--data-dir", str(data_dir))
    out = json.loads(run("backup", "recover", inc, "--cluster", "pg2", "--json").stdout)
    assert [b["name"] for b in out] == [full, inc]            # the incremental comes with the full it needs
    with session_scope() as s:
        rows = s.execute(select(Backup.name, Backup.recycled, Backup.recycled_at, Backup.cluster_name)
                         .order_by(Backup.id)).all()
    assert rows == [(full, False, None, "pg2"), (inc, False, None, "pg2")]
    assert [b["name"] for b in json.loads(run("backup", "list", "--cluster", "pg2", "--json").stdout)] == [full, inc]
    assert json.loads(run("backup", "list", "--recycled", "--json").stdout) == []
    line = run.fails("backup", "recover", inc, "--cluster", "pg2")
    assert line.startswith(f"error: backup {inc} is not in the recycle bin")
    # a recovered backup is the new cluster's: an incremental of pg2 builds on it
    b = json.loads(run("backup", "create", "--cluster", "pg2", "--method", "pgfiles", "--type", "incremental",
                       "--json").stdout)
    assert b["parent"] == inc
