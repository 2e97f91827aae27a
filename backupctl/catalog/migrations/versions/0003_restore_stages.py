"""Restores record where they wrote, what they recovered to, and each stage's duration (the RTO).

* ``restores.target_dir``: the data directory restored into (a restore onto this host).
* ``restores.target``: the recovery target, e.g. ``{"kind": "lsn", "value": "0/3000148"}`` (empty: latest).
* ``restores.stages``: ``[{"name", "seconds", "details"}]`` in the order run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('restores') as batch:
        batch.add_column(sa.Column('target_dir', sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column('target', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('stages', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('restores') as batch:
        batch.drop_column('stages')
        batch.drop_column('target')
        batch.drop_column('target_dir')
