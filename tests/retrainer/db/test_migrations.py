"""Alembic migrations and the database-held invariants, on SQLite and the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

from retrainer.db import (
    get_engine,
    records,  # noqa: F401  (every table on the metadata)
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
        s.add_all([_request("ctr", RequestStatus.PENDING), _request("ctr", RequestStatus.RUNNING),
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
