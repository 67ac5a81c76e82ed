"""promotion you can trust: the promotion ledger, decision records, tests, probation, run logs

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24

promotion_ledger is the append-only history of each model's production pointer. A run stores its
structured decision record and its own log lines; a candidate's evaluation stores the paired test
that judged it. A version records its last training row (a later holdout starts after it), whether its artifact was refit on every row after the decision,
and its probation (watching -> passed | rolled_back) on live outcomes after a promotion.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'promotion_ledger',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('model', sa.String(length=100), nullable=False),
        sa.Column('version_id', sa.String(length=120), nullable=False),
        sa.Column('from_version_id', sa.String(length=120), nullable=True),
        sa.Column('action', sa.String(length=24), nullable=False),
        sa.Column('actor', sa.String(length=100), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('run_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['version_id'], ['model_versions.version_id'],
                                name=op.f('fk_promotion_ledger_version_id_model_versions')),
        sa.ForeignKeyConstraint(['from_version_id'], ['model_versions.version_id'],
                                name=op.f('fk_promotion_ledger_from_version_id_model_versions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_promotion_ledger')),
    )
    with op.batch_alter_table('promotion_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_promotion_ledger_model_id', ['model', 'id'], unique=False)
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refit', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('training_last_row_id', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('probation', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('probation_ended_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.alter_column('refit', existing_type=sa.Boolean(), server_default=None)
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('decision', JSON, nullable=True))
        batch_op.add_column(sa.Column('logs', sa.Text(), nullable=True))
    with op.batch_alter_table('model_evaluations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('test', JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_evaluations', schema=None) as batch_op:
        batch_op.drop_column('test')
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_column('logs')
        batch_op.drop_column('decision')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('probation_ended_at')
        batch_op.drop_column('probation')
        batch_op.drop_column('training_last_row_id')
        batch_op.drop_column('refit')
    with op.batch_alter_table('promotion_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_promotion_ledger_model_id')
    op.drop_table('promotion_ledger')
