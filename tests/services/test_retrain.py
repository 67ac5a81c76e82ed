"""retrainer.services.retrain: the whole pipeline on SQLite and the real PostgreSQL."""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.db.records import (
    ModelEvaluation,
    ModelVersion,
    Observation,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
    VersionStatus,
)
from retrainer.services import dataset, registry, retrain
from tests.services.builders import END, START, corrupt, seed
from tests.support import make_settings, model_config

DRIFT_START = END
DRIFT_END = END + timedelta(days=30)


def run(settings: Settings, model: str = "ctr", **kwargs: Any) -> dict[str, Any]:
    with session_scope(settings.database_url) as s:
        return retrain.retrain(s, settings, model, **kwargs)


def seed_rows(settings: Settings, n: int = 300, **kwargs: Any) -> None:
    with session_scope(settings.database_url) as s:
        seed(s, n=n, **kwargs)


def rows(settings: Settings, table: Any, *where: Any, order_by: Any = None) -> list[Any]:
    with session_scope(settings.database_url) as s:
        stmt = sa.select(table).where(*where)
        if order_by is not None:
            stmt = stmt.order_by(order_by)
        return list(s.scalars(stmt))


def artifact_files(settings: Settings) -> list[Path]:
    root = Path(settings.artifact_dir)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def production_id(settings: Settings) -> str | None:
    with session_scope(settings.database_url) as s:
        current = registry.production(s, "ctr")
        return current.version_id if current else None


def test_first_run_then_kept_then_retrained_after_drift(settings: Settings) -> None:
    seed_rows(settings, 300)

    first = run(settings, trigger=Trigger.SCHEDULE)
    assert first["status"] == "retrained", first
    assert first["version_id"] == "ctr-v1" and first["production_version"] == "ctr-v1"
    assert first["promoted"] is True and first["champion_version"] is None
    assert first["old_metrics"] is None and first["improvement"] is None
    assert "First model" in first["reason"]
    assert first["samples"] == 240 and first["holdout"]["rows"] == 60
    assert first["dropped_rows"] == 0
    assert {"test_mae", "test_rmse", "test_r2", "test_accuracy", "trained_at"} <= set(first["metrics"])
    assert first["metrics"]["test_mae"] < 0.01  # it learned the synthetic CTR
    assert production_id(settings) == "ctr-v1"

    second = run(settings)
    assert second["status"] == "kept", second
    assert second["version_id"] == "ctr-v2" and second["production_version"] == "ctr-v1"
    assert second["promoted"] is False
    assert "2%" in second["reason"] and "ctr-v1" in second["reason"]
    assert second["improvement"]["percentage"] < 2
    assert second["holdout"]["hash"] == first["holdout"]["hash"]  # same data, same holdout rows
    assert production_id(settings) == "ctr-v1"

    # the platform changes: newer rows follow another CTR
    seed_rows(settings, 300, start=DRIFT_START, end=DRIFT_END, drift_from=DRIFT_START, seed=8, prefix="drift")
    third = run(settings, trigger=Trigger.ACCURACY)
    assert third["status"] == "retrained", third
    assert third["version_id"] == "ctr-v3" and third["champion_version"] == "ctr-v1"
    assert third["improvement"]["percentage"] >= 2
    assert third["improvement"]["mae_improvement"] > 0
    assert third["old_metrics"]["test_mae"] > 0.02  # the drifted CTR is beyond the pre-drift model
    assert third["metrics"]["test_mae"] < third["old_metrics"]["test_mae"]
    assert "better than ctr-v1" in third["reason"]
    assert production_id(settings) == "ctr-v3"

    versions = {v.version_id: v for v in rows(settings, ModelVersion)}
    assert versions["ctr-v3"].previous_production_id == "ctr-v1"
    assert versions["ctr-v3"].parent_version_id == "ctr-v1"
    assert versions["ctr-v3"].status == VersionStatus.ACTIVE
    assert versions["ctr-v2"].status == VersionStatus.TRAINED and not versions["ctr-v2"].is_production
    assert versions["ctr-v1"].status == VersionStatus.TRAINED and not versions["ctr-v1"].is_production
    assert len(artifact_files(settings)) == 3
    for v in versions.values():
        registry.load_estimator(v)  # every artifact verifies and loads

    # the run records
    runs = {r.run_id: r for r in rows(settings, TrainingRun)}
    r3 = runs[third["run_id"]]
    assert r3.status == RunStatus.COMPLETED and r3.outcome == "retrained"
    assert r3.promoted_to_production is True
    assert r3.improvement_percentage == pytest.approx(third["improvement"]["percentage"])
    assert r3.promotion_reason == third["reason"]
    assert r3.version_id == "ctr-v3" and r3.trigger == Trigger.ACCURACY
    assert (r3.dataset_size, r3.train_size, r3.holdout_size) == (600, 480, 120)
    assert r3.metrics["mae"] == pytest.approx(third["metrics"]["test_mae"])
    assert r3.old_metrics["mae"] == pytest.approx(third["old_metrics"]["test_mae"])
    assert r3.completed_at >= r3.started_at and r3.duration_seconds >= 0
    assert r3.error_message is None
    r2 = runs[second["run_id"]]
    assert (r2.status, r2.outcome, r2.promoted_to_production) == (RunStatus.COMPLETED, "kept", False)
    assert r2.promotion_reason == second["reason"] and r2.improvement_percentage < 2
    r1 = runs[first["run_id"]]
    assert (r1.outcome, r1.promoted_to_production, r1.improvement_percentage) == ("retrained", True, None)
    assert r1.trigger == Trigger.SCHEDULE

    # candidate and champion scored on the very same holdout
    evals = rows(settings, ModelEvaluation, ModelEvaluation.run_id == third["run_id"])
    by_role = {e.role: e for e in evals}
    assert set(by_role) == {"candidate", "champion"}
    cand, champ = by_role["candidate"], by_role["champion"]
    assert (cand.version_id, champ.version_id) == ("ctr-v3", "ctr-v1")
    for field in ("holdout_hash", "holdout_rows", "holdout_start", "holdout_end", "primary_metric"):
        assert getattr(cand, field) == getattr(champ, field), field
    assert cand.holdout_hash == third["holdout"]["hash"] and cand.holdout_rows == 120
    assert cand.holdout_start.isoformat() == third["holdout"]["start"]
    assert cand.holdout_start >= DRIFT_START
    assert cand.champion_score == pytest.approx(champ.overall_score)
    assert cand.overall_score == pytest.approx(third["metrics"]["test_mae"])
    assert len(cand.predictions_sample["rows"]) == 20
    assert [e.role for e in rows(settings, ModelEvaluation, ModelEvaluation.run_id == first["run_id"])] == ["candidate"]

    decisions = rows(settings, SystemEvent, SystemEvent.kind == "decision", order_by=SystemEvent.id)
    assert [d.payload["outcome"] for d in decisions] == ["retrained", "kept", "retrained"]
    assert decisions[-1].payload["holdout_hash"] == third["holdout"]["hash"]


def test_too_few_rows(settings: Settings) -> None:
    seed_rows(settings, 30)
    result = run(settings)
    assert result["status"] == "insufficient_data"
    assert result["count"] == 30
    assert "50" in result["message"] and "30" in result["message"]
    assert rows(settings, ModelVersion) == []
    assert rows(settings, ModelEvaluation) == []
    assert artifact_files(settings) == []
    [r] = rows(settings, TrainingRun)
    assert (r.status, r.outcome, r.dataset_size) == (RunStatus.SKIPPED, "insufficient_data", 30)
    assert r.completed_at is not None


def test_empty_table(settings: Settings) -> None:
    result = run(settings)
    assert result["status"] == "insufficient_data"
    assert result["count"] == 0
    assert rows(settings, ModelVersion) == []
    assert artifact_files(settings) == []


def test_invalid_rows_are_dropped_and_counted(settings: Settings) -> None:
    seed_rows(settings, 300)
    with session_scope(settings.database_url) as s:
        good = s.scalars(sa.select(Observation).order_by(Observation.id).limit(1)).one()
        t = START + timedelta(hours=5, minutes=7)
        s.add_all([
            Observation(model="ctr", event_id="bad-label", features=good.features, label=math.inf, event_time=t,
                        source="test"),
            Observation(model="ctr", event_id="null-feature", features={**good.features, "hook_strength": None},
                        label=0.03, event_time=t, source="test"),
            Observation(model="ctr", event_id="missing-feature",
                        features={k: v for k, v in good.features.items() if k != "video_length_s"},
                        label=0.03, event_time=t, source="test"),
        ])
    result = run(settings)
    assert result["status"] == "retrained", result
    assert result["dropped_rows"] == 3
    assert result["samples"] + result["holdout"]["rows"] == 300
    [r] = rows(settings, TrainingRun)
    assert r.dataset_size == 300


def test_dropped_rows_are_named_when_too_few_remain(settings: Settings) -> None:
    seed_rows(settings, 50)
    with session_scope(settings.database_url) as s:
        s.execute(sa.update(Observation).where(Observation.id <= 5).values(label=math.inf))
    result = run(settings)
    assert result["status"] == "insufficient_data" and result["count"] == 45
    assert "5 invalid rows dropped" in result["message"] and "label" in result["message"]


def test_a_held_lock_skips_naming_the_holder(settings: Settings) -> None:
    seed_rows(settings, 300)
    with session_scope(settings.database_url) as s:
        s.add(TrainingRun(run_id="run_holder", model="ctr", trigger=Trigger.MANUAL, status=RunStatus.RUNNING,
                          started_at=clock.now(), lease_expires_at=clock.now() + timedelta(hours=1)))
    result = run(settings, trigger=Trigger.EVENT, task_id="celery-123")
    assert result["status"] == "skipped"
    assert result["holder"] == "run_holder"
    assert "run_holder" in result["message"]
    skipped = rows(settings, TrainingRun, TrainingRun.status == RunStatus.SKIPPED)
    assert len(skipped) == 1
    assert skipped[0].run_id == result["run_id"] and skipped[0].outcome == "skipped"
    assert "run_holder" in skipped[0].error_message and skipped[0].celery_task_id == "celery-123"
    assert rows(settings, ModelVersion) == []
    holder = rows(settings, TrainingRun, TrainingRun.run_id == "run_holder")[0]
    assert holder.status == RunStatus.RUNNING  # untouched


def test_an_expired_lease_is_taken_over(settings: Settings) -> None:
    seed_rows(settings, 300)
    with session_scope(settings.database_url) as s:
        s.add(TrainingRun(run_id="run_dead", model="ctr", trigger=Trigger.MANUAL, status=RunStatus.RUNNING,
                          started_at=clock.now() - timedelta(hours=3),
                          lease_expires_at=clock.now() - timedelta(minutes=1)))
    result = run(settings)
    assert result["status"] == "retrained", result
    dead = rows(settings, TrainingRun, TrainingRun.run_id == "run_dead")[0]
    assert dead.status == RunStatus.FAILED and dead.outcome == "error"
    assert "lease expired" in dead.error_message
    assert len(rows(settings, SystemEvent, SystemEvent.kind == "lock_expired")) == 1


def test_unknown_model(settings: Settings) -> None:
    result = run(settings, model="churn")
    assert result["status"] == "error"
    assert "churn" in result["message"]
    assert rows(settings, TrainingRun) == []


def run_after_corrupting_v1(settings: Settings) -> dict[str, Any]:
    """ctr-v1 trained on 300 rows and promoted, its artifact then corrupted; the next run's result."""
    seed_rows(settings, 300)
    assert run(settings)["status"] == "retrained"
    with session_scope(settings.database_url) as s:
        corrupt(registry.get(s, "ctr-v1").artifact_uri)
    return run(settings)


def test_a_corrupt_champion_gives_way_only_to_a_candidate_that_beats_a_constant(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url)
    result = run_after_corrupting_v1(settings)
    assert result["status"] == "retrained", result
    assert "cannot be scored" in result["reason"] and "checksum" in result["reason"]
    assert "beats a constant prediction" in result["reason"]
    assert result["test"]["lower_pct"] > 0  # against the training median, beyond noise
    [evaluation] = rows(settings, ModelEvaluation, ModelEvaluation.run_id == result["run_id"])
    assert evaluation.test["reference"] == "baseline" and evaluation.test["method"] == "paired_bootstrap"
    assert production_id(settings) == "ctr-v2"


def test_a_corrupt_champion_keeps_production_and_raises_an_alert_without_a_bar(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(promotion={"baseline": False})})
    result = run_after_corrupting_v1(settings)
    assert result["status"] == "kept", result  # an unscorable champion says nothing about the candidate
    assert result["champion_version"] == "ctr-v1"
    assert "cannot be scored" in result["reason"] and "checksum" in result["reason"]
    assert "retrainer promote" in result["reason"]
    assert result["metrics"]["test_mae"] < 0.01  # the candidate was still evaluated
    assert result["old_metrics"] is None
    evals = rows(settings, ModelEvaluation, ModelEvaluation.run_id == result["run_id"])
    assert [e.role for e in evals] == ["candidate"]
    [alert] = rows(settings, SystemEvent, SystemEvent.kind == "alert")
    assert alert.payload["run_id"] == result["run_id"] and alert.model == "ctr"
    assert production_id(settings) == "ctr-v1"


def test_a_corrupt_champion_gives_way_to_a_candidate_that_clears_the_floor(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(
        promotion={"floor": {"max_mae": 0.01}, "baseline": False})})
    result = run_after_corrupting_v1(settings)
    assert result["status"] == "retrained", result
    assert "cannot be scored" in result["reason"] and "clears the quality floor" in result["reason"]
    assert production_id(settings) == "ctr-v2"
    assert rows(settings, SystemEvent, SystemEvent.kind == "alert") == []


def test_the_quality_floor_holds_for_the_first_model_too(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(promotion={"floor": {"max_mae": 1e-6}})})
    seed_rows(settings, 300)
    result = run(settings)
    assert result["status"] == "kept" and "misses the quality floor" in result["reason"], result
    assert production_id(settings) is None


def test_auto_promote_off_holds_for_the_first_model_too(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(promotion={"auto_promote": False})})
    seed_rows(settings, 300)
    result = run(settings)
    assert result["status"] == "kept" and "promote it by hand" in result["reason"], result
    assert production_id(settings) is None
    with session_scope(settings.database_url) as s:
        registry.promote(s, result["version_id"], actor="test")  # a person does
    assert production_id(settings) == "ctr-v1"


def test_a_failure_mid_transaction_leaves_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_rows(settings, 300)
    first = run(settings)
    assert first["status"] == "retrained"
    files_before = artifact_files(settings)
    versions_before = rows(settings, ModelVersion)
    evals_before = rows(settings, ModelEvaluation)

    def broken_swap(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away mid-swap")

    seed_rows(settings, 300, start=DRIFT_START, end=DRIFT_END, drift_from=DRIFT_START, seed=8, prefix="drift")
    monkeypatch.setattr(registry, "swap_production", broken_swap)
    result = run(settings)
    assert result["status"] == "error"
    assert "database went away mid-swap" in result["message"]
    assert len(rows(settings, ModelVersion)) == len(versions_before)
    assert len(rows(settings, ModelEvaluation)) == len(evals_before)
    assert artifact_files(settings) == files_before  # the candidate's artifact was removed
    [r] = rows(settings, TrainingRun, TrainingRun.run_id == result["run_id"])
    assert r.status == RunStatus.FAILED and r.outcome == "error"
    assert "RuntimeError" in r.error_message and "mid-swap" in r.error_message
    assert r.version_id is None and r.completed_at is not None
    assert production_id(settings) == "ctr-v1"
    assert rows(settings, TrainingRun, TrainingRun.status == RunStatus.RUNNING) == []  # the lock is released

    monkeypatch.undo()
    again = run(settings)
    assert again["status"] == "retrained" and again["version_id"] == "ctr-v2"  # the number was not burnt


def test_a_run_that_lost_its_lock_discards_its_result(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_rows(settings, 300)
    real_split = dataset.split

    def split_while_another_run_takes_over(*args: Any, **kwargs: Any) -> Any:
        with session_scope(settings.database_url) as other:
            other.execute(sa.update(TrainingRun).where(TrainingRun.status == RunStatus.RUNNING)
                          .values(status=RunStatus.FAILED, error_message="lease expired: worker lost"))
            other.add(TrainingRun(run_id="run_usurper", model="ctr", trigger=Trigger.MANUAL,
                                  status=RunStatus.RUNNING, lease_expires_at=clock.now() + timedelta(hours=1)))
        return real_split(*args, **kwargs)

    monkeypatch.setattr(dataset, "split", split_while_another_run_takes_over)
    result = run(settings)
    assert result["status"] == "error"
    assert "lost its lock" in result["message"]
    assert rows(settings, ModelVersion) == []
    assert rows(settings, ModelEvaluation) == []
    assert artifact_files(settings) == []
    assert production_id(settings) is None
    usurper = rows(settings, TrainingRun, TrainingRun.run_id == "run_usurper")[0]
    assert usurper.status == RunStatus.RUNNING  # the new holder is untouched


def test_keep_versions_archives_old_versions(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(
        keep_versions=3, promotion={"min_improvement_pct": 0, "significance": {"test": "none"}})})
    # the plain point-estimate rule at 0 %: a tie promotes, every run makes a new production
    seed_rows(settings, 200)
    for i in range(1, 7):
        result = run(settings)
        assert result["status"] == "retrained" and result["version_id"] == f"ctr-v{i}", result
    status = {v.version_id: v.status for v in rows(settings, ModelVersion)}
    assert status == {
        "ctr-v1": VersionStatus.ARCHIVED, "ctr-v2": VersionStatus.ARCHIVED, "ctr-v3": VersionStatus.ARCHIVED,
        "ctr-v4": VersionStatus.TRAINED, "ctr-v5": VersionStatus.TRAINED, "ctr-v6": VersionStatus.ACTIVE,
    }
    assert production_id(settings) == "ctr-v6"
    with session_scope(settings.database_url) as s:
        assert registry.rollback(s, "ctr").version_id == "ctr-v5"  # the previous production is still there


def test_a_request_is_linked_and_closed(settings: Settings) -> None:
    seed_rows(settings, 300)
    with session_scope(settings.database_url) as s:
        req = RetrainRequest(model="ctr", trigger=Trigger.MANUAL, requested_by="alice", status=RequestStatus.PENDING)
        s.add(req)
        s.flush()
        request_id = req.id
    result = run(settings, trigger=Trigger.MANUAL, request_id=request_id)
    assert result["status"] == "retrained"
    [req] = rows(settings, RetrainRequest)
    assert req.status == RequestStatus.COMPLETED and req.run_id == result["run_id"]
    assert req.started_at is not None and req.completed_at is not None
    [r] = rows(settings, TrainingRun)
    assert r.request_id == request_id
    # the same request delivered again: already handled
    again = run(settings, trigger=Trigger.MANUAL, request_id=request_id)
    assert again["status"] == "skipped" and "already handled" in again["message"]
    assert len(rows(settings, TrainingRun)) == 1


def database_gone() -> OperationalError:
    return OperationalError("SELECT ...", {}, Exception("server closed the connection unexpectedly"))


def test_a_transient_database_error_propagates_and_the_retry_takes_over(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_rows(settings, 300)
    real_load = dataset.load

    def load_while_the_database_is_away(*args: Any, **kwargs: Any) -> Any:
        raise database_gone()

    monkeypatch.setattr(dataset, "load", load_while_the_database_is_away)
    with pytest.raises(OperationalError):  # to Celery's autoretry, not turned into a result
        run(settings, task_id="task-7", attempt=0)
    [first] = rows(settings, TrainingRun)
    assert first.status == RunStatus.RUNNING  # nothing could be written; its lease still runs
    [req] = rows(settings, RetrainRequest)
    assert req.status == RequestStatus.PROCESSING

    monkeypatch.setattr(dataset, "load", real_load)
    retried = run(settings, request_id=req.id, task_id="task-7", attempt=1)  # Celery's retry: same id, next attempt
    assert retried["status"] == "retrained", retried
    first = rows(settings, TrainingRun, TrainingRun.run_id == first.run_id)[0]
    assert first.status == RunStatus.FAILED and "superseded by attempt 1" in first.error_message
    [req] = rows(settings, RetrainRequest)
    assert req.status == RequestStatus.COMPLETED and req.run_id == retried["run_id"]
    assert len(rows(settings, ModelVersion)) == 1


def test_a_transient_error_at_commit_leaves_no_file_and_no_row(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_rows(settings, 300)

    def swap_while_the_database_is_away(*args: Any, **kwargs: Any) -> Any:
        raise database_gone()

    monkeypatch.setattr(registry, "swap_production", swap_while_the_database_is_away)
    with pytest.raises(OperationalError):
        run(settings, task_id="task-8")
    assert artifact_files(settings) == []
    assert rows(settings, ModelVersion) == [] and rows(settings, ModelEvaluation) == []


def test_metrics_that_are_not_finite_are_stored_as_null_with_a_reason(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_rows(settings, 300)
    assert run(settings)["status"] == "retrained"
    family = type(registry.load_estimator(rows(settings, ModelVersion)[0]))
    real_evaluate = family.evaluate

    def evaluate_to_infinity(self: Any, y_true: Any, y_pred: Any) -> Any:
        metrics = real_evaluate(self, y_true, y_pred)
        return type(metrics)(metrics.values | {"mae": math.inf, "rmse": math.nan}, metrics.primary,
                             metrics.higher_is_better)

    monkeypatch.setattr(family, "evaluate", evaluate_to_infinity)
    result = run(settings)
    assert result["status"] == "kept", result
    assert "not a finite number" in result["reason"]
    assert result["metrics"]["test_mae"] is None and result["metrics"]["test_rmse"] is None
    latest = rows(settings, TrainingRun, TrainingRun.run_id == result["run_id"])[0]
    assert latest.metrics["mae"] is None and latest.metrics["r2"] is not None
    evaluations = rows(settings, ModelEvaluation, ModelEvaluation.run_id == result["run_id"])
    assert {e.role: e.overall_score for e in evaluations} == {"candidate": None, "champion": None}
    assert production_id(settings) == "ctr-v1"


def _request(settings: Settings, **fields: Any) -> int:
    with session_scope(settings.database_url) as s:
        req = RetrainRequest(model="ctr", trigger=Trigger.ACCURACY, requested_by="check_accuracy",
                             status=RequestStatus.PENDING, **fields)
        s.add(req)
        s.flush()
        return req.id


def test_a_request_with_train_since_trains_on_the_rows_from_then_on(settings: Settings,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The accuracy check placed a change (services/since_change.py): the run reads its window as usual
    and fits on the rows from that moment on; too few valid rows there and it uses the whole window."""
    caplog.set_level(logging.INFO)
    seed_rows(settings, 600)
    with session_scope(settings.database_url) as s:
        times = sorted(s.scalars(sa.select(Observation.event_time)))
    since = times[350]
    result = run(settings, trigger=Trigger.ACCURACY, request_id=_request(settings, train_since=since))
    assert result["status"] == "retrained"
    [r] = rows(settings, TrainingRun)
    assert r.train_since == since and r.dataset_size == 250 == r.train_size + r.holdout_size
    assert "training on the 250 rows since" in caplog.text

    too_late = times[-20]  # 20 rows: fewer than training.min_samples, so the newest max_rows instead
    result = run(settings, trigger=Trigger.MANUAL, request_id=_request(settings, train_since=too_late))
    latest = rows(settings, TrainingRun, TrainingRun.run_id == result["run_id"])[0]
    assert latest.dataset_size == 600 and latest.train_since == too_late
    assert "only 20 valid rows since" in caplog.text
