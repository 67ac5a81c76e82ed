"""The timing family end to end: training.retrain_model on a real worker (Redis broker, PostgreSQL)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from retrainer.db import session_scope
from retrainer.db.records import ModelEvaluation, ModelVersion, Observation, SystemEvent
from retrainer.tasks.enqueue import send_retrain
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import rows

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]

METRICS = ("mae_hours", "rmse_hours", "within_6h_accuracy", "within_12h_accuracy", "within_24h_accuracy",
           "overall_score")


def seed_events(url: str, days: float = 75, seed: int = 11) -> int:
    """A stream of events whose spacing follows the hour of day (long waits from an evening event,
    short ones by day); each row's label is the hours until the next event. Time alone, no features."""
    rng = np.random.default_rng(seed)
    end = datetime.now(UTC) - timedelta(hours=12)
    at, values = end - timedelta(days=days), []
    while at < end:
        hour = at.hour + at.minute / 60
        wait = max(0.5, 8 + 6 * math.cos(2 * math.pi * (hour - 20) / 24) + rng.normal(0, 1.5))
        values.append({"model": "timing", "event_id": f"timing-{len(values)}", "features": {}, "label": wait,
                       "event_time": at, "source": "seed"})
        at += timedelta(hours=wait)
    with session_scope(url) as session:
        session.execute(sa.insert(Observation), values)
    return len(values)


def test_timing_retrains_on_a_worker_and_scores_its_champion_on_the_same_holdout(
        tmp_path: Path, pg_url: str, redis_url: str, start_worker, make_celery) -> None:
    # model_config merges dicts into its ctr defaults, so the timing params replace them whole
    timing = model_config(family="timing") | {"params": {"uncertainty_samples": 100}}
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={"timing": timing})
    seeded = seed_events(pg_url)
    start_worker(settings, queues="training,notifications", concurrency=1)
    app = make_celery(settings)

    first = send_retrain("timing", settings=settings, via=app).get(timeout=180)
    assert first["status"] == "retrained", first
    assert first["version_id"] == first["production_version"] == "timing-v1"
    assert first["samples"] + first["holdout"]["rows"] == seeded
    metrics = first["metrics"]
    assert {f"test_{m}" for m in METRICS} <= set(metrics)
    assert metrics["test_mae_hours"] < 2.0  # the rhythm is learned: a constant is off by about 4 h
    assert metrics["test_within_6h_accuracy"] > 0.95

    (version,) = rows(pg_url, ModelVersion, ModelVersion.model == "timing")
    assert version.algorithm == "prophet" and "prophet" in version.library_versions
    artifact = json.loads(Path(version.artifact_uri).read_text())  # Prophet's JSON, with ours around it
    assert artifact["format"] == "retrainer.timing/1" and artifact["features"] == []

    # Same rows again: the candidate is the same fit, and the champion, loaded from its JSON, is
    # scored on the same holdout rows beside it, to the same figures.
    second = send_retrain("timing", settings=settings, via=app).get(timeout=180)
    assert second["status"] == "kept", second
    assert second["champion_version"] == second["production_version"] == "timing-v1"
    assert second["holdout"] == first["holdout"]
    assert {f"test_{m}" for m in METRICS} <= set(second["old_metrics"])
    assert second["improvement"]["primary"] == "overall_score"
    assert second["improvement"]["percentage"] == pytest.approx(0.0, abs=1e-9)

    evaluations = {e.role: e for e in rows(pg_url, ModelEvaluation, ModelEvaluation.run_id == second["run_id"])}
    assert set(evaluations) == {"candidate", "champion"}
    candidate, champion = evaluations["candidate"], evaluations["champion"]
    assert champion.version_id == "timing-v1" and candidate.version_id == second["version_id"]
    assert candidate.holdout_hash == champion.holdout_hash == first["holdout"]["hash"]
    assert candidate.primary_metric == "overall_score"
    assert champion.metrics == pytest.approx(candidate.metrics, rel=1e-9)
    assert candidate.champion_score == pytest.approx(champion.overall_score)
    lower, upper = candidate.predictions_sample["rows"][0]["interval"]
    assert 0 <= lower <= candidate.predictions_sample["rows"][0]["predicted"] <= upper

    # both decisions are published after commit (no webhook: logged), and the worker is idle again
    def published() -> set[str]:
        notes = rows(pg_url, SystemEvent, SystemEvent.kind == "notification")
        return {n.payload["run_id"] for n in notes if n.payload["delivery"] == "logged"}

    assert wait_until(lambda: len(published()) == 2, timeout=60, what="two notifications")
    assert published() == {first["run_id"], second["run_id"]}
