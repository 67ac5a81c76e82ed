"""segments, class probabilities, 64-bit ids, foreign keys, enum CHECKs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

prediction_records: CTR's hook_type/template_id columns become one free `segments` map (existing
values move into it, nulls left out), `proba` holds a classifier's class probabilities and `kind`
how the error is measured (every step-1 row is a regression). The tables that grow with traffic get
64-bit ids (PostgreSQL; SQLite's INTEGER primary key is 64-bit already). model_versions names its
parent and predecessor by foreign key. Every enum column gets a named CHECK of its values.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
BIG_ID_TABLES = ('prediction_records', 'observations', 'system_events', 'model_evaluations')
TRIGGERS = ('schedule', 'accuracy', 'drift', 'accept_rate', 'errors', 'new_samples', 'event', 'manual')
# The values as of this revision (frozen here: a later revision that adds one replaces the CHECK).
CHECKS = {
    'prediction_records': {'status': ('predicted', 'running', 'completed'),
                           'kind': ('regression', 'classification', 'forecast')},
    'model_versions': {'status': ('trained', 'active', 'archived', 'failed')},
    'retrain_requests': {'trigger': TRIGGERS, 'priority': ('low', 'normal', 'high'),
                         'status': ('pending', 'running', 'completed', 'failed', 'cancelled')},
    'training_runs': {'trigger': TRIGGERS, 'status': ('queued', 'running', 'completed', 'failed', 'skipped')},
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _add_checks(batch_op: op.BatchOperations, table: str) -> None:
    for column, values in CHECKS[table].items():
        batch_op.create_check_constraint(batch_op.f(f'ck_{table}_{column}'), _in(column, values))


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=24), nullable=False, server_default='regression'))
        batch_op.add_column(sa.Column('proba', JSON, nullable=True))
        batch_op.add_column(sa.Column('segments', JSON, nullable=True))
    # Move the two CTR columns into the map, leaving out the nulls (a merge patch drops null members).
    if dialect == 'postgresql':
        op.execute("UPDATE prediction_records SET segments = jsonb_strip_nulls("
                   "jsonb_build_object('hook_type', hook_type, 'template_id', template_id))")
    else:
        op.execute("UPDATE prediction_records SET segments = json_patch('{}', "
                   "json_object('hook_type', hook_type, 'template_id', template_id))")
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:
        batch_op.alter_column('segments', existing_type=JSON, nullable=False)
        batch_op.alter_column('kind', existing_type=sa.String(length=24), server_default=None)
        batch_op.drop_column('hook_type')
        batch_op.drop_column('template_id')
        _add_checks(batch_op, 'prediction_records')

    if dialect == 'postgresql':
        for table in BIG_ID_TABLES:
            op.alter_column(table, 'id', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)
            # the serial's sequence is an integer sequence too: it would stop at 2**31 - 1
            op.execute(f"ALTER SEQUENCE {_sequence(table)} AS bigint")

    # A dangling name (none is written by retrainer) must not stop the upgrade.
    for column in ('parent_version_id', 'previous_production_id'):
        op.execute(f"UPDATE model_versions SET {column} = NULL WHERE {column} IS NOT NULL "
                   f"AND {column} NOT IN (SELECT version_id FROM model_versions)")
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_model_versions_parent_version_id_model_versions'),
                                    'model_versions', ['parent_version_id'], ['version_id'])
        batch_op.create_foreign_key(batch_op.f('fk_model_versions_previous_production_id_model_versions'),
                                    'model_versions', ['previous_production_id'], ['version_id'])
        _add_checks(batch_op, 'model_versions')
    for table in ('retrain_requests', 'training_runs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            _add_checks(batch_op, table)


def _sequence(table: str) -> str:
    return op.get_bind().execute(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')")).scalar_one()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in ('training_runs', 'retrain_requests'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in CHECKS[table]:
                batch_op.drop_constraint(batch_op.f(f'ck_{table}_{column}'), type_='check')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_model_versions_status'), type_='check')
        batch_op.drop_constraint(batch_op.f('fk_model_versions_previous_production_id_model_versions'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_model_versions_parent_version_id_model_versions'), type_='foreignkey')
    if dialect == 'postgresql':
        for table in BIG_ID_TABLES:
            op.execute(f"ALTER SEQUENCE {_sequence(table)} AS integer")
            op.alter_column(table, 'id', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:
        for column in CHECKS['prediction_records']:
            batch_op.drop_constraint(batch_op.f(f'ck_prediction_records_{column}'), type_='check')
        batch_op.add_column(sa.Column('hook_type', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('template_id', sa.String(length=64), nullable=True))
    # Other segment keys and class probabilities have no column in the older schema: they are lost.
    if dialect == 'postgresql':
        op.execute("UPDATE prediction_records SET hook_type = LEFT(segments ->> 'hook_type', 64), "
                   "template_id = LEFT(segments ->> 'template_id', 64)")
    else:
        op.execute("UPDATE prediction_records SET hook_type = substr(json_extract(segments, '$.hook_type'), 1, 64), "
                   "template_id = substr(json_extract(segments, '$.template_id'), 1, 64)")
    with op.batch_alter_table('prediction_records', schema=None) as batch_op:
        batch_op.drop_column('segments')
        batch_op.drop_column('proba')
        batch_op.drop_column('kind')
