"""Fixtures for the scheduler tests: a catalogue database (SQLite file or a throwaway
PostgreSQL database), a recording backup runner, and schedulers that are always shut down."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
from sqlalchemy import create_engine

from backupctl.catalog.db import upgrade_to_head
from scheduler.service import BackupScheduler, SchedulerConfig

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_url():
    name = f"backupctl_sched_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_engines(pg_url):
    """Two independent engines on the same PostgreSQL database, as two processes would have; the
    catalogue's schema (with the scheduler's tables) at head, those tables and APScheduler's emptied."""
    engines = [create_engine(pg_url), create_engine(pg_url)]
    upgrade_to_head(engines[0])
    with engines[0].begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS apscheduler_jobs")
        conn.exec_driver_sql("DELETE FROM scheduler_runs")
        conn.exec_driver_sql("DELETE FROM scheduler_leases")
    yield engines
    for e in engines:
        e.dispose()


class Recorder:
    """A backup runner that records each call; optionally slow (blocks ``hold`` seconds)."""

    def __init__(self, hold: float = 0.0) -> None:
        self.calls: list = []
        self.hold = hold
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def __call__(self, request) -> str:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.calls.append(request)
            self.changed.notify_all()
        try:
            if self.hold:
                time.sleep(self.hold)
        finally:
            with self.lock:
                self.running -= 1
                self.changed.notify_all()
        return f"backup of {request.cluster}"

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def make_scheduler():
    started: list[BackupScheduler] = []

    def make(engine, schedules=(), run_backup=None, **kw) -> BackupScheduler:
        box = {"schedules": list(schedules)}
        config = SchedulerConfig(engine=engine, list_schedules=lambda: box["schedules"],
                                 run_backup=run_backup or Recorder(), sync_interval=0, **kw)
        s = BackupScheduler(config)
        s.schedules = box  # tests change the policies through this
        started.append(s)
        return s

    yield make
    for s in started:
        s.shutdown(wait=True)


@pytest.fixture
def slow_recorder():
    """A runner that takes 1.6 s per backup: longer than the one-second schedules that call it."""
    return Recorder(hold=1.6)
