"""retrainer.services.since_change through the accuracy check: a breach is placed in time on the
production version's own live record, and the retrain it asks for trains from then on, or waits for
enough rows after it; without a significant change the retrain is an ordinary one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import AccuracyCheck, ModelConfig
from retrainer.db.records import ModelVersion
from retrainer.services import accuracy, predictions, since_change

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def served(session: Session, noises: list[tuple[int, float]], seed: int = 0) -> list[datetime]:
    """Outcomes of ctr-v1, a minute apart and ending now, in blocks of (count, noise); their times."""
    _production(session)
    rng = np.random.default_rng(seed)
    total = sum(n for n, _ in noises)
    times, i = [], 0
    for n, noise in noises:
        for _ in range(n):
            at = NOW - timedelta(minutes=total - i)
            actual = float(rng.uniform(0.01, 0.08))
            pid = f"p{i}"
            predictions.log_prediction(session, "ctr", {"x": float(i)}, actual + float(rng.normal(0, noise)),
                                       version_id="ctr-v1", prediction_id=pid, at=at)
            session.flush()
            predictions.record_outcome(session, pid, actual, at=at)
            times.append(at)
            i += 1
    session.flush()
    return times


def _production(session: Session) -> None:
    if session.get(ModelVersion, "ctr-v1") is None:
        session.add(ModelVersion(
            version_id="ctr-v1", model="ctr", number=1, family="ctr", algorithm="xgboost", is_production=True,
            promoted_at=NOW - timedelta(days=2), num_training_samples=1, training_duration_seconds=1.0,
            hyperparameters={}, metrics={}, artifact_uri="/unused", artifact_sha256="0" * 64, library_versions={}))
        session.flush()


CHECK = AccuracyCheck(lookback_days=1, min_samples=50, cooldown_hours=0)


def test_a_breach_after_a_change_waits_for_rows_then_trains_from_the_change(session: Session) -> None:
    times = served(session, [(400, 0.001), (500, 0.06)])  # MAE ~0.0008, then ~0.048: a change at outcome 400
    waiting = accuracy.check(session, "ctr", CHECK, "ctr", rows_needed=600)
    assert waiting["status"] == "waiting_for_data"
    change = waiting["change"]
    placed = datetime.fromisoformat(change["at"])
    assert abs((placed - times[400]).total_seconds()) <= 5 * 60  # within 5 outcomes of the true change
    assert change["rows_needed"] == 600 and 495 <= change["rows_since"] <= 505
    assert change["p_value"] < 0.05 and change["loss_after"] > 10 * change["loss_before"]
    assert "waiting for 600 labelled rows" in waiting["message"]
    assert "train_since" not in waiting

    ready = accuracy.check(session, "ctr", CHECK, "ctr", rows_needed=400)
    assert ready["status"] == "retrain_needed"
    assert ready["train_since"] == change["at"]
    assert f"training on the {change['rows_since']} rows since" in ready["message"]


def test_without_a_change_the_retrain_is_an_ordinary_one(session: Session) -> None:
    served(session, [(600, 0.06)])  # bad from the start: nothing to place
    result = accuracy.check(session, "ctr", CHECK, "ctr", rows_needed=400)
    assert result["status"] == "retrain_needed"
    assert "change" not in result and "train_since" not in result


def test_turned_off_or_a_source_query_plans_no_window(session: Session) -> None:
    served(session, [(400, 0.001), (500, 0.06)])
    assert accuracy.check(session, "ctr", CHECK, "ctr")["status"] == "retrain_needed"  # rows_needed None
    assert since_change.rows_needed(ModelConfig()) == 1000  # a 200-row holdout at a 20 % test fraction
    assert since_change.rows_needed(ModelConfig(accuracy={"train_after_change": False})) is None
    assert since_change.rows_needed(ModelConfig(training={"source": {"query": "SELECT 1", "label": "y", "time": "t"}})) is None
    small = ModelConfig(promotion={"min_holdout_rows": 5}, training={"min_samples": 80})
    assert since_change.rows_needed(small) == 80
