"""Fixtures for the catalogue tests: a SQLite and a PostgreSQL catalogue, the CLI, a real repository.

PostgreSQL: a throwaway database ``backupctl_test_<random>`` is created on 127.0.0.1:5432
for the test session (user postgres, else root; trust auth) and dropped at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from backupctl.catalog import db  # noqa: E402
from backupctl.cli import cli  # noqa: E402

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PASSWORD = "correct horse battery staple"


# -- PostgreSQL ---------------------------------------------------------------------------------
def _pg_admin() -> tuple[psycopg.Connection, str]:
    errors = []
    for user in ("postgres", "root"):
        try:
            return psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="test", autocommit=True,
                                   connect_timeout=5), user
        except psycopg.OperationalError as exc:
            errors.append(f"{user}: {exc}")
    raise RuntimeError("cannot reach PostgreSQL on 127.0.0.1:5432: " + "; ".join(errors))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    admin, user = _pg_admin()
    name = f"backupctl_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        db.dispose_engines()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _reset_pg(url: str) -> None:
    """Empty every table but keep the seeded default organisation and local environment."""
    engine = db.get_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_events, backups, restores, backup_schedules, backup_policies, "
                          "repository_orgs, repositories, roles, users, clusters, scheduler_runs, scheduler_leases "
                          "RESTART IDENTITY CASCADE"))
        conn.execute(text("DROP TABLE IF EXISTS apscheduler_jobs"))
        conn.execute(text("DELETE FROM organisations WHERE name <> 'default'"))
        conn.execute(text("DELETE FROM environments WHERE name <> 'local'"))


# -- environment for every test -------------------------------------------------------------
@pytest.fixture(autouse=True)
def backupctl_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("BACKUPCTL_HOME", str(home))
    monkeypatch.delenv("BACKUPCTL_DATABASE_URL", raising=False)
    monkeypatch.delenv("BACKUPCTL_ORG", raising=False)
    monkeypatch.setenv("BACKUPCTL_PASSWORD", PASSWORD)
    monkeypatch.setenv("BACKUPCTL_KDF_N", "1024")
    monkeypatch.setenv("BACKUPCTL_ACTOR", "tester")
    yield home
    db.dispose_engines()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    url = request.getfixturevalue("pg_url")
    _reset_pg(url)
    return url


@pytest.fixture
def session(catalog_url: str) -> Iterator[Session]:
    """A session on a migrated catalogue, SQLite and PostgreSQL in turn."""
    with sessionmaker(db.get_engine(catalog_url), expire_on_commit=False)() as s:
        yield s
        s.rollback()


# -- CLI -------------------------------------------------------------------------------------------
class Cli:
    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True) -> Result:
        result = self.runner.invoke(cli, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, f"{args} failed ({result.exit_code}): {result.output}"
        return result

    def fails(self, *args: str) -> str:
        """Run a command that must fail; return its one error line."""
        result = self(*args, ok=False)
        assert result.exit_code != 0, f"{args} unexpectedly succeeded: {result.output}"
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
        assert "Traceback" not in result.output
        return lines[0]


@pytest.fixture
def run() -> Cli:
    return Cli()


# -- a real repository and a data directory -------------------------------------------------------------
@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    from backupctl.repository import Repository

    path = tmp_path / "repo"
    Repository.init(str(path), PASSWORD).close()
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "pgdata"
    (d / "base" / "1").mkdir(parents=True)
    (d / "PG_VERSION").write_text("16\n")
    (d / "base" / "1" / "1259").write_bytes(secrets.token_bytes(300_000))
    (d / "postgresql.conf").write_text("listen_addresses = '*'\n" * 50)
    return d


# -- a test engine tool with incremental backups, installed through a real entry point ----------------
@pytest.fixture
def chain_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Installs ``tests.catalog.chain_tool:ChainTool`` in the ``backupctl.engine_tools`` entry point
    group: a ``.dist-info`` on sys.path, found by importlib.metadata as an installed package is."""
    from tests.catalog import chain_tool as module

    site = tmp_path / "site"
    info = site / "backupctl_test_chain_tool-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: backupctl-test-chain-tool\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[backupctl.engine_tools]\nchaintool = tests.catalog.chain_tool:ChainTool\n")
    monkeypatch.syspath_prepend(str(site))
    module.reset()
    yield module
    module.RELEASE.set()
    module.reset()
