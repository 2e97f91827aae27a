"""Opening the catalogue: the database URL, the engine, sessions and migrations.

SQLite by default at ``$BACKUPCTL_HOME/catalog.db`` (``~/.backupctl``), in WAL mode with
foreign keys on; PostgreSQL when ``BACKUPCTL_DATABASE_URL`` is set
(``postgresql+psycopg://user@host/db``). The schema is brought to the latest migration
the first time a process opens a catalogue.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from backupctl.catalog.models import EXTERNAL_TABLES
from backupctl.errors import BackupctlError, PermissionDeniedError, UsageError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def backupctl_home() -> Path:
    return Path(os.environ.get("BACKUPCTL_HOME") or Path.home() / ".backupctl").expanduser()


def database_url() -> str:
    url = os.environ.get("BACKUPCTL_DATABASE_URL")
    if url:
        return url
    home = backupctl_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'catalog.db'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def create_catalog_engine(url: str) -> Engine:
    """An engine for ``url``, without touching the schema."""
    try:
        engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
    except (ArgumentError, ImportError) as exc:
        raise UsageError(f"cannot use the catalogue URL {_redact(url)}: {exc}",
                         "set BACKUPCTL_DATABASE_URL to sqlite:///PATH or postgresql+psycopg://USER@HOST/DB") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# The newest migration. Checking the schema against this constant costs one SELECT, where
# asking Alembic costs 0.3 s of imports and parsing every migration on each command (wal-push
# runs once per WAL segment). A test keeps it equal to Alembic's head.
SCHEMA_HEAD = "0003"


def alembic_config(engine: Engine | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):  # no such table: an empty database
            return None


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the latest by default)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def upgrade_to_head(engine: Engine) -> None:
    """Migrate ``engine``'s database to head unless it is there already."""
    if current_revision(engine) != SCHEMA_HEAD:
        migrate(engine)


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's filter: tables the catalogue does not own (``EXTERNAL_TABLES``) are no part of
    autogenerate's comparison between the database and the models."""
    if type_ == "table":
        return name not in EXTERNAL_TABLES
    table = getattr(obj, "table", None)
    return getattr(table, "name", None) not in EXTERNAL_TABLES


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: the configured catalogue), migrated to head."""
    url = url or database_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_catalog_engine(url)
            try:
                upgrade_to_head(engine)
            except OperationalError as exc:
                engine.dispose()
                raise BackupctlError(f"cannot open the catalogue at {_redact(url)}: {exc.orig}",
                                     "check BACKUPCTL_DATABASE_URL / BACKUPCTL_HOME and that the database is up") from None
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back otherwise."""
    engine = get_engine(url)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException as exc:
            session.rollback()
            if isinstance(exc, OperationalError) and "readonly database" in str(exc.orig):
                raise PermissionDeniedError.at(engine.url.database) from None
            raise


def _redact(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as given, minus nothing secret we can find
        return url.split("@")[-1]
