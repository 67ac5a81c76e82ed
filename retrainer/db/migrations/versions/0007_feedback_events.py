"""feedback events

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

A feedback row is one `feedback` event (accepts and rejects in a learning cycle): its event_id makes a
re-delivery a no-op, and the (model, recorded_at) index serves the hourly accept-rate check.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.add_column(sa.Column('event_id', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_feedback_event_id'), ['event_id'])
        batch_op.create_index('ix_feedback_model_recorded_at', ['model', 'recorded_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index('ix_feedback_model_recorded_at')
        batch_op.drop_constraint(batch_op.f('uq_feedback_event_id'), type_='unique')
        batch_op.drop_column('event_id')
