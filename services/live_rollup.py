"""The live-accuracy rollup (table live_accuracy_hours): additive sums per model, version, hour and kind.

record_outcome adds each outcome's contributions with one UPSERT in the outcome's own transaction; a
correction adds (new - old) in the same one statement, so the rollup always equals the completed
records. The batch path (services/events.py) sums a batch's changes per bucket first (`Batch`).
`INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n` is atomic per row on PostgreSQL (the
conflicting row is locked, a concurrent writer waits and adds to the committed value) and SQLite has
one writer at a time, so two workers on the same hour never lose an increment.

Each contribution applies the same predicate, in the same float arithmetic, as the raw SQL
aggregate over prediction_records (and migration 0005's backfill), so the figures are identical
up to the order in which floats are summed.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retrainer.clock import as_utc
from retrainer.db.records import NO_VERSION, LiveAccuracyHour, PredictionKind

H = LiveAccuracyHour
WITHIN_FRACTION = 0.20  # regression: "accurate" = within ±20 % of the actual value
WITHIN_HOURS = (6, 12, 24)  # forecast
KEY = ("model", "version_id", "hour", "kind")
SUMS = ("n", "sum_abs_err", "sum_sq_err", "sum_y", "sum_yy", "within_20pct", "within_6h", "within_12h",
        "within_24h", "correct", "true_pos", "pred_pos", "actual_pos", "non_binary")
ZERO = dict.fromkeys(SUMS, 0)


def hour_of(moment: datetime) -> datetime:
    """The start of the moment's hour in UTC (an offset like +05:30 would otherwise cut at half hours)."""
    return as_utc(moment).replace(minute=0, second=0, microsecond=0)


def contributions(kind: PredictionKind, predicted: float, actual: float) -> dict[str, float | int]:
    """What one completed prediction adds to its bucket."""
    out: dict[str, float | int] = ZERO | {"n": 1}
    if kind == PredictionKind.CLASSIFICATION:
        return out | {
            "correct": int(actual == predicted), "true_pos": int(actual == 1 and predicted == 1),
            "pred_pos": int(predicted == 1), "actual_pos": int(actual == 1),
            "non_binary": int(actual > 1 or predicted > 1),
        }
    err = actual - predicted
    out |= {"sum_abs_err": abs(err), "sum_sq_err": err * err}
    if kind == PredictionKind.FORECAST:
        return out | {f"within_{h}h": int(abs(err) <= h) for h in WITHIN_HOURS}
    return out | {"sum_y": actual, "sum_yy": actual * actual,
                  "within_20pct": int(abs(err) <= WITHIN_FRACTION * abs(actual))}


Bucket = tuple[str, str, datetime, PredictionKind]  # KEY's values


def bucket(model: str, version_id: str | None, predicted_at: datetime, kind: PredictionKind) -> Bucket:
    return model, NO_VERSION if version_id is None else version_id, hour_of(predicted_at), kind


def change(kind: PredictionKind, predicted: float, actual: float, previous: float | None = None) -> dict[str, float | int]:
    """One outcome's change to its bucket: its contributions, less those of the value it corrects."""
    new = contributions(kind, predicted, actual)
    if previous is None:
        return new
    old = contributions(kind, predicted, previous)
    return {c: new[c] - old[c] for c in SUMS}


def add(session: Session, key: Bucket, delta: dict[str, float | int]) -> None:
    """Add `delta` to the bucket, creating it: one UPSERT."""
    session.execute(_upsert(session.get_bind().dialect.name), dict(zip(KEY, key, strict=True)) | delta)


@functools.cache
def _upsert(dialect: str) -> sa.Insert:
    """Built once per dialect (building the SET clause per outcome cost more than the round trip)."""
    table = H.__table__
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(index_elements=list(KEY), set_={c: table.c[c] + stmt.excluded[c] for c in SUMS})


class Batch:
    """A batch's rollup changes, summed per bucket and written by `write` in the same transaction, one
    UPSERT per bucket in key order: a batch of outcomes costs a few statements instead of one each, and
    two concurrent batches lock their buckets in one order (no deadlock) and only until they commit.

    The batch path records each outcome in a savepoint that may roll back: record_outcome `stage`s its
    change, and the caller `keep`s it once the savepoint has been released; a staged change that is
    not kept is replaced by the next one."""

    def __init__(self) -> None:
        self.buckets: dict[Bucket, dict[str, float | int]] = {}
        self._staged: tuple[Bucket, dict[str, float | int]] | None = None

    def stage(self, key: Bucket, delta: dict[str, float | int]) -> None:
        self._staged = (key, delta)

    def keep(self) -> None:
        if self._staged is not None:
            key, delta = self._staged
            into = self.buckets.setdefault(key, dict(ZERO))
            for c in SUMS:
                into[c] += delta[c]
            self._staged = None

    def write(self, session: Session) -> None:
        if self.buckets:
            session.execute(_upsert(session.get_bind().dialect.name),
                            [dict(zip(KEY, key, strict=True)) | self.buckets[key] for key in sorted(self.buckets)])
            self.buckets.clear()


def totals(session: Session, model: str, kind: PredictionKind, since: datetime, last_hour: datetime,
           version_id: str | None = None, by_version: bool = False) -> list[Any]:
    """The summed buckets of [since, last_hour] (hours), one row or one per version (the versionless
    bucket left out, as a group by a NULL column would be). An index range scan of the primary key:
    a 7-day window is ~170 rows per version whatever the traffic."""
    params = {"model": model, "kind": kind, "since": since, "last_hour": last_hour, "version_id": version_id}
    rows = session.execute(_totals(by_version, version_id is not None), params)
    return list(rows.all()) if by_version else [rows.one()]


@functools.cache
def _totals(by_version: bool, one_version: bool) -> sa.Select[Any]:
    """Built once (building 14 SUMs per call cost more than the query itself)."""
    t = H.__table__.c
    where = [t.model == sa.bindparam("model"), t.kind == sa.bindparam("kind"), t.hour >= sa.bindparam("since"),
             t.hour <= sa.bindparam("last_hour")]
    if one_version:
        where.append(t.version_id == sa.bindparam("version_id"))
    sums = [sa.func.sum(t[c]).label(c) for c in SUMS]
    if not by_version:
        return sa.select(*sums).where(*where)
    return (sa.select(t.version_id.label("segment"), *sums).where(*where, t.version_id != NO_VERSION)
            .group_by(t.version_id).order_by(t.version_id))
