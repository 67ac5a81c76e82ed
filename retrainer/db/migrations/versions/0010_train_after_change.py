"""train after a change: where a retrain's rows start

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24

A breached accuracy check that finds when the production version got worse asks for a retrain on the
rows from then on (services/since_change.py): the request carries that moment and its run records it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('retrain_requests', 'training_runs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('train_since', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ('training_runs', 'retrain_requests'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('train_since')
