"""Initial schema: organisations, users, roles, environments, clusters, repositories,
policies and schedules, backups, restores, audit events; the default organisation and
the default ``local`` environment.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('environments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_environments')),
    sa.UniqueConstraint('name', name=op.f('uq_environments_name'))
    )
    op.create_table('organisations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisations')),
    sa.UniqueConstraint('name', name=op.f('uq_organisations_name'))
    )
    op.create_table('repositories',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('password_env', sa.String(length=128), nullable=True),
    sa.Column('password_file', sa.String(length=1024), nullable=True),
    sa.Column('password_command', sa.String(length=1024), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_repositories')),
    sa.UniqueConstraint('name', name=op.f('uq_repositories_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('email', sa.String(length=256), nullable=True),
    sa.Column('token_hash', sa.String(length=128), nullable=True),
    sa.Column('platform_admin', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('object', sa.String(length=512), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.String(length=255), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_audit_events_organisation_id_organisations'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_time'), ['time'], unique=False)

    op.create_table('clusters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('topology', sa.String(length=64), nullable=True),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=True),
    sa.Column('port', sa.Integer(), nullable=True),
    sa.Column('user', sa.String(length=128), nullable=True),
    sa.Column('password_env', sa.String(length=128), nullable=True),
    sa.Column('data_dir', sa.String(length=1024), nullable=True),
    sa.Column('deletion_protection', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_clusters_environment_id_environments')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_clusters_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clusters'))
    )
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.create_index('uq_clusters_live_name', ['organisation_id', 'name'], unique=True, sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.create_table('repository_orgs',
    sa.Column('repository_id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_repository_orgs_organisation_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], name=op.f('fk_repository_orgs_repository_id_repositories'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('repository_id', 'organisation_id', name=op.f('pk_repository_orgs'))
    )
    op.create_table('roles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_roles_organisation_id_organisations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_roles_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roles')),
    sa.UniqueConstraint('user_id', 'organisation_id', name=op.f('uq_roles_user_id'))
    )
    op.create_table('backup_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('repository_id', sa.Integer(), nullable=True),
    sa.Column('backup_methods', sa.JSON(), nullable=False),
    sa.Column('retention', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_backup_policies_cluster_id_clusters'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_backup_policies_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['repository_id'], ['repositories.id'], name=op.f('fk_backup_policies_repository_id_repositories'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_policies')),
    sa.UniqueConstraint('organisation_id', 'name', name=op.f('uq_backup_policies_organisation_id'))
    )
    op.create_table('backup_schedules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=False),
    sa.Column('backup_method', sa.String(length=64), nullable=False),
    sa.Column('cron_expression', sa.String(length=128), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('retention_period', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['policy_id'], ['backup_policies.id'], name=op.f('fk_backup_schedules_policy_id_backup_policies'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_schedules')),
    sa.UniqueConstraint('policy_id', 'backup_method', name=op.f('uq_backup_schedules_policy_id'))
    )
    op.create_table('backups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=True),
    sa.Column('cluster_name', sa.String(length=128), nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('parent_backup_id', sa.Integer(), nullable=True),
    sa.Column('policy_id', sa.Integer(), nullable=True),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('restorable_from', sa.DateTime(timezone=True), nullable=True),
    sa.Column('restorable_to', sa.DateTime(timezone=True), nullable=True),
    sa.Column('positions', sa.JSON(), nullable=False),
    sa.Column('logical_size', sa.BigInteger(), nullable=True),
    sa.Column('bytes_added', sa.BigInteger(), nullable=True),
    sa.Column('throughput', sa.Float(), nullable=True),
    sa.Column('repository_name', sa.String(length=128), nullable=False),
    sa.Column('snapshot_ids', sa.JSON(), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('deletion_protection', sa.Boolean(), nullable=False),
    sa.Column('recycled', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'], name=op.f('fk_backups_cluster_id_clusters'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_backups_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['parent_backup_id'], ['backups.id'], name=op.f('fk_backups_parent_backup_id_backups')),
    sa.ForeignKeyConstraint(['policy_id'], ['backup_policies.id'], name=op.f('fk_backups_policy_id_backup_policies'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backups')),
    sa.UniqueConstraint('name', name=op.f('uq_backups_name'))
    )
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_backups_cluster_id'), ['cluster_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_backups_parent_backup_id'), ['parent_backup_id'], unique=False)

    op.create_table('restores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('backup_id', sa.Integer(), nullable=True),
    sa.Column('target_cluster', sa.String(length=128), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=True),
    sa.Column('restore_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['backup_id'], ['backups.id'], name=op.f('fk_restores_backup_id_backups'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], name=op.f('fk_restores_environment_id_environments')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_restores_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_restores')),
    sa.UniqueConstraint('name', name=op.f('uq_restores_name'))
    )

    now = datetime.now(timezone.utc)
    op.bulk_insert(sa.table("organisations", sa.column("name", sa.String), sa.column("created_at", sa.DateTime(timezone=True))),
                   [{"name": "default", "created_at": now}])
    op.bulk_insert(sa.table("environments", sa.column("name", sa.String), sa.column("kind", sa.String),
                            sa.column("config", sa.JSON), sa.column("created_at", sa.DateTime(timezone=True))),
                   [{"name": "local", "kind": "local", "config": {}, "created_at": now}])


def downgrade() -> None:
    op.drop_table('restores')
    with op.batch_alter_table('backups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_backups_parent_backup_id'))
        batch_op.drop_index(batch_op.f('ix_backups_cluster_id'))

    op.drop_table('backups')
    op.drop_table('backup_schedules')
    op.drop_table('backup_policies')
    op.drop_table('roles')
    op.drop_table('repository_orgs')
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_index('uq_clusters_live_name', sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.drop_table('clusters')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_time'))

    op.drop_table('audit_events')
    op.drop_table('users')
    op.drop_table('repositories')
    op.drop_table('organisations')
    op.drop_table('environments')
