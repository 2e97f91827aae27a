"""A manual `backup create` and a scheduled run of the same cluster and method never overlap: both
hold the same lease in the catalogue (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from backupctl.catalog.db import get_engine, session_scope
from backupctl.catalog.models import PHASE_COMPLETED, Backup, scheduler_leases
from backupctl.errors import BusyError
from backupctl.services import leases
from backupctl.services.backups import create_backup
from scheduler import catalog as scheduler_catalog
from scheduler.claims import recorded_runs
from scheduler.service import BackupScheduler, SchedulerConfig
from tests.catalog.test_schedule_types import _setup

BUSY = re.compile(r"error: cluster pg is already being backed up with method pgfiles by tester on \S+ \(pid \d+\) "
                  r"since (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \(wait for it to finish\)")


@pytest.fixture
def catalogue(catalog_url, monkeypatch) -> str:
    """The CLI and the services on the parametrised catalogue (SQLite, then PostgreSQL)."""
    monkeypatch.setenv("BACKUPCTL_DATABASE_URL", catalog_url)
    return catalog_url


def _backup_in_thread(chain_tool, errors: list) -> threading.Thread:
    def take() -> None:
        try:
            with session_scope() as s:
                create_backup(s, cluster="pg", method="pgfiles")
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    chain_tool.HOLD.set()
    t = threading.Thread(target=take)
    t.start()
    assert chain_tool.STARTED.wait(20), errors
    return t


def test_a_second_concurrent_backup_of_the_same_cluster_and_method_fails_in_one_line(
        catalogue, run, chain_tool, repo_path, data_dir) -> None:
    _setup(run, repo_path, data_dir)
    errors: list = []
    before = datetime.now(timezone.utc).replace(microsecond=0)
    first = _backup_in_thread(chain_tool, errors)
    try:
        line = run.fails("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--type", "full")
        since = datetime.strptime(BUSY.fullmatch(line).group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert before <= since <= datetime.now(timezone.utc)
        # an incremental of the same method waits its turn too; the volume method is another lease
        assert BUSY.fullmatch(run.fails("backup", "create", "--cluster", "pg", "--method", "pgfiles",
                                        "--type", "incremental"))
        other = json.loads(run("backup", "create", "--cluster", "pg", "--method", "volume", "--json").stdout)
        assert other["phase"] == PHASE_COMPLETED
    finally:
        chain_tool.RELEASE.set()
        first.join(30)
    assert errors == []
    with session_scope() as s:
        rows = s.execute(select(Backup.method, Backup.phase).order_by(Backup.id)).all()
    assert rows == [("pgfiles", PHASE_COMPLETED), ("volume", PHASE_COMPLETED)]    # no row for the refused ones
    with get_engine().connect() as conn:
        assert conn.execute(select(scheduler_leases)).all() == []                   # every lease released
    chain_tool.HOLD.clear()
    again = json.loads(run("backup", "create", "--cluster", "pg", "--method", "pgfiles", "--json").stdout)
    assert again["phase"] == PHASE_COMPLETED


def test_a_failed_backup_releases_its_lease(catalogue, run, chain_tool, repo_path, data_dir, monkeypatch) -> None:
    _setup(run, repo_path, data_dir)

    def broken(self, repo, request):
        raise OSError("disk on fire")

    monkeypatch.setattr(chain_tool.ChainTool, "backup", broken)
    assert "disk on fire" in run.fails("backup", "create", "--cluster", "pg", "--method", "pgfiles")
    with get_engine().connect() as conn:
        assert conn.execute(select(scheduler_leases)).all() == []


def test_a_manual_backup_is_refused_while_the_scheduler_holds_the_lease(catalogue, run, chain_tool, repo_path,
                                                                        data_dir) -> None:
    _setup(run, repo_path, data_dir)
    engine = get_engine()
    key = leases.backup_lease_key("default", "pg", "pgfiles")
    with leases.lease(engine, key, "scheduler host-b:77:abcd", ttl=60) as held:
        assert held
        with session_scope() as s, pytest.raises(BusyError) as info:
            create_backup(s, cluster="pg", method="pgfiles")
        assert str(info.value).startswith("cluster pg is already being backed up with method pgfiles by "
                                          "scheduler host-b:77:abcd since ")
        with session_scope() as s:         # the scheduler's own job goes on under the lease it holds
            b = create_backup(s, cluster="pg", method="pgfiles", lease_owner="scheduler host-b:77:abcd")
            assert b.phase == PHASE_COMPLETED
        with session_scope() as s, pytest.raises(Exception, match="is not held by someone-else"):
            create_backup(s, cluster="pg", method="pgfiles", lease_owner="someone-else")


def test_a_scheduled_run_is_skipped_while_a_manual_backup_runs(catalogue, run, chain_tool, repo_path,
                                                               data_dir) -> None:
    _setup(run, repo_path, data_dir)
    run("policy", "create", "p", "--cluster", "pg", "--schedule", "pgfiles=0 3 * * *")
    engine = get_engine()
    sched = BackupScheduler(SchedulerConfig(engine=engine,
                                            list_schedules=lambda: scheduler_catalog.list_schedules(engine),
                                            run_backup=lambda req: scheduler_catalog.run_backup(engine, req),
                                            sweep_cron=None, sync_interval=0))
    errors: list = []
    manual = _backup_in_thread(chain_tool, errors)
    try:
        sched.start()
        [job] = sched.aps.get_jobs(jobstore="default")
        job.modify(next_run_time=datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1))
        deadline = time.monotonic() + 20
        while not [r for r in recorded_runs(engine, job.id) if r["finished_at"]] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sched.shutdown(wait=True)
        chain_tool.RELEASE.set()
        manual.join(30)
    [scheduled] = recorded_runs(engine, job.id)
    assert scheduled["status"] == "skipped" and "still running" in scheduled["detail"]
    assert errors == []
    with session_scope() as s:
        assert s.execute(select(Backup.policy_id, Backup.phase)).all() == [(None, PHASE_COMPLETED)]   # the manual one
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS apscheduler_jobs")
