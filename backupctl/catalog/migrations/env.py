"""Alembic environment, driven from code (backupctl.catalog.db.migrate): no alembic.ini.

The engine comes in ``config.attributes["engine"]``; offline mode is not supported.
"""

from __future__ import annotations

from alembic import context

from backupctl.catalog.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",   # ALTER TABLE on SQLite goes through batch mode
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
