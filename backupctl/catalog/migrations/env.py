"""Alembic environment, driven from code (backupctl.catalog.db.migrate): no alembic.ini.

The engine comes in ``config.attributes["engine"]``; offline mode is not supported.

On PostgreSQL the migration runs under a transaction-scoped advisory lock, so that processes
starting together on a fresh catalogue (two schedulers, say) migrate it one after the other:
the second one then finds it at head and does nothing.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from backupctl.catalog.db import include_object
from backupctl.catalog.models import Base

MIGRATION_LOCK_ID = 0x6261636B7570  # "backup": any fixed number, the same in every process

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",   # ALTER TABLE on SQLite goes through batch mode
        compare_type=True,
        include_object=include_object,                         # leave APScheduler's table to APScheduler
    )
    with context.begin_transaction():
        context.run_migrations()
