"""Migrations: an empty database reaches head on SQLite and PostgreSQL, and matches the models."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from backupctl.catalog import db
from backupctl.catalog.models import Base


def test_empty_database_migrates_to_head_and_matches_the_models(catalog_url: str) -> None:
    engine = db.create_catalog_engine(catalog_url)
    try:
        db.downgrade(engine, "base")           # really empty, also for the shared PostgreSQL database
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        db.migrate(engine)
        assert db.current_revision(engine) == db.head_revision()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": db.include_object}), Base.metadata)
            assert diff == []
            assert conn.execute(text("SELECT name, kind FROM environments")).all() == [("local", "local")]
            assert conn.execute(text("SELECT name FROM organisations")).scalars().all() == ["default"]
    finally:
        engine.dispose()
        db.dispose_engines()


def test_migrations_go_down_to_empty_and_up_again(catalog_url: str) -> None:
    engine = db.create_catalog_engine(catalog_url)
    try:
        db.migrate(engine)
        db.downgrade(engine, "base")
        assert db.current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        db.migrate(engine)
        assert db.current_revision(engine) == db.head_revision()
    finally:
        engine.dispose()


def test_default_sqlite_catalogue_lives_in_backupctl_home_in_wal_mode(backupctl_env: Path) -> None:
    engine = db.get_engine()
    assert engine.url.database == str(backupctl_env / "catalog.db")
    assert (backupctl_env / "catalog.db").exists()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert db.current_revision(engine) == db.head_revision()


def test_database_url_comes_from_the_environment(monkeypatch, pg_url: str) -> None:
    monkeypatch.setenv("BACKUPCTL_DATABASE_URL", pg_url)
    assert db.database_url() == pg_url
    assert db.get_engine().dialect.name == "postgresql"


def test_migration_files_are_found_from_the_package_not_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert db.MIGRATIONS_DIR.is_absolute()
    assert (db.MIGRATIONS_DIR / "env.py").exists()
    assert db.head_revision() == "0003"


def test_0002_upgrades_a_0001_catalogue_in_place(catalog_url: str) -> None:
    """Existing schedules become full ones, recycled backups get the time their cluster was
    unregistered, and scheduler tables a scheduler created before 0002 are adopted with their rows."""
    engine = db.create_catalog_engine(catalog_url)
    try:
        db.downgrade(engine, "base")
        db.migrate(engine, "0001")
        unregistered = "2026-01-02 03:04:05+00:00"
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO clusters (name, engine, environment_id, organisation_id, "
                              "deletion_protection, created_at, deleted_at) VALUES ('pg', 'postgresql', 1, 1, "
                              f"false, '{unregistered}', '{unregistered}')"))
            conn.execute(text("INSERT INTO backup_policies (name, organisation_id, cluster_id, backup_methods, "
                              "retention, created_at, updated_at) VALUES ('p', 1, 1, '[\"volume\"]', '{}', "
                              f"'{unregistered}', '{unregistered}')"))
            conn.execute(text("INSERT INTO backup_schedules (policy_id, backup_method, cron_expression, timezone, "
                              "enabled) VALUES (1, 'volume', '0 3 * * *', 'UTC', true)"))
            for name, recycled in (("b-kept", "true"), ("b-live", "false")):
                conn.execute(text("INSERT INTO backups (name, organisation_id, cluster_id, cluster_name, engine, "
                                  "method, type, phase, positions, repository_name, snapshot_ids, "
                                  "deletion_protection, recycled, created_at) VALUES "
                                  f"('{name}', 1, 1, 'pg', 'postgresql', 'volume', 'full', 'Completed', '{{}}', "
                                  f"'main', '[]', false, {recycled}, '{unregistered}')"))
            # what scheduler.tables.create_tables made before 0002
            conn.execute(text("CREATE TABLE scheduler_leases (key VARCHAR(255) NOT NULL PRIMARY KEY, "
                              "owner VARCHAR(255) NOT NULL, acquired_at FLOAT NOT NULL, expires_at FLOAT NOT NULL)"))
            conn.execute(text("INSERT INTO scheduler_leases VALUES ('k', 'old-owner', 1.0, 2.0)"))
        db.migrate(engine)
        assert db.current_revision(engine) == "0003"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT backup_method, backup_type FROM backup_schedules")).all() == \
                [("volume", "full")]
            rows = dict(conn.execute(text("SELECT name, recycled_at FROM backups")).all())
            assert rows["b-live"] is None
            kept = rows["b-kept"]
            kept = datetime.fromisoformat(str(kept)) if not isinstance(kept, datetime) else kept
            assert kept.replace(tzinfo=kept.tzinfo or timezone.utc) == \
                datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
            assert conn.execute(text("SELECT key, owner FROM scheduler_leases")).all() == [("k", "old-owner")]
            diff = compare_metadata(MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": db.include_object}), Base.metadata)
            assert diff == []
        db.downgrade(engine, "0001")                          # and back: the old unique constraint returns
        assert "scheduler_runs" not in inspect(engine).get_table_names()
        assert "backup_type" not in {c["name"] for c in inspect(engine).get_columns("backup_schedules")}
    finally:
        db.downgrade(engine, "base")
        engine.dispose()
        db.dispose_engines()


def test_apschedulers_own_table_is_left_out_of_the_comparison_with_the_models(catalog_url: str) -> None:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    engine = db.get_engine(catalog_url)
    try:
        store = SQLAlchemyJobStore(engine=engine)
        store.start(None, "default")                          # creates apscheduler_jobs, as the scheduler does
        assert "apscheduler_jobs" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            unfiltered = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                          Base.metadata)
            assert ("remove_table", "apscheduler_jobs") in [(d[0], d[1].name) for d in unfiltered]
            assert {d[1].name if d[0] == "remove_table" else d[1].table.name for d in unfiltered} == \
                {"apscheduler_jobs"}                          # its index too, and nothing else
            assert compare_metadata(MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": db.include_object}), Base.metadata) == []
        assert {"scheduler_runs", "scheduler_leases"} <= set(Base.metadata.tables)    # one owner: the migrations
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS apscheduler_jobs"))
        db.dispose_engines()


def test_schema_head_constant_is_alembics_head() -> None:
    from backupctl.catalog.db import SCHEMA_HEAD, head_revision

    assert SCHEMA_HEAD == head_revision()
