"""triggers and controls: drift profiles and reports, pause, fine-tune requests, data reports

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

feature_profiles holds each version's reference profile (built at training time) and drift_reports
each drift check (prediction_records gets a (model, predicted_at) index for its recent inputs, and
`targets`: second targets served beside the first, each with its outcome); a
request and its run name the drift report that asked for them. model_controls is
the runtime pause switch. A request can ask for a fine-tune (the high-confidence errors trigger). A
run keeps the report of the data checks made before fitting. A request being worked on is now
'processing' (seed 003's word; it was 'running').
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
STATUS_NEW = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')"
STATUS_OLD = "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        'feature_profiles',
        sa.Column('version_id', sa.String(length=120), nullable=False),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('profile', JSON, nullable=False),
        sa.Column('built_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['version_id'], ['model_versions.version_id'],
                                name=op.f('fk_feature_profiles_version_id_model_versions')),
        sa.PrimaryKeyConstraint('version_id', name=op.f('pk_feature_profiles')),
    )
    op.create_table(
        'drift_reports',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('model', sa.String(length=100), nullable=False),
        sa.Column('version_id', sa.String(length=120), nullable=True),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('window_start', sa.DateTime(timezone=True), nullable=True),
        sa.Column('window_end', sa.DateTime(timezone=True), nullable=True),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('drifted', sa.Boolean(), nullable=False),
        sa.Column('drifted_share', sa.Double(), nullable=True),
        sa.Column('share_threshold', sa.Double(), nullable=False),
        sa.Column('features', JSON, nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['version_id'], ['model_versions.version_id'],
                                name=op.f('fk_drift_reports_version_id_model_versions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_drift_reports')),
    )
    with op.batch_alter_table('drift_reports', schema=None) as batch_op:
        batch_op.create_index('ix_drift_reports_model_checked', ['model', 'checked_at'], unique=False)
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:  # the drift check's recent inputs
        batch_op.create_index('ix_prediction_records_model_at', ['model', 'predicted_at'], unique=False)
        batch_op.add_column(sa.Column('targets', JSON, nullable=True))  # a second target (ROAS beside CTR)
    op.create_table(
        'model_controls',
        sa.Column('model', sa.String(length=100), nullable=False),
        sa.Column('paused', sa.Boolean(), nullable=False),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('changed_by', sa.String(length=100), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('model', name=op.f('pk_model_controls')),
    )
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fine_tune', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('drift_report_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_retrain_requests_drift_report_id_drift_reports'),
                                    'drift_reports', ['drift_report_id'], ['id'])
        batch_op.drop_constraint(batch_op.f('ck_retrain_requests_status'), type_='check')
    op.execute("UPDATE retrain_requests SET status = 'processing' WHERE status = 'running'")
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.alter_column('fine_tune', existing_type=sa.Boolean(), server_default=None)
        batch_op.create_check_constraint(batch_op.f('ck_retrain_requests_status'), STATUS_NEW)
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('drift_report_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.add_column(sa.Column('data_report', JSON, nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_training_runs_drift_report_id_drift_reports'),
                                    'drift_reports', ['drift_report_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_training_runs_drift_report_id_drift_reports'), type_='foreignkey')
        batch_op.drop_column('data_report')
        batch_op.drop_column('drift_report_id')
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_retrain_requests_status'), type_='check')
    op.execute("UPDATE retrain_requests SET status = 'running' WHERE status = 'processing'")
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.create_check_constraint(batch_op.f('ck_retrain_requests_status'), STATUS_OLD)
        batch_op.drop_constraint(batch_op.f('fk_retrain_requests_drift_report_id_drift_reports'), type_='foreignkey')
        batch_op.drop_column('drift_report_id')
        batch_op.drop_column('fine_tune')
    op.drop_table('model_controls')
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:
        batch_op.drop_column('targets')
        batch_op.drop_index('ix_prediction_records_model_at')
    with op.batch_alter_table('drift_reports', schema=None) as batch_op:
        batch_op.drop_index('ix_drift_reports_model_checked')
    op.drop_table('drift_reports')
    op.drop_table('feature_profiles')
