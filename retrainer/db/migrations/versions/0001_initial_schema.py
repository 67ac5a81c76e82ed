"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import retrainer.db.base

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('feedback',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('cycle_id', sa.String(length=64), nullable=False),
    sa.Column('accepted', sa.Integer(), nullable=False),
    sa.Column('rejected', sa.Integer(), nullable=False),
    sa.Column('recorded_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback'))
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_model'), ['model'], unique=False)

    op.create_table('model_versions',
    sa.Column('version_id', sa.String(length=120), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('family', sa.String(length=64), nullable=False),
    sa.Column('algorithm', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('trained', 'active', 'archived', 'failed', name='versionstatus', native_enum=False, length=24), nullable=False),
    sa.Column('is_production', sa.Boolean(), nullable=False),
    sa.Column('trained_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('promoted_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('num_training_samples', sa.Integer(), nullable=False),
    sa.Column('training_duration_seconds', sa.Double(), nullable=False),
    sa.Column('hyperparameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('artifact_uri', sa.String(length=500), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('training_window_start', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('training_window_end', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('library_versions', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('parent_version_id', sa.String(length=120), nullable=True),
    sa.Column('previous_production_id', sa.String(length=120), nullable=True),
    sa.PrimaryKeyConstraint('version_id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model', 'number', name='uq_model_versions_model_number')
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index('uq_model_versions_one_production', ['model'], unique=True, sqlite_where=sa.text('is_production = 1'), postgresql_where=sa.text('is_production'))

    op.create_table('observations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=True),
    sa.Column('features', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('label', sa.Double(), nullable=False),
    sa.Column('event_time', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('created_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_observations')),
    sa.UniqueConstraint('event_id', name=op.f('uq_observations_event_id'))
    )
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.create_index('ix_observations_model_event_time', ['model', 'event_time'], unique=False)

    op.create_table('prediction_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prediction_id', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('version_id', sa.String(length=120), nullable=True),
    sa.Column('features', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('predicted', sa.Double(), nullable=False),
    sa.Column('confidence', sa.Double(), nullable=True),
    sa.Column('hook_type', sa.String(length=64), nullable=True),
    sa.Column('template_id', sa.String(length=64), nullable=True),
    sa.Column('actual', sa.Double(), nullable=True),
    sa.Column('error', sa.Double(), nullable=True),
    sa.Column('status', sa.Enum('predicted', 'running', 'completed', name='predictionstatus', native_enum=False, length=24), nullable=False),
    sa.Column('predicted_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction_records')),
    sa.UniqueConstraint('prediction_id', name=op.f('uq_prediction_records_prediction_id'))
    )
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:
        batch_op.create_index('ix_prediction_records_model_status_at', ['model', 'status', 'predicted_at'], unique=False)

    op.create_table('retrain_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('trigger', sa.Enum('schedule', 'accuracy', 'drift', 'accept_rate', 'errors', 'new_samples', 'event', 'manual', name='trigger', native_enum=False, length=24), nullable=False),
    sa.Column('requested_by', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('priority', sa.Enum('low', 'normal', 'high', name='priority', native_enum=False, length=24), nullable=False),
    sa.Column('status', sa.Enum('pending', 'running', 'completed', 'failed', name='requeststatus', native_enum=False, length=24), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('created_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('not_before', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retrain_requests'))
    )
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.create_index('uq_retrain_requests_one_pending', ['model'], unique=True, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    op.create_table('system_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=True),
    sa.Column('kind', sa.String(length=48), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_system_events'))
    )
    with op.batch_alter_table('system_events', schema=None) as batch_op:
        batch_op.create_index('ix_system_events_model_created', ['model', 'created_at'], unique=False)

    op.create_table('training_runs',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('version_id', sa.String(length=120), nullable=True),
    sa.Column('trigger', sa.Enum('schedule', 'accuracy', 'drift', 'accept_rate', 'errors', 'new_samples', 'event', 'manual', name='trigger', native_enum=False, length=24), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('fine_tune', sa.Boolean(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'completed', 'failed', 'skipped', name='runstatus', native_enum=False, length=24), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('started_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_expires_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('duration_seconds', sa.Double(), nullable=True),
    sa.Column('dataset_size', sa.Integer(), nullable=True),
    sa.Column('train_size', sa.Integer(), nullable=True),
    sa.Column('holdout_size', sa.Integer(), nullable=True),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('old_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('promoted_to_production', sa.Boolean(), nullable=False),
    sa.Column('improvement_percentage', sa.Double(), nullable=True),
    sa.Column('promotion_reason', sa.Text(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('celery_task_id', sa.String(length=64), nullable=True),
    sa.Column('request_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['request_id'], ['retrain_requests.id'], name=op.f('fk_training_runs_request_id_retrain_requests')),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.version_id'], name=op.f('fk_training_runs_version_id_model_versions')),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_training_runs'))
    )
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.create_index('ix_training_runs_model_started', ['model', 'started_at'], unique=False)
        batch_op.create_index('uq_training_runs_one_running', ['model'], unique=True, sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))

    op.create_table('model_evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.String(length=120), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('holdout_start', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('holdout_end', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('holdout_rows', sa.Integer(), nullable=False),
    sa.Column('holdout_hash', sa.String(length=64), nullable=False),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('primary_metric', sa.String(length=32), nullable=False),
    sa.Column('overall_score', sa.Double(), nullable=False),
    sa.Column('champion_score', sa.Double(), nullable=True),
    sa.Column('predictions_sample', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('evaluated_at', retrainer.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['training_runs.run_id'], name=op.f('fk_model_evaluations_run_id_training_runs')),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.version_id'], name=op.f('fk_model_evaluations_version_id_model_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_evaluations'))
    )
    with op.batch_alter_table('model_evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_evaluations_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_evaluations_version_id'), ['version_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('model_evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_evaluations_version_id'))
        batch_op.drop_index(batch_op.f('ix_model_evaluations_run_id'))

    op.drop_table('model_evaluations')
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_index('uq_training_runs_one_running', sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
        batch_op.drop_index('ix_training_runs_model_started')

    op.drop_table('training_runs')
    with op.batch_alter_table('system_events', schema=None) as batch_op:
        batch_op.drop_index('ix_system_events_model_created')

    op.drop_table('system_events')
    with op.batch_alter_table('retrain_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_retrain_requests_one_pending', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    op.drop_table('retrain_requests')
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:
        batch_op.drop_index('ix_prediction_records_model_status_at')

    op.drop_table('prediction_records')
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.drop_index('ix_observations_model_event_time')

    op.drop_table('observations')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index('uq_model_versions_one_production', sqlite_where=sa.text('is_production = 1'), postgresql_where=sa.text('is_production'))

    op.drop_table('model_versions')
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_model'))

    op.drop_table('feedback')

