"""Alembic migrations and the database-held invariants, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

from retrainer.db import (
    get_engine,
    records,
    session_scope,
)
from retrainer.db.base import Base
from retrainer.db.migrate import MIGRATIONS, alembic_config, current_revision, upgrade
from retrainer.db.records import (
    ModelVersion,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _version(model: str, number: int, production: bool = False) -> ModelVersion:
    return ModelVersion(
        version_id=f"{model}-v{number}", model=model, number=number, family="ctr", algorithm="xgboost",
        is_production=production, num_training_samples=1, training_duration_seconds=0.1, hyperparameters={},
        metrics={}, artifact_uri=f"/nowhere/{model}-{number}.json", artifact_sha256="0" * 64, library_versions={},
    )


def _run(model: str, run_id: str, status: RunStatus) -> TrainingRun:
    return TrainingRun(run_id=run_id, model=model, trigger=Trigger.MANUAL, status=status)


def _request(model: str, status: RequestStatus) -> RetrainRequest:
    return RetrainRequest(model=model, trigger=Trigger.EVENT, requested_by="test", status=status)


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    assert current_revision(db_url) == _head()
    with get_engine(db_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"schema differs from Base.metadata: {diff}"
    tables = set(sa.inspect(get_engine(db_url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_comparison_would_see_a_missing_index(db_url: str) -> None:
    """The check above is not vacuous: drop an index and compare_metadata reports it."""
    with get_engine(db_url).begin() as conn:
        conn.execute(sa.text("DROP INDEX uq_training_runs_one_running"))
    with get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert any(d[0] == "add_index" and d[1].name == "uq_training_runs_one_running" for d in diff), diff


def test_upgrade_is_idempotent(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(SystemEvent(kind="test", message="kept across upgrades", payload={}))
    upgrade(db_url)
    upgrade(db_url)
    assert current_revision(db_url) == _head()
    with session_scope(db_url) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SystemEvent)) == 1


def test_migrations_folder_is_packaged() -> None:
    assert (MIGRATIONS / "env.py").is_file()
    assert list((MIGRATIONS / "versions").glob("0001_*.py"))


def test_one_production_version_per_model(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add_all([_version("ctr", 1, production=True), _version("ctr", 2), _version("roas", 1, production=True)])
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(_version("ctr", 3, production=True))
        s.flush()
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.get(ModelVersion, "ctr-v2").is_production = True
        s.flush()
    # another model is free to have its own production version; non-production rows are unlimited
    with session_scope(db_url) as s:
        s.add_all([_version("churn", 1, production=True), _version("ctr", 4), _version("ctr", 5)])
    with session_scope(db_url) as s:
        rows = s.execute(
            sa.select(ModelVersion.model, sa.func.count()).where(ModelVersion.is_production).group_by(ModelVersion.model)
        ).all()
        assert dict(rows) == {"ctr": 1, "roas": 1, "churn": 1}
        assert s.get(ModelVersion, "ctr-v3") is None


def test_version_numbers_unique_per_model(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add(_version("ctr", 1))
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        row = _version("ctr", 1)
        row.version_id = "ctr-v1-again"
        s.add(row)
        s.flush()


def test_one_running_training_run_per_model(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add_all([_run("ctr", "r1", RunStatus.RUNNING), _run("ctr", "r0", RunStatus.COMPLETED),
                   _run("ctr", "r00", RunStatus.COMPLETED)])
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(_run("ctr", "r2", RunStatus.RUNNING))
        s.flush()
    with session_scope(db_url) as s:
        s.add_all([_run("roas", "r3", RunStatus.RUNNING), _run("ctr", "r4", RunStatus.SKIPPED),
                   _run("ctr", "r5", RunStatus.FAILED)])
    # once the holder finishes, the lock is free again
    with session_scope(db_url) as s:
        s.get(TrainingRun, "r1").status = RunStatus.COMPLETED
    with session_scope(db_url) as s:
        s.add(_run("ctr", "r6", RunStatus.RUNNING))
    with session_scope(db_url) as s:
        running = s.scalars(sa.select(TrainingRun.run_id).where(TrainingRun.status == RunStatus.RUNNING)).all()
        assert sorted(running) == ["r3", "r6"]


def test_one_pending_retrain_request_per_model(db_url: str) -> None:
    with session_scope(db_url) as s:
        s.add_all([_request("ctr", RequestStatus.PENDING), _request("ctr", RequestStatus.PROCESSING),
                   _request("ctr", RequestStatus.COMPLETED), _request("ctr", RequestStatus.COMPLETED)])
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        s.add(_request("ctr", RequestStatus.PENDING))
        s.flush()
    with session_scope(db_url) as s:
        s.add(_request("roas", RequestStatus.PENDING))
    with session_scope(db_url) as s:
        pending = s.execute(
            sa.select(RetrainRequest.model, sa.func.count())
            .where(RetrainRequest.status == RequestStatus.PENDING).group_by(RetrainRequest.model)
        ).all()
        assert dict(pending) == {"ctr": 1, "roas": 1}


def test_utc_datetime_hands_back_aware_utc(db_url: str) -> None:
    plus_two = timezone(timedelta(hours=2))
    with session_scope(db_url) as s:
        s.add(SystemEvent(id=1, kind="t", message="aware +02", payload={},
                          created_at=datetime(2024, 7, 1, 14, 0, tzinfo=plus_two)))
        s.add(SystemEvent(id=2, kind="t", message="naive is UTC", payload={}, created_at=datetime(2024, 7, 1, 9, 30)))
    with session_scope(db_url) as s:
        first, second = s.get(SystemEvent, 1), s.get(SystemEvent, 2)
        for row in (first, second):
            assert row.created_at.tzinfo is not None
            assert row.created_at.utcoffset() == timedelta(0)
        assert first.created_at == datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
        assert first.created_at.hour == 12
        assert second.created_at == datetime(2024, 7, 1, 9, 30, tzinfo=UTC)
        # comparisons in SQL use the UTC value too
        later = s.scalars(
            sa.select(SystemEvent.id).where(SystemEvent.created_at > datetime(2024, 7, 1, 11, 0, tzinfo=UTC))
        ).all()
        assert later == [1]


# --- 0004: a step-1 database upgraded in place, with data in it ---------------------------------

STEP1_ROWS = {
    "prediction_records": [
        {"prediction_id": "p-1", "model": "ctr", "version_id": "ctr-v1", "features": '{"x": 1.0}',
         "predicted": 0.03, "confidence": None, "hook_type": "question", "template_id": "t2", "actual": 0.04,
         "error": 0.01, "status": "completed", "predicted_at": "2024-05-01 10:00:00", "completed_at": "2024-05-01 11:00:00"},
        {"prediction_id": "p-2", "model": "ctr", "version_id": None, "features": '{"x": 2.0}',
         "predicted": 0.05, "confidence": 0.7, "hook_type": None, "template_id": "t5", "actual": None,
         "error": None, "status": "predicted", "predicted_at": "2024-05-01 10:05:00", "completed_at": None},
    ],
    "observations": [
        {"model": "ctr", "event_id": "outcome:p-1", "features": '{"x": 1.0}', "label": 0.04,
         "event_time": "2024-05-01 10:00:00", "source": "outcome", "created_at": "2024-05-01 11:00:00"},
    ],
    "model_versions": [
        {"version_id": f"ctr-v{n}", "model": "ctr", "number": n, "family": "ctr", "algorithm": "xgboost",
         "status": "active" if n == 2 else "archived", "is_production": n == 2, "trained_at": "2024-04-01 00:00:00",
         "num_training_samples": 100, "training_duration_seconds": 1.5, "hyperparameters": "{}", "metrics": '{"mae": 0.01}',
         "artifact_uri": f"/a/ctr-{n}.json", "artifact_sha256": "0" * 64, "library_versions": "{}",
         "parent_version_id": "ctr-v1" if n == 2 else None, "previous_production_id": "ctr-v1" if n == 2 else None}
        for n in (1, 2)
    ],
    "training_runs": [
        {"run_id": "run-1", "model": "ctr", "version_id": "ctr-v2", "trigger": "manual", "source": "observations",
         "fine_tune": False, "status": "completed", "outcome": "retrained", "started_at": "2024-04-01 00:00:00",
         "promoted_to_production": True},
    ],
}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_step1_database_upgrades_in_place(request: pytest.FixtureRequest, backend: str) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    upgrade(url, "0001")
    engine = get_engine(url)
    with engine.begin() as conn:  # as step 1 wrote them: plain SQL against the 0001 tables
        for table, rows in STEP1_ROWS.items():
            conn.execute(sa.table(table, *(sa.column(k) for k in rows[0])).insert(), rows)
    upgrade(url)
    assert current_revision(url) == _head()
    with engine.connect() as conn:
        preds = conn.execute(sa.text(
            "SELECT prediction_id, segments, kind, proba, actual, error, status FROM prediction_records ORDER BY id"
        )).all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("prediction_records")}
        id_types = {t: next(c["type"] for c in sa.inspect(conn).get_columns(t) if c["name"] == "id")
                    for t in ("prediction_records", "observations", "system_events", "model_evaluations")}
    segments = [s if isinstance(s, dict) else json.loads(s) for s in (p.segments for p in preds)]
    assert segments == [{"hook_type": "question", "template_id": "t2"}, {"template_id": "t5"}]  # nulls left out
    assert [(p.prediction_id, p.kind, p.proba, p.actual, p.status) for p in preds] == [
        ("p-1", "regression", None, 0.04, "completed"), ("p-2", "regression", None, None, "predicted")]
    assert not {"hook_type", "template_id"} & columns
    if backend == "postgres":
        assert all(isinstance(t, sa.BigInteger) for t in id_types.values()), id_types
    with session_scope(url) as s:
        record = s.scalar(sa.select(records.PredictionRecord).where(records.PredictionRecord.prediction_id == "p-1"))
        assert record.segments == {"hook_type": "question", "template_id": "t2"} and record.features == {"x": 1.0}
        assert s.scalar(sa.select(records.Observation.label)) == 0.04
        v2 = s.get(ModelVersion, "ctr-v2")
        assert (v2.is_production, v2.parent_version_id, v2.previous_production_id) == (True, "ctr-v1", "ctr-v1")
        run = s.get(TrainingRun, "run-1")
        assert (run.status, run.version_id, run.promoted_to_production) == (RunStatus.COMPLETED, "ctr-v2", True)
        # new rows continue the old ids
        s.add(records.PredictionRecord(prediction_id="p-3", model="ctr", features={}, predicted=1.0,
                                       segments={"region": "eu"}))
        s.flush()
        assert s.scalar(sa.select(sa.func.max(records.PredictionRecord.id))) == 3


def test_enum_columns_refuse_a_stray_value(db_url: str) -> None:
    """The CHECK constraints hold for a row written around the ORM."""
    with pytest.raises(IntegrityError), get_engine(db_url).begin() as conn:
        conn.execute(sa.text("INSERT INTO training_runs (run_id, model, trigger, source, fine_tune, status, started_at,"
                             " attempt, promoted_to_production) VALUES ('r', 'ctr', 'manual', 'observations', false,"
                             " 'exploded', '2024-01-01 00:00:00', 0, false)"))
    with pytest.raises(IntegrityError), get_engine(db_url).begin() as conn:
        conn.execute(sa.text("INSERT INTO prediction_records (prediction_id, model, kind, features, predicted, segments,"
                             " status, predicted_at) VALUES ('p', 'ctr', 'guess', '{}', 1.0, '{}', 'predicted',"
                             " '2024-01-01 00:00:00')"))


def test_enum_checks_are_named_after_their_column(db_url: str) -> None:
    inspector = sa.inspect(get_engine(db_url))
    names = {t: {c["name"] for c in inspector.get_check_constraints(t)}
             for t in ("prediction_records", "model_versions", "retrain_requests", "training_runs")}
    assert names == {
        "prediction_records": {"ck_prediction_records_status", "ck_prediction_records_kind"},
        "model_versions": {"ck_model_versions_status"},
        "retrain_requests": {"ck_retrain_requests_trigger", "ck_retrain_requests_priority", "ck_retrain_requests_status"},
        "training_runs": {"ck_training_runs_trigger", "ck_training_runs_status"},
    }


def test_versions_name_their_parent_by_foreign_key(db_url: str) -> None:
    with pytest.raises(IntegrityError), session_scope(db_url) as s:
        row = _version("ctr", 1)
        row.parent_version_id = "ctr-v0-never-trained"
        s.add(row)
        s.flush()


def test_prediction_kinds_are_the_families_live_kinds() -> None:
    from retrainer.models.base import Live

    assert {k.value for k in records.PredictionKind} == {k.value for k in Live}


# --- 0005: the live-accuracy rollup is backfilled from the completed records ---------------------

def _record(pid: str, kind: str, version: str | None, at: str, predicted: float, actual: float | None) -> dict:
    return {"prediction_id": pid, "model": "m", "version_id": version, "kind": kind, "features": "{}",
            "predicted": predicted, "segments": "{}", "actual": actual,
            "error": None if actual is None else abs(actual - predicted),
            "status": "predicted" if actual is None else "completed", "predicted_at": at,
            "completed_at": None if actual is None else at}


STEP3_RECORDS = [
    _record("r1", "regression", "m-v1", "2024-05-01 10:00:00", 10.0, 11.0),
    _record("r2", "regression", "m-v1", "2024-05-01 10:59:59.999999", 10.0, 20.0),
    _record("r3", "regression", None, "2024-05-01 11:00:00", 3.0, 2.5),
    _record("r4", "regression", "m-v2", "2024-05-01 11:30:00", 4.0, None),  # no outcome: not rolled up
    _record("c1", "classification", "m-v1", "2024-05-01 10:10:00", 1.0, 1.0),
    _record("c2", "classification", "m-v1", "2024-05-01 10:20:00", 0.0, 1.0),
    _record("c3", "classification", None, "2024-05-01 12:20:00", 1.0, 2.0),
    _record("f1", "forecast", "m-v2", "2024-05-01 10:05:00", 30.0, 20.0),
    _record("f2", "forecast", "m-v2", "2024-05-01 10:06:00", 30.0, 45.0),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_0004_database_is_backfilled_into_the_rollup(request: pytest.FixtureRequest, backend: str) -> None:
    from retrainer.models.base import Live
    from retrainer.services import accuracy, predictions

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    upgrade(url, "0004")
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.table("prediction_records", *(sa.column(k) for k in STEP3_RECORDS[0])).insert(), STEP3_RECORDS)
    upgrade(url)
    until = datetime(2024, 5, 1, 13, tzinfo=UTC)
    with session_scope(url) as s:
        buckets = {(b.version_id, b.hour.hour, b.kind.value): b.n for b in s.scalars(sa.select(records.LiveAccuracyHour))}
        assert buckets == {("m-v1", 10, "regression"): 2, ("", 11, "regression"): 1, ("m-v1", 10, "classification"): 2,
                           ("", 12, "classification"): 1, ("m-v2", 10, "forecast"): 2}
        reg = accuracy.live_accuracy(s, "m", 1, until=until, kind=Live.REGRESSION)
        assert (reg.count, reg["mae"], reg["within_20pct"]) == (3, pytest.approx(11.5 / 3), pytest.approx(2 / 3))
        cls = accuracy.live_accuracy(s, "m", 1, until=until, kind=Live.CLASSIFICATION)
        assert (cls.count, cls["accuracy"], cls["precision"]) == (3, pytest.approx(1 / 3), None)  # class 2: not binary
        for version in (None, "m-v1", "m-v2"):
            for kind in Live:
                rolled = accuracy.live_accuracy(s, "m", 1, version_id=version, until=until, kind=kind).as_dict()
                raw = accuracy.raw_live_accuracy(s, "m", 1, version_id=version, until=until, kind=kind).as_dict()
                assert rolled == pytest.approx(raw, abs=1e-12), (version, kind)
        # new outcomes and corrections of backfilled records move the backfilled sums
        predictions.record_outcome(s, "c3", 0.0)
        predictions.record_outcome(s, "r4", 4.0)
        predictions.record_outcome(s, "r2", 12.0)
        for kind in Live:
            rolled = accuracy.live_accuracy(s, "m", 1, until=until, kind=kind).as_dict()
            assert rolled == pytest.approx(accuracy.raw_live_accuracy(s, "m", 1, until=until, kind=kind).as_dict(),
                                           abs=1e-12), kind
        assert accuracy.live_accuracy(s, "m", 1, until=until, kind=Live.CLASSIFICATION)["precision"] == 0.5
