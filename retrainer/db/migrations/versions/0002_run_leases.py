"""run leases, request attempts, notification delivery

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

training_runs.attempt tells a Celery retry its own earlier run; retrain_requests.lost_runs caps how
often a request whose worker keeps dying is re-run; training_runs.notified_at lets the reconciler
re-send a decision whose notification message was lost. A score that is not finite is stored as null.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import retrainer.db.base

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('notified_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lost_runs', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('error_message', sa.Text(), nullable=True))
    with op.batch_alter_table('model_evaluations', schema=None) as batch_op:
        batch_op.alter_column('overall_score', existing_type=sa.Float(), nullable=True)
    # Runs finished before this revision were published when they finished.
    op.execute("UPDATE training_runs SET notified_at = completed_at WHERE completed_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('model_evaluations', schema=None) as batch_op:
        batch_op.alter_column('overall_score', existing_type=sa.Float(), nullable=False)
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.drop_column('error_message')
        batch_op.drop_column('lost_runs')
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_column('notified_at')
        batch_op.drop_column('attempt')
