"""compacted columnar blocks of observations, observations.updated_at

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

observation_blocks holds, per model, compacted columnar copies of its observations by id range
(services/blocks.py), so a retrain reads typed arrays instead of extracting every feature from JSONB.
observations gets updated_at (set by every UPDATE: a corrected label is overlaid on its block), a
partial index of the updated rows, and an index on (model, id) that counts a block's rows index-only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UPDATED = sa.text('updated_at IS NOT NULL')


def upgrade() -> None:
    op.create_table(
        'observation_blocks',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('model', sa.String(length=100), nullable=False),
        sa.Column('first_id', sa.BigInteger(), nullable=False),
        sa.Column('last_id', sa.BigInteger(), nullable=False),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('id_hash', sa.BigInteger(), nullable=False),
        sa.Column('min_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('max_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('built_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('payload', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_observation_blocks')),
        sa.UniqueConstraint('model', 'first_id', name=op.f('uq_observation_blocks_model_first_id')),
    )
    if op.get_bind().dialect.name == 'postgresql':
        # Float arrays barely compress: pglz would only cost time on every read.
        op.execute("ALTER TABLE observation_blocks ALTER COLUMN payload SET STORAGE EXTERNAL")
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_observations_model_id'), ['model', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_observations_model_updated_at'), ['model', 'updated_at'], unique=False,
                              postgresql_where=UPDATED, sqlite_where=UPDATED)


def downgrade() -> None:
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_observations_model_updated_at'))
        batch_op.drop_index(batch_op.f('ix_observations_model_id'))
        batch_op.drop_column('updated_at')
    op.drop_table('observation_blocks')
