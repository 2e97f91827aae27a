"""Schedules carry a backup type: "full weekly, incremental daily" of one method, validated against
the method's capabilities, run by the scheduler as two jobs, exported as KubeBlocks objects."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import yaml
from sqlalchemy import select

from backupctl.catalog.db import get_engine, session_scope
from backupctl.catalog.models import (
    PHASE_COMPLETED,
    Backup,
    BackupPolicy,
    BackupSchedule,
)
from scheduler import catalog as scheduler_catalog
from scheduler.claims import recorded_runs
from scheduler.service import BackupScheduler, SchedulerConfig
from tests.catalog.test_policy_export import _schema

WEEKLY_FULL = "pgfiles=0 3 * * 0"
DAILY_INCREMENTAL = "pgfiles:incremental=0 3 * * 1-6"


def _setup(run, repo_path: Path, data_dir: Path) -> None:
    run("repo", "add", "main", "--url", str(repo_path), "--default")
    run("cluster", "register", "pg", "--engine", "postgresql", "--host", "127.0.0.1", "--port", "5432",
        "--data-dir", str(data_dir))


def _schedule_rows() -> list[tuple[str, str, str, bool]]:
    with session_scope() as s:
        return [(r.backup_method, r.backup_type, r.cron_expression, r.enabled)
                for r in s.scalars(select(BackupSchedule).order_by(BackupSchedule.id))]


def test_full_weekly_and_incremental_daily_of_one_method_are_two_schedule_rows(run, chain_tool, repo_path,
                                                                                data_dir) -> None:
    _setup(run, repo_path, data_dir)
    run("policy", "create", "p", "--cluster", "pg", "--schedule", WEEKLY_FULL, "--schedule", DAILY_INCREMENTAL)
    assert _schedule_rows() == [("pgfiles", "full", "0 3 * * 0", True),
                                ("pgfiles", "incremental", "0 3 * * 1-6", True)]
    shown = json.loads(run("policy", "show", "p", "--json").stdout)
    assert [(x["backup_method"], x["backup_type"]) for x in shown["schedules"]] == \
        [("pgfiles", "full"), ("pgfiles", "incremental")]
    assert shown["backup_methods"] == ["pgfiles"]
    assert "pgfiles: 0 3 * * 0 UTC; pgfiles:incremental: 0 3 * * 1-6 UTC" in run("policy", "list").stdout

    run("policy", "update", "p", "--schedule", "pgfiles:incremental=30 4 * * 1-6", "--disable", "pgfiles:incremental")
    assert _schedule_rows() == [("pgfiles", "full", "0 3 * * 0", True),
                                ("pgfiles", "incremental", "30 4 * * 1-6", False)]
    run("policy", "update", "p", "--remove", "pgfiles:incremental")
    assert _schedule_rows() == [("pgfiles", "full", "0 3 * * 0", True)]
    run("policy", "update", "p", "--schedule", "pgfiles=15 1 * * 0")          # METHOD=CRON is still the full one
    assert _schedule_rows() == [("pgfiles", "full", "15 1 * * 0", True)]


def test_a_type_the_method_cannot_take_is_refused_in_one_line(run, repo_path, data_dir) -> None:
    _setup(run, repo_path, data_dir)
    line = run.fails("policy", "create", "p", "--cluster", "pg", "--schedule", "volume:incremental=0 3 * * *")
    assert line == "error: method volume cannot take incremental backups of postgresql (it can: full)"
    line = run.fails("policy", "create", "p", "--cluster", "pg", "--schedule", "volume:differential=0 3 * * *")
    assert line == ("error: unknown schedule type 'differential' in 'volume:differential' "
                    "(a schedule takes full or incremental backups)")
    line = run.fails("policy", "create", "p", "--cluster", "pg", "--schedule", "volume=0 3 * * *",
                     "--schedule", "volume:full=0 4 * * *")
    assert line == "error: two schedules for volume (give one --schedule per method and type)"
    run("policy", "create", "p", "--cluster", "pg", "--schedule", "volume=0 3 * * *")
    line = run.fails("policy", "update", "p", "--schedule", "volume:incremental=0 3 * * *")
    assert line == "error: method volume cannot take incremental backups of postgresql (it can: full)"
    line = run.fails("policy", "update", "p", "--disable", "volume:incremental")
    assert line == "error: policy p has no schedule for volume:incremental (scheduled: volume)"
    with session_scope() as s:
        assert s.scalar(select(BackupPolicy).where(BackupPolicy.name == "p")) is not None
    assert _schedule_rows() == [("volume", "full", "0 3 * * *", True)]


def test_the_scheduler_runs_full_and_incremental_schedules_as_distinct_jobs(run, chain_tool, repo_path,
                                                                            data_dir) -> None:
    _setup(run, repo_path, data_dir)
    run("policy", "create", "p", "--cluster", "pg", "--schedule", WEEKLY_FULL, "--schedule", DAILY_INCREMENTAL)
    engine = get_engine()
    schedules = scheduler_catalog.list_schedules(engine)
    assert sorted((s.job_id, s.backup_type) for s in schedules) == [
        (f"backup:{schedules[0].policy_id}:pgfiles:full", "full"),
        (f"backup:{schedules[0].policy_id}:pgfiles:incremental", "incremental")]
    sched = BackupScheduler(SchedulerConfig(engine=engine,
                                            list_schedules=lambda: scheduler_catalog.list_schedules(engine),
                                            run_backup=lambda req: scheduler_catalog.run_backup(engine, req),
                                            sweep_cron=None, sync_interval=0))
    try:
        report = sched.start()
        full_id, inc_id = (s.job_id for s in sorted(schedules, key=lambda s: s.backup_type))
        assert sorted(report.added) == sorted([full_id, inc_id])
        for job_id in (full_id, inc_id):                 # the full one first: the incremental needs it
            due = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
            sched.aps.get_job(job_id).modify(next_run_time=due)
            deadline = time.monotonic() + 20
            while not [r for r in recorded_runs(engine, job_id) if r["finished_at"]] and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        sched.shutdown(wait=True)
    assert [r["status"] for r in recorded_runs(engine, full_id)] == ["succeeded"]
    assert [r["status"] for r in recorded_runs(engine, inc_id)] == ["succeeded"]
    with session_scope() as s:
        policy_id = s.scalar(select(BackupPolicy.id).where(BackupPolicy.name == "p"))
        full, inc = s.scalars(select(Backup).order_by(Backup.id)).all()
        assert (full.type, full.phase, full.policy_id, full.parent) == ("full", PHASE_COMPLETED, policy_id, None)
        assert (inc.type, inc.phase, inc.policy_id, inc.parent_backup_id) == \
            ("incremental", PHASE_COMPLETED, policy_id, full.id)
        assert inc.positions == {"parents": full.snapshot_ids}       # the tool was asked for an incremental


def test_export_of_full_and_incremental_schedules_validates_against_the_crds(run, chain_tool) -> None:
    run("cluster", "register", "pg", "--engine", "postgresql", "--host", "db1", "--port", "5432",
        "--data-dir", "/var/lib/pg")
    run("policy", "create", "pg-policy", "--cluster", "pg", "--schedule", WEEKLY_FULL, "--schedule",
        DAILY_INCREMENTAL, "--timezone", "Asia/Shanghai")
    policy, schedule = yaml.safe_load_all(run("policy", "export", "pg-policy").stdout)
    jsonschema.validate(policy, _schema("dataprotection.kubeblocks.io_backuppolicies.yaml"))
    jsonschema.validate(schedule, _schema("dataprotection.kubeblocks.io_backupschedules.yaml"))
    assert policy["spec"]["backupMethods"] == [
        {"name": "pgfiles", "actionSetName": "postgresql-pgfiles", "snapshotVolumes": False},
        {"name": "pgfiles-incremental", "actionSetName": "postgresql-pgfiles-incremental", "snapshotVolumes": False,
         "compatibleMethod": "pgfiles"}]
    assert [(x["name"], x["backupMethod"], x["cronExpression"]) for x in schedule["spec"]["schedules"]] == [
        ("pgfiles", "pgfiles", "CRON_TZ=Asia/Shanghai 0 3 * * 0"),
        ("pgfiles-incremental", "pgfiles-incremental", "CRON_TZ=Asia/Shanghai 0 3 * * 1-6")]
    names = [x["name"] for x in schedule["spec"]["schedules"]]
    assert len(set(names)) == len(names)                      # KubeBlocks: "Names cannot be duplicated"
