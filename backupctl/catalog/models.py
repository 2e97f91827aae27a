"""The catalogue's tables, as SQLAlchemy 2 typed models.

Every timestamp is stored in UTC and read back timezone-aware (``UTCDateTime``), on SQLite
as on PostgreSQL. Secrets are never stored: a cluster names the environment variable that
holds its password, a repository names where its passphrase comes from.

Field names of policies and schedules follow KubeBlocks' BackupPolicy / BackupSchedule
(``backupMethods``, ``schedules[].backupMethod|cronExpression|enabled|retentionPeriod``),
in snake case.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Backup types and phases (KubeBlocks' Backup phases, plus our types).
BACKUP_TYPES = ("full", "incremental", "continuous", "snapshot")
PHASE_NEW, PHASE_RUNNING, PHASE_COMPLETED, PHASE_FAILED, PHASE_DELETING = (
    "New", "Running", "Completed", "Failed", "Deleting")
BACKUP_PHASES = (PHASE_NEW, PHASE_RUNNING, PHASE_COMPLETED, PHASE_FAILED, PHASE_DELETING)
# The types a schedule can take (continuous log archiving is not a cron job).
SCHEDULE_TYPES = ("full", "incremental")
ROLES = ("admin", "member", "auditor")

DEFAULT_ORG = "default"
DEFAULT_ENVIRONMENT = "local"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A datetime stored as UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the catalogue; use a timezone-aware one")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON, list[str]: JSON}


repository_orgs = Table(
    "repository_orgs",
    Base.metadata,
    Column("repository_id", ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id", ondelete="CASCADE"), primary_key=True),
)


class Organisation(Base):
    """A tenant. Its members see only its clusters and backups."""

    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    email: Mapped[str | None] = mapped_column(String(256))
    token_hash: Mapped[str | None] = mapped_column(String(128))   # a hash of the API token, never the token
    platform_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    roles: Mapped[list[Role]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Role(Base):
    """A membership: a user's role (admin, member, auditor) in one organisation."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("user_id", "organisation_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))
    user: Mapped[User] = relationship(back_populates="roles")
    organisation: Mapped[Organisation] = relationship()


class Environment(Base):
    """Where clusters run: ``local`` (this host) exists from the start; ``kubernetes`` ones are added."""

    __tablename__ = "environments"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32), default="local")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Cluster(Base):
    """A database to protect. ``password_env`` is the NAME of an environment variable, never the secret.

    Unregistering sets ``deleted_at`` (the cluster goes to the recycle bin with the backups kept).
    """

    __tablename__ = "clusters"
    __table_args__ = (
        Index("uq_clusters_live_name", "organisation_id", "name", unique=True,
              sqlite_where=text("deleted_at IS NULL"), postgresql_where=text("deleted_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    engine: Mapped[str] = mapped_column(String(32))
    version: Mapped[str | None] = mapped_column(String(64))
    topology: Mapped[str | None] = mapped_column(String(64))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None]
    user: Mapped[str | None] = mapped_column(String(128))
    password_env: Mapped[str | None] = mapped_column(String(128))
    data_dir: Mapped[str | None] = mapped_column(String(1024))
    deletion_protection: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    environment: Mapped[Environment] = relationship()
    organisation: Mapped[Organisation] = relationship()


class BackupRepository(Base):
    """A repository in the catalogue (KubeBlocks' BackupRepo). No secret: only where the passphrase comes from.

    ``password_env`` / ``password_file`` / ``password_command``: the first set one is used
    (file, then command, then env). With none set, BACKUPCTL_PASSWORD is read.
    An empty ``organisations`` list means every organisation may use it.
    """

    __tablename__ = "repositories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    is_default: Mapped[bool] = mapped_column(default=False)
    password_env: Mapped[str | None] = mapped_column(String(128))
    password_file: Mapped[str | None] = mapped_column(String(1024))
    password_command: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    organisations: Mapped[list[Organisation]] = relationship(secondary=repository_orgs)


class BackupPolicy(Base):
    """A cluster's backup policy (KubeBlocks BackupPolicy): the methods, the repository, retention.

    ``retention`` holds the rules as JSON, e.g. ``{"keep_last": 7, "keep_daily": 14,
    "pitr_window": "7d"}``; the retention module interprets them.
    """

    __tablename__ = "backup_policies"
    __table_args__ = (UniqueConstraint("organisation_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    repository_id: Mapped[int | None] = mapped_column(ForeignKey("repositories.id", ondelete="SET NULL"))
    backup_methods: Mapped[list[str]] = mapped_column(default=list)
    retention: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    cluster: Mapped[Cluster] = relationship()
    organisation: Mapped[Organisation] = relationship()
    repository: Mapped[BackupRepository | None] = relationship()
    schedules: Mapped[list[BackupSchedule]] = relationship(
        back_populates="policy", cascade="all, delete-orphan", order_by="BackupSchedule.id")


class BackupSchedule(Base):
    """One method's schedule of one backup type (KubeBlocks BackupSchedule.spec.schedules[]), with a
    time zone. A policy may schedule the same method twice, once per ``backup_type`` ("full
    weekly, incremental daily")."""

    __tablename__ = "backup_schedules"
    __table_args__ = (UniqueConstraint("policy_id", "backup_method", "backup_type"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("backup_policies.id", ondelete="CASCADE"))
    backup_method: Mapped[str] = mapped_column(String(64))
    backup_type: Mapped[str] = mapped_column(String(16), default="full", server_default="full")  # SCHEDULE_TYPES
    cron_expression: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    enabled: Mapped[bool] = mapped_column(default=True)
    retention_period: Mapped[str | None] = mapped_column(String(32))
    policy: Mapped[BackupPolicy] = relationship(back_populates="schedules")


class Backup(Base):
    """One backup. ``cluster_name`` and ``engine`` are copied so a backup outlives its cluster.

    ``snapshot_ids``: the repository snapshots holding it (while it runs: those stored so far, so that
    deleting a backup that was killed midway forgets them); ``positions``: engine positions
    (LSN, binlog file/position, ...); ``restorable_from/to``: the time range it can restore to.
    ``recycled``: kept after its cluster was unregistered (the recycle bin), since ``recycled_at``;
    retention removes it a recycle-bin period after that (``backupctl.retention.recycle_bin``).
    """

    __tablename__ = "backups"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="SET NULL"), index=True)
    cluster_name: Mapped[str] = mapped_column(String(128))
    engine: Mapped[str] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    parent_backup_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id"), index=True)
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("backup_policies.id", ondelete="SET NULL"))
    phase: Mapped[str] = mapped_column(String(16), default=PHASE_NEW)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    restorable_from: Mapped[datetime | None]
    restorable_to: Mapped[datetime | None]
    positions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    logical_size: Mapped[int | None] = mapped_column(BigInteger)
    bytes_added: Mapped[int | None] = mapped_column(BigInteger)
    throughput: Mapped[float | None] = mapped_column(Float)     # bytes per second
    repository_name: Mapped[str] = mapped_column(String(128))
    snapshot_ids: Mapped[list[str]] = mapped_column(default=list)
    error_message: Mapped[str | None] = mapped_column(Text)
    deletion_protection: Mapped[bool] = mapped_column(default=False)
    recycled: Mapped[bool] = mapped_column(default=False)
    recycled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    organisation: Mapped[Organisation] = relationship()
    cluster: Mapped[Cluster | None] = relationship()
    parent: Mapped[Backup | None] = relationship(remote_side="Backup.id")


class Restore(Base):
    __tablename__ = "restores"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    backup_id: Mapped[int | None] = mapped_column(ForeignKey("backups.id", ondelete="SET NULL"))
    backup: Mapped[Backup | None] = relationship()
    target_cluster: Mapped[str] = mapped_column(String(128))
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    restore_time: Mapped[datetime | None]
    target_dir: Mapped[str | None] = mapped_column(String(1024))
    target: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")       # kind, value
    stages: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")            # name, seconds, details
    phase: Mapped[str] = mapped_column(String(16), default=PHASE_NEW)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Who did what to what, when, and from where."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    time: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str] = mapped_column(String(512))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="SET NULL"))
    source: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


# -- tables used through SQLAlchemy Core ------------------------------------------------------------
# The scheduler's claims: one row per (job, scheduled fire time) that some scheduler claimed. The
# unique constraint is what makes a fire time run once when several schedulers share the
# catalogue: the INSERT of the second claimant fails.
scheduler_runs = Table(
    "scheduler_runs",
    Base.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(191), nullable=False),
    # UTC ISO 8601 with microseconds: compared as text so SQLite and PostgreSQL agree exactly
    Column("scheduled_at", String(40), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),  # running | succeeded | failed | skipped
    Column("detail", Text),
    UniqueConstraint("job_id", "scheduled_at", name="uq_scheduler_runs_job_id_scheduled_at"),
)

# Leases: cross-process locks with an expiry, e.g. "a backup of cluster X with method M is
# running", taken by scheduled and manual backups alike (``backupctl.services.leases``).
scheduler_leases = Table(
    "scheduler_leases",
    Base.metadata,
    Column("key", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("acquired_at", Float, nullable=False),   # epoch seconds
    Column("expires_at", Float, nullable=False),
)

#: Tables in the catalogue database that the catalogue's migrations do not own: APScheduler's job
#: store creates and manages ``apscheduler_jobs`` itself.
EXTERNAL_TABLES = frozenset({"apscheduler_jobs"})
