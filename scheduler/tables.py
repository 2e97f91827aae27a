"""The scheduler's own tables, in the catalogue database (plain SQLAlchemy Core).

``scheduler_runs``: one row per (job, scheduled fire time) that some scheduler claimed. The
unique constraint is what makes a fire time run once when several schedulers share the
catalogue: the INSERT of the second claimant fails. ``scheduler_leases``: cross-process locks
with an expiry (e.g. "backup of cluster X with method M"), renewed while the work runs.

APScheduler keeps its jobs in ``apscheduler_jobs`` (its SQLAlchemyJobStore) in the same
database. These tables are created on start (``create_tables``), not by the catalogue's
migrations.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Engine, Float, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

runs = Table(
    "scheduler_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(191), nullable=False),
    # UTC ISO 8601 with microseconds: compared as text so SQLite and PostgreSQL agree exactly
    Column("scheduled_at", String(40), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),  # running | succeeded | failed | skipped
    Column("detail", Text),
    UniqueConstraint("job_id", "scheduled_at", name="uq_scheduler_runs_job_id_scheduled_at"),
)

leases = Table(
    "scheduler_leases",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("acquired_at", Float, nullable=False),   # epoch seconds
    Column("expires_at", Float, nullable=False),
)


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine, checkfirst=True)
