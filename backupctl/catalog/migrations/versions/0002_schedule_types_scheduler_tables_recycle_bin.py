"""Schedules carry a backup type; the scheduler's tables join the catalogue's schema; backups in
the recycle bin record since when.

* ``backup_schedules.backup_type`` (full | incremental, default full): a policy may schedule one
  method twice, e.g. full weekly and incremental daily, so the unique constraint becomes
  (policy, method, type).
* ``scheduler_runs`` and ``scheduler_leases``, created until now by the scheduler on start: a
  catalogue where a scheduler already created them keeps them as they are (same definition).
  APScheduler's ``apscheduler_jobs`` stays APScheduler's (see ``EXTERNAL_TABLES``).
* ``backups.recycled_at``: when a kept backup went to the recycle bin (its cluster's unregister
  time; else the time of this migration), from which the recycle-bin retention period counts.

Downgrading drops incremental schedules (the old schema cannot hold two schedules of a method).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('backup_schedules', schema=None) as batch_op:
        batch_op.add_column(sa.Column('backup_type', sa.String(length=16), server_default='full', nullable=False))
        batch_op.drop_constraint('uq_backup_schedules_policy_id', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_backup_schedules_policy_id'),
                                          ['policy_id', 'backup_method', 'backup_type'])

    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recycled_at', sa.DateTime(timezone=True), nullable=True))
    backups = sa.table('backups', sa.column('recycled', sa.Boolean),
                       sa.column('recycled_at', sa.DateTime(timezone=True)),
                       sa.column('cluster_id', sa.Integer))
    clusters = sa.table('clusters', sa.column('id', sa.Integer), sa.column('deleted_at', sa.DateTime(timezone=True)))
    deleted_at = (sa.select(clusters.c.deleted_at).where(clusters.c.id == backups.c.cluster_id)
                  .scalar_subquery())
    op.execute(backups.update().where(backups.c.recycled.is_(True))
               .values(recycled_at=sa.func.coalesce(deleted_at, datetime.now(timezone.utc))))

    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if 'scheduler_runs' not in existing:
        op.create_table('scheduler_runs',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('job_id', sa.String(length=191), nullable=False),
        sa.Column('scheduled_at', sa.String(length=40), nullable=False),
        sa.Column('owner', sa.String(length=255), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduler_runs')),
        sa.UniqueConstraint('job_id', 'scheduled_at', name='uq_scheduler_runs_job_id_scheduled_at')
        )
    if 'scheduler_leases' not in existing:
        op.create_table('scheduler_leases',
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('owner', sa.String(length=255), nullable=False),
        sa.Column('acquired_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('key', name=op.f('pk_scheduler_leases'))
        )


def downgrade() -> None:
    op.drop_table('scheduler_leases')
    op.drop_table('scheduler_runs')
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.drop_column('recycled_at')
    op.execute("DELETE FROM backup_schedules WHERE backup_type <> 'full'")
    with op.batch_alter_table('backup_schedules', schema=None) as batch_op:
        batch_op.drop_constraint('uq_backup_schedules_policy_id', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_backup_schedules_policy_id'), ['policy_id', 'backup_method'])
        batch_op.drop_column('backup_type')
