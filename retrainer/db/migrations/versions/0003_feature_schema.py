"""feature schema per version

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Each version records the features it was trained on (name, type, categories): later runs read the
data through the production version's schema, and ingestion checks rows against it. Versions
trained before this revision have none (null): their next run infers one and records it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('feature_schema', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('feature_schema')
