"""Migrations: an empty database reaches head on SQLite and PostgreSQL, and matches the models."""

from __future__ import annotations

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
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
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
    assert db.head_revision() == "0001"
