"""The hourly live-accuracy rollup (services/live_rollup.py) answers exactly what a scan of the raw
records and pandas answer over the same exact window (whole hours from the rollup, the partial hours
at its edges from the records), for every kind and metric, through corrections, idempotent repeats,
versionless predictions and rows on the window's edges to the microsecond; and concurrent
outcomes into one hour lose no increment (PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.db.records import LiveAccuracyHour, PredictionKind
from retrainer.models.base import LIVE_METRICS, Live
from retrainer.services import accuracy, events, live_rollup, predictions

NOW = datetime(2024, 6, 1, 12, 37, 5, tzinfo=UTC)  # mid-hour: the current hour is partial
SINCE = NOW - timedelta(days=7)  # the window is [SINCE, NOW], exactly
TICK = timedelta(microseconds=1)
VERSIONS = ("m-v1", "m-v2", None)


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def test_the_window_is_exact_and_cut_into_rollup_hours_and_raw_edges() -> None:
    assert accuracy.window(NOW, 7) == (SINCE, NOW + TICK)
    hours, edges = accuracy._pieces(*accuracy.window(NOW, 7))
    assert hours == (datetime(2024, 5, 25, 13, tzinfo=UTC), datetime(2024, 6, 1, 11, tzinfo=UTC))
    assert edges == [(SINCE, datetime(2024, 5, 25, 13, tzinfo=UTC)), (datetime(2024, 6, 1, 12, tzinfo=UTC), NOW + TICK)]
    on_the_hour = datetime(2024, 6, 1, 12, tzinfo=UTC)  # both edges on hour boundaries: the records of 12:00:00.000
    assert accuracy._pieces(*accuracy.window(on_the_hour, 1)) == (
        (on_the_hour - timedelta(days=1), on_the_hour - timedelta(hours=1)),
        [(on_the_hour - timedelta(days=1), on_the_hour - timedelta(days=1)), (on_the_hour, on_the_hour + TICK)])
    assert accuracy._pieces(*accuracy.window(NOW, 0.01)) == (None, [(NOW - timedelta(days=0.01), NOW + TICK)])


def _values(kind: Live, rng: np.random.Generator, classes: int) -> tuple[float, float]:
    if kind == Live.CLASSIFICATION:
        actual = int(rng.integers(0, classes))
        return float(actual if rng.uniform() < 0.7 else rng.integers(0, classes)), float(actual)
    if kind == Live.FORECAST:
        actual = round(float(rng.uniform(1, 96)), 3)
        return round(actual + float(rng.normal(0, 12)), 3), actual
    actual = round(float(rng.uniform(0.01, 0.08)), 6)
    return round(actual + float(rng.normal(0, 0.01)), 6), actual


def populate(session: Session, kind: Live, model: str, seed: int, n: int = 160, classes: int = 2) -> pd.DataFrame:
    """Random completed and open predictions over 10 days (some on the window's edges), versions and
    versionless ones, repeats and corrections; returns each prediction's final state."""
    rng = np.random.default_rng(seed)
    first_hour = datetime(2024, 5, 25, 13, tzinfo=UTC)
    edges = [SINCE, SINCE - TICK, first_hour - TICK, first_hour, NOW.replace(minute=0, second=0) - TICK,
             NOW.replace(minute=0, second=0), NOW, NOW + TICK, NOW + timedelta(minutes=5)]
    rows = []
    for i in range(n):
        at = edges[i] if i < len(edges) else NOW - timedelta(days=float(rng.uniform(0, 10)))
        predicted, actual = _values(kind, rng, classes)
        pid, version = f"{model}-{kind}-{seed}-{i}", VERSIONS[i % 3]
        predictions.log_prediction(session, model, {"x": float(i)}, predicted, version_id=version, prediction_id=pid,
                                   at=at, kind=kind)
        session.flush()
        done = i < len(edges) or rng.uniform() < 0.85  # the edge rows always count
        if done:
            first = actual if rng.uniform() < 0.8 else _values(kind, rng, classes + 1)[1]  # some wrong, corrected later
            predictions.record_outcome(session, pid, first, at=at + timedelta(minutes=30))
            predictions.record_outcome(session, pid, actual, at=at + timedelta(hours=2))  # a correction or a repeat
        rows.append({"predicted_at": at, "version": version, "predicted": predicted, "actual": actual, "done": done})
    session.flush()
    return pd.DataFrame(rows)


def reference(kind: Live, frame: pd.DataFrame, since: datetime = SINCE, until: datetime = NOW) -> dict[str, Any]:
    """pandas over the same window: the completed rows in [since, until]."""
    f = frame[frame.done & (frame.predicted_at >= since) & (frame.predicted_at <= until)]
    a, p = f.actual.to_numpy(float), f.predicted.to_numpy(float)
    out: dict[str, Any] = {"count": len(f)}
    if kind == Live.CLASSIFICATION:
        binary = bool(np.isin(a, [0, 1]).all() and np.isin(p, [0, 1]).all())
        tp = int(((p == 1) & (a == 1)).sum())
        return out | {"accuracy": float((a == p).mean()),
                      "precision": tp / int((p == 1).sum()) if binary else None,
                      "recall": tp / int((a == 1).sum()) if binary else None}
    err = a - p
    out |= {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}
    if kind == Live.FORECAST:
        return out | {f"within_{h}h": float((np.abs(err) <= h).mean()) for h in (6, 12, 24)}
    return out | {"r2": float(1 - (err**2).sum() / ((a - a.mean()) ** 2).sum()),
                  "within_20pct": float((np.abs(err) <= 0.2 * np.abs(a)).mean())}


def same(acc: accuracy.Accuracy, exp: dict[str, Any]) -> None:
    assert acc.count == exp["count"]
    assert set(acc.metrics) == set(LIVE_METRICS[acc.kind]) == set(exp) - {"count"}
    for key, value in acc.metrics.items():
        assert (value is None) == (exp[key] is None), key
        if value is not None:
            assert value == pytest.approx(exp[key], abs=1e-9, rel=0), key


@pytest.mark.parametrize(("kind", "classes"), [(Live.REGRESSION, 0), (Live.CLASSIFICATION, 2),
                                               (Live.CLASSIFICATION, 4), (Live.FORECAST, 0)])
def test_rollup_equals_raw_records_and_pandas(session: Session, kind: Live, classes: int) -> None:
    frame = populate(session, kind, "m", seed=classes + len(kind), classes=classes)
    other = Live.FORECAST if kind != Live.FORECAST else Live.REGRESSION
    populate(session, other, "m", seed=99, n=20)  # the same model's rows of another kind: not measured
    populate(session, kind, "other-model", seed=98, n=20, classes=max(classes, 2))
    roll = accuracy.live_accuracy(session, "m", 7, kind=kind)
    same(roll, reference(kind, frame))
    same(accuracy.raw_live_accuracy(session, "m", 7, kind=kind), reference(kind, frame))
    assert 60 < roll.count < 140 and (kind != Live.CLASSIFICATION or (roll["precision"] is None) == (classes > 2))
    parts = accuracy.breakdown(session, "m", by="version_id", kind=kind)
    assert sorted(parts) == ["m-v1", "m-v2"]  # the versionless rows have no version to be grouped under
    for version in VERSIONS:
        exp = reference(kind, frame[frame.version.isna() if version is None else frame.version == version])
        if version is not None:
            same(parts[version], exp)
            same(accuracy.live_accuracy(session, "m", 7, version_id=version, kind=kind), exp)
            same(accuracy.raw_live_accuracy(session, "m", 7, version_id=version, kind=kind), exp)
    # windows that end elsewhere: their edges fall on other rows
    for later in (NOW + timedelta(minutes=5), NOW + timedelta(hours=1), SINCE + timedelta(days=7, minutes=-37, seconds=-5)):
        same(accuracy.live_accuracy(session, "m", 7, until=later, kind=kind),
             reference(kind, frame, later - timedelta(days=7), later))
    assert accuracy.live_accuracy(session, "m", 20, kind=kind).count == int((frame.done & (frame.predicted_at <= NOW)).sum())


def _bucket(session: Session) -> dict[str, Any]:
    row = session.scalars(sa.select(LiveAccuracyHour)).one()
    return {c: getattr(row, c) for c in (*live_rollup.KEY, *live_rollup.SUMS)}


def test_repeat_adds_nothing_and_a_correction_replaces_the_first_value(session: Session) -> None:
    at = datetime(2024, 6, 1, 9, 59, 59, tzinfo=UTC)
    predictions.log_prediction(session, "m", {"x": 1.0}, 10.0, prediction_id="p", at=at)
    session.flush()
    assert session.scalars(sa.select(LiveAccuracyHour)).all() == []  # no outcome yet, nothing rolled up
    predictions.record_outcome(session, "p", 11.0)
    first = _bucket(session)
    assert first["version_id"] == "" and first["hour"] == datetime(2024, 6, 1, 9, tzinfo=UTC)
    assert first["kind"] == PredictionKind.REGRESSION
    assert (first["n"], first["sum_abs_err"], first["sum_y"], first["within_20pct"]) == (1, 1.0, 11.0, 1)
    predictions.record_outcome(session, "p", 11.0)
    session.expire_all()
    assert _bucket(session) == first
    predictions.record_outcome(session, "p", 20.0)
    session.expire_all()
    corrected = _bucket(session)
    assert (corrected["n"], corrected["sum_abs_err"], corrected["sum_sq_err"], corrected["sum_y"],
            corrected["sum_yy"], corrected["within_20pct"]) == (1, 10.0, 100.0, 20.0, 400.0, 0)


def test_concurrent_outcomes_into_one_hour_lose_no_increment(pg_url: str) -> None:
    """The UPSERT locks the bucket: a second writer waits for the first transaction and then adds to
    its committed sums; and many writers racing on one bucket end with every outcome counted."""
    at = datetime(2024, 6, 1, 10, 15, tzinfo=UTC)
    n_threads, each = 4, 40
    with session_scope(pg_url) as s:
        for i in range(2 + n_threads * each):
            predictions.log_prediction(s, "m", {"x": float(i)}, 1.0, version_id="m-v1", prediction_id=f"p{i}",
                                       at=at + timedelta(seconds=i), kind=Live.FORECAST)
    outcome: dict[str, Any] = {}

    def second_writer() -> None:
        try:
            with session_scope(pg_url) as s:
                predictions.record_outcome(s, "p1", 5.0)
            outcome["second"] = "done"
        except BaseException as exc:  # noqa: BLE001  (reported to the main thread)
            outcome["second"] = exc

    with session_scope(pg_url) as s:
        predictions.record_outcome(s, "p0", 3.0)
        racer = threading.Thread(target=second_writer)
        racer.start()
        racer.join(1.0)
        assert racer.is_alive(), "the second writer did not wait for the first transaction's bucket"
    racer.join(30)
    assert outcome["second"] == "done", outcome

    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            start.wait(10)
            for i in range(2 + t * each, 2 + (t + 1) * each):
                with session_scope(pg_url) as s:  # one transaction per outcome, as the per-event task
                    predictions.record_outcome(s, f"p{i}", float(i % 30))
        except BaseException as exc:  # noqa: BLE001  (reported to the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    with session_scope(pg_url) as s:
        bucket = s.scalars(sa.select(LiveAccuracyHour)).one()
        assert bucket.n == 2 + n_threads * each
        later = at + timedelta(hours=1)  # the bucket's hour is then a whole hour of the window: from the rollup
        raw = accuracy.raw_live_accuracy(s, "m", 30, until=later, kind=Live.FORECAST)
        roll = accuracy.live_accuracy(s, "m", 30, until=later, kind=Live.FORECAST)
        assert roll.count == raw.count == bucket.n
        same(roll, raw.as_dict())


def test_the_batch_path_rolls_up_only_the_outcomes_it_kept(settings: Settings, session: Session) -> None:
    """events.store sums a batch's changes per bucket and writes them at the end; an outcome whose
    savepoint rolls back after its change was staged (its training row collides) changes nothing."""
    rng = np.random.default_rng(5)
    for i in range(60):
        predictions.log_prediction(session, "ctr", {"x": float(i)}, round(float(rng.uniform(0.01, 0.08)), 6),
                                   version_id=VERSIONS[i % 3], prediction_id=f"b{i}",
                                   at=NOW - timedelta(hours=float(rng.uniform(0, 5))))
    predictions.record_outcome(session, "b0", 0.05)  # outside the batch, corrected inside it
    # a purchase whose event id is the training-row key of b7's outcome: that outcome's insert collides
    events.store(session, settings, [events.parse({"type": "purchase", "model": "ctr", "features": {"x": 1.0},
                                                   "value": 0.02, "event_id": "outcome:b7"})])
    batch = [{"type": "outcome", "prediction_id": f"b{i}", "value": round(float(rng.uniform(0.01, 0.08)), 6)}
             for i in range(50)]
    batch += [batch[3], {**batch[4], "value": 0.07}, {"type": "outcome", "prediction_id": "nope", "value": 0.1}]
    stored = events.store(session, settings, [events.parse(e) for e in batch])
    assert [i for i, _ in stored.rejected] == [7, 52]
    session.flush()
    assert session.scalar(sa.select(sa.func.sum(LiveAccuracyHour.n))) == 49  # b0..b49 less b7, none twice
    for version in (None, *VERSIONS[:2]):
        roll = accuracy.live_accuracy(session, "ctr", 1, version_id=version, kind=Live.REGRESSION)
        same(roll, accuracy.raw_live_accuracy(session, "ctr", 1, version_id=version, kind=Live.REGRESSION).as_dict())
