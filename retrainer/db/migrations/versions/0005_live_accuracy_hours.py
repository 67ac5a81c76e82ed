"""live accuracy rollup per model, version, hour and kind

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

live_accuracy_hours holds the additive sums of every live metric per (model, version_id, hour of
predicted_at, kind), so a check reads a few hundred rows instead of scanning millions of
prediction_records. A prediction without a version is keyed by '' (NULLs never conflict in a unique
index). The existing completed records are rolled up here, in one INSERT ... SELECT ... GROUP BY,
with the very predicates record_outcome applies to each new outcome (services/live_rollup.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

KINDS = ('regression', 'classification', 'forecast')  # as of this revision
COUNTS = ('n', 'within_20pct', 'within_6h', 'within_12h', 'within_24h', 'correct', 'true_pos', 'pred_pos',
          'actual_pos', 'non_binary')
SUMS = ('sum_abs_err', 'sum_sq_err', 'sum_y', 'sum_yy')

# Each column's contribution of one completed row, by kind (what live_rollup.contributions computes).
ERR = "(actual - predicted)"
CLS = "kind = 'classification'"
REG = "kind = 'regression'"
FC = "kind = 'forecast'"


def _when(condition: str, value: str, zero: str = '0') -> str:
    return f"SUM(CASE WHEN {condition} THEN {value} ELSE {zero} END)"


BACKFILL = {
    'n': "COUNT(*)",
    'sum_abs_err': _when(f"NOT {CLS}", f"ABS{ERR}", '0.0'),
    'sum_sq_err': _when(f"NOT {CLS}", f"{ERR} * {ERR}", '0.0'),
    'sum_y': _when(REG, "actual", '0.0'),
    'sum_yy': _when(REG, "actual * actual", '0.0'),
    'within_20pct': _when(f"{REG} AND ABS{ERR} <= 0.2 * ABS(actual)", '1'),
    **{f'within_{h}h': _when(f"{FC} AND ABS{ERR} <= {h}", '1') for h in (6, 12, 24)},
    'correct': _when(f"{CLS} AND actual = predicted", '1'),
    'true_pos': _when(f"{CLS} AND actual = 1 AND predicted = 1", '1'),
    'pred_pos': _when(f"{CLS} AND predicted = 1", '1'),
    'actual_pos': _when(f"{CLS} AND actual = 1", '1'),
    'non_binary': _when(f"{CLS} AND (actual > 1 OR predicted > 1)", '1'),
}


def upgrade() -> None:
    op.create_table(
        'live_accuracy_hours',
        sa.Column('model', sa.String(length=100), nullable=False),
        sa.Column('version_id', sa.String(length=120), nullable=False),
        sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in COUNTS[:1]),
        *(sa.Column(c, sa.Double(), nullable=False) for c in SUMS),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in COUNTS[1:]),
        sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in KINDS)})", name=op.f('ck_live_accuracy_hours_kind')),
        sa.PrimaryKeyConstraint('model', 'version_id', 'hour', 'kind', name=op.f('pk_live_accuracy_hours')),
    )
    # The hour in UTC whatever the session's time zone; on SQLite in the text form the ORM writes.
    if op.get_bind().dialect.name == 'postgresql':
        hour = "date_trunc('hour', predicted_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:
        hour = "strftime('%Y-%m-%d %H:00:00.000000', predicted_at)"
    columns = ', '.join(BACKFILL)
    op.execute(
        f"INSERT INTO live_accuracy_hours (model, version_id, hour, kind, {columns}) "
        f"SELECT model, COALESCE(version_id, ''), {hour}, kind, {', '.join(BACKFILL.values())} "
        f"FROM prediction_records WHERE status = 'completed' "
        f"GROUP BY model, COALESCE(version_id, ''), {hour}, kind"
    )


def downgrade() -> None:
    op.drop_table('live_accuracy_hours')
