"""retrainer.services.probation on SQLite and PostgreSQL: real versions (checksummed artifacts), real
prediction records and outcomes, the real registry. A promoted version worse than the one it replaced is
rolled back by the check itself; one that is not keeps production; no evidence, no rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ModelConfig, Settings
from retrainer.db.records import LedgerEntry, ModelVersion, SystemEvent
from retrainer.services import notifications, predictions, probation, registry, triggers
from tests.services.builders import corrupt, make_version
from tests.support import model_config

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # ctr-v2 takes production
NOW = T0 + timedelta(days=2)


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def config(**rule: Any) -> ModelConfig:
    return ModelConfig.model_validate(model_config(promotion={"probation": rule}))


def serve(session: Session, version_id: str, losses: np.ndarray, start: datetime, end: datetime,
          lag: timedelta = timedelta(minutes=10)) -> None:
    """Predictions of `version_id` spread over [start, end), each outcome `lag` later, off by `losses`."""
    step = (end - start) / len(losses)
    for i, loss in enumerate(losses):
        at = start + i * step
        pid = f"{version_id}-{start.isoformat()}-{i}"
        predictions.log_prediction(session, "ctr", {"x": float(i)}, 0.05, version_id=version_id, prediction_id=pid, at=at)
        session.flush()
        predictions.record_outcome(session, pid, 0.05 + float(loss), at=at + lag)
    session.flush()


def losses(n: int, scale: float, seed: int) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(0.0, 0.01 * scale, n)).round(6)


def promoted(session: Session, settings: Settings, baseline: int = 400, seed: int = 1) -> None:
    """ctr-v1 served `baseline` outcomes in the days before T0, when ctr-v2 replaced it (on probation)."""
    for n in (1, 2):
        make_version(session, settings, n)
    with clock.frozen(T0 - timedelta(days=10)):
        registry.promote(session, "ctr-v1", actor="test")
    if baseline:
        serve(session, "ctr-v1", losses(baseline, 1.0, seed), T0 - timedelta(days=6), T0 - timedelta(hours=1))
    with clock.frozen(T0):
        registry.promote(session, "ctr-v2", expected_id="ctr-v1", actor="test")
    assert session.get(ModelVersion, "ctr-v2").probation == "watching"


def events(session: Session, kind: str) -> list[SystemEvent]:
    return list(session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == kind).order_by(SystemEvent.id)))


def test_a_worse_version_is_rolled_back_with_its_reason_in_the_ledger(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(200, 2.0, 2), T0 + timedelta(minutes=1), T0 + timedelta(days=1))

    result = probation.check(session, "ctr", config())

    assert result["status"] == "rolled_back", result
    assert result["rolled_back_to"] == "ctr-v1" and result["previous_version_id"] == "ctr-v1"
    verdict = result["verdict"]
    assert verdict["status"] == "worse" and verdict["n_new"] == 200 and verdict["n_prev"] == 400
    assert verdict["mean_new"] == pytest.approx(2 * verdict["mean_prev"], rel=0.2)
    assert registry.production(session, "ctr").version_id == "ctr-v1"
    bad = session.get(ModelVersion, "ctr-v2")
    assert bad.probation == "rolled_back" and clock.as_utc(bad.probation_ended_at) == NOW
    entry = session.scalars(sa.select(LedgerEntry).order_by(LedgerEntry.id.desc())).first()
    assert (entry.action, entry.actor, entry.version_id, entry.from_version_id) == (
        "auto_rollback", "probation", "ctr-v1", "ctr-v2")
    assert entry.reason == verdict["reason"] and "worse beyond the 5 % tolerance" in entry.reason
    (alert,) = events(session, "alert")
    assert alert.id == result["alert_event_id"] and alert.payload["action"] == "auto_rollback"
    assert alert.payload["restored"] == "ctr-v1" and alert.payload["version_id"] == "ctr-v2"
    (check,) = events(session, "check")
    assert check.payload["check"] == "probation" and check.payload["status"] == "rolled_back"
    assert check.message.startswith("ctr: probation: ctr-v2 rolled back to ctr-v1 automatically")
    text, blocks = notifications.alert_message(session, alert.id)  # what the task sends to Slack
    assert text == ":rewind: ctr: ctr-v2 rolled back to ctr-v1 automatically"
    assert blocks[0]["type"] == "header" and verdict["reason"] in blocks[-1]["elements"][0]["text"]
    # the restored version's own probation ended when ctr-v2 replaced it (superseded): the known-good
    # fallback is not on trial again, and nothing rolls back twice
    again = probation.check(session, "ctr", config())
    assert again["status"] == "not_watching" and "is not on probation" in again["message"]
    assert registry.production(session, "ctr").version_id == "ctr-v1"


def test_an_equal_version_keeps_production_and_is_still_watched(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(300, 1.0, 3), T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    result = probation.check(session, "ctr", config())
    assert result["status"] == "watching", result
    assert result["verdict"]["status"] == "continue" and result["outcomes"] == 300
    assert "not shown worse" in result["message"]
    assert registry.production(session, "ctr").version_id == "ctr-v2"
    assert session.get(ModelVersion, "ctr-v2").probation == "watching"
    assert not events(session, "alert")
    assert events(session, "check")[-1].payload["status"] == "watching"


def test_probation_passes_after_max_outcomes_or_max_days(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(120, 1.0, 4), T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    assert probation.check(session, "ctr", config(max_outcomes=200))["status"] == "watching"
    result = probation.check(session, "ctr", config(max_outcomes=100))
    assert result["status"] == "passed" and result["outcomes"] == 100, result
    assert result["message"].startswith("ctr-v2 passed probation after 100 outcomes")
    version = session.get(ModelVersion, "ctr-v2")
    assert version.probation == "passed" and clock.as_utc(version.probation_ended_at) == NOW
    assert events(session, "probation")[-1].payload["outcome"] == "passed"

    version.probation = "watching"  # the same record, judged after its days ran out instead
    with clock.frozen(T0 + timedelta(days=15)):
        result = probation.check(session, "ctr", config())
    assert result["status"] == "passed" and "after 14 days" in result["message"]


def test_worse_is_still_rolled_back_on_the_last_look_of_a_probation(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(200, 2.0, 5), T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    with clock.frozen(T0 + timedelta(days=15)):  # beat was down for two weeks: the evidence still counts
        assert probation.check(session, "ctr", config())["status"] == "rolled_back"


def test_too_few_outcomes_yet_is_no_verdict(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(20, 5.0, 6), T0 + timedelta(minutes=1), T0 + timedelta(hours=3))
    result = probation.check(session, "ctr", config())
    assert result["status"] == "insufficient_data", result
    assert result["message"] == "ctr-v2 on probation: 20 of the 30 outcomes a verdict needs"
    assert session.get(ModelVersion, "ctr-v2").probation == "watching"
    assert registry.production(session, "ctr").version_id == "ctr-v2"


def test_too_few_outcomes_in_all_of_max_days_ends_unjudged(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(20, 5.0, 13), T0 + timedelta(minutes=1), T0 + timedelta(hours=3))
    with clock.frozen(T0 + timedelta(days=15)):
        result = probation.check(session, "ctr", config())
    assert result["status"] == "ended" and "20 outcome(s) of ctr-v2 in 14 days, fewer than 30" in result["message"]
    assert session.get(ModelVersion, "ctr-v2").probation is None  # not "passed": it was never judged


def test_the_baseline_is_what_the_previous_version_knew_before_the_promotion(settings: Settings,
                                                                            session: Session) -> None:
    promoted(session, settings, baseline=100)
    # ctr-v1's predictions of the last hour before T0, completed after it: not in the fixed record
    serve(session, "ctr-v1", losses(50, 1.0, 7), T0 - timedelta(minutes=50), T0 - timedelta(minutes=5),
          lag=timedelta(hours=2))
    # and ctr-v1 outcomes older than baseline_days: left out too
    serve(session, "ctr-v1", losses(40, 1.0, 8), T0 - timedelta(days=9), T0 - timedelta(days=8))
    serve(session, "ctr-v2", losses(60, 1.0, 9), T0 + timedelta(minutes=1), T0 + timedelta(hours=5))
    result = probation.check(session, "ctr", config())
    assert result["baseline_outcomes"] == 100 and result["outcomes"] == 60


@pytest.mark.parametrize("case", ["no_baseline", "first_version", "disabled"])
def test_nothing_to_judge_against_ends_the_probation_without_a_rollback(settings: Settings, session: Session,
                                                                         case: str) -> None:
    if case == "first_version":  # not put on probation by the registry; one marked by hand ends at once
        make_version(session, settings, 1)
        with clock.frozen(T0):
            registry.promote(session, "ctr-v1", actor="test")
        assert session.get(ModelVersion, "ctr-v1").probation is None
        session.get(ModelVersion, "ctr-v1").probation = "watching"
        version_id, why = "ctr-v1", "ctr-v1 replaced no version: nothing to judge it against"
    else:
        promoted(session, settings, baseline=10 if case == "no_baseline" else 400)
        version_id = "ctr-v2"
        why = ("ctr-v1 has 10 outcome(s) in the 7 days before ctr-v2 took production, fewer than 30: no record to "
               "judge it against") if case == "no_baseline" else "probation is disabled"
    serve(session, version_id, losses(100, 5.0, 10), T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    result = probation.check(session, "ctr", config(enabled=case != "disabled"))
    assert result["status"] == "ended", result
    assert why in result["message"]
    version = session.get(ModelVersion, version_id)
    assert version.probation is None and clock.as_utc(version.probation_ended_at) == NOW
    assert registry.production(session, "ctr").version_id == version_id
    assert events(session, "probation")[-1].payload["outcome"] == "ended"
    assert events(session, "check")[-1].payload["status"] == "ended"


def test_a_rollback_that_cannot_load_the_previous_version_alerts_and_keeps_watching(settings: Settings,
                                                                                   session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(200, 2.0, 11), T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    corrupt(session.get(ModelVersion, "ctr-v1").artifact_uri)
    result = probation.check(session, "ctr", config())
    assert result["status"] == "rollback_failed", result
    assert "could not be rolled back" in result["message"] and "checksum" in result["message"]
    assert registry.production(session, "ctr").version_id == "ctr-v2"
    assert session.get(ModelVersion, "ctr-v2").probation == "watching"
    (alert,) = events(session, "alert")
    assert alert.id == result["alert_event_id"] and alert.payload["action"] == "auto_rollback_failed"
    assert not session.scalars(sa.select(LedgerEntry).where(LedgerEntry.action == "auto_rollback")).all()
    assert events(session, "check")[-1].payload["status"] == "rollback_failed"


def test_no_production_and_not_on_probation_are_recorded_no_ops(settings: Settings, session: Session) -> None:
    assert probation.check(session, "ctr", config())["status"] == "no_production"
    promoted(session, settings)
    session.get(ModelVersion, "ctr-v2").probation = "passed"
    result = probation.check(session, "ctr", config())
    assert result["status"] == "not_watching" and result["message"] == "ctr-v2 is not on probation (probation passed)"
    assert [e.payload["status"] for e in events(session, "check")] == ["no_production", "not_watching"]


def test_the_checks_table_runs_it_as_retrainer_check_does(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    serve(session, "ctr-v2", losses(200, 2.0, 12), T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    check = triggers.CHECKS["probation"]
    assert check.trigger is None  # it never asks for a retrain: it acts on its own
    assert check.decide(session, "ctr", settings.model("ctr"))["status"] == "rolled_back"


# --- the paired comparison: the previous artifact scores the outcomes the new version served ----------

def serve_rows(session: Session, version_id: str, predicted: np.ndarray, rows: list, start: datetime) -> None:
    """`rows` (synthetic, with their features and labels) served by `version_id` as `predicted`."""
    for i, (row, value) in enumerate(zip(rows, predicted, strict=True)):
        at = start + timedelta(minutes=5 * i)
        pid = f"{version_id}-{start.isoformat()}-r{i}"
        predictions.log_prediction(session, "ctr", row.features, float(value), version_id=version_id,
                                   prediction_id=pid, at=at)
        session.flush()
        predictions.record_outcome(session, pid, row.label, at=at + timedelta(minutes=10))
    session.flush()


def two_real_versions(session: Session, settings: Settings) -> tuple[Any, Any]:
    from retrainer.demo import synthetic
    from tests.services.builders import START, fit

    history = synthetic.generate(600, START, START + timedelta(days=20), seed=21)
    v1, v2 = fit(history), fit(history[::-1][:400])  # two good models of the same world
    make_version(session, settings, 1, estimator=v1)
    make_version(session, settings, 2, estimator=v2)
    with clock.frozen(T0 - timedelta(days=10)):
        registry.promote(session, "ctr-v1", actor="test")
    before = synthetic.generate(300, T0 - timedelta(days=6), T0 - timedelta(hours=1), seed=22)
    serve_rows(session, "ctr-v1", v1.predict(pd.DataFrame([r.features for r in before])).value, before,
               T0 - timedelta(days=6))
    with clock.frozen(T0):
        registry.promote(session, "ctr-v2", expected_id="ctr-v1", actor="test")
    return v1, v2


def test_a_drift_at_the_promotion_is_not_blamed_on_the_new_version(settings: Settings, session: Session) -> None:
    from retrainer.demo import synthetic

    _, v2 = two_real_versions(session, settings)
    # the world changes as ctr-v2 takes production: every model is worse now, ctr-v1 as much as ctr-v2
    after = synthetic.generate(300, T0 + timedelta(minutes=1), T0 + timedelta(days=1), seed=23, drift_from=T0)
    serve_rows(session, "ctr-v2", v2.predict(pd.DataFrame([r.features for r in after])).value, after, T0)
    result = probation.check(session, "ctr", config())
    assert result["comparison"] == "paired" and result["status"] == "watching", result
    verdict = result["verdict"]
    assert verdict["n_new"] == verdict["n_prev"] == 300 and "on the same 300 outcomes" in verdict["reason"]
    # against ctr-v1's own record from before the change, ctr-v2 would have looked far worse
    assert verdict["mean_new"] > 3 * probation.baseline(session, "ctr", "ctr-v1", probation.PredictionKind.REGRESSION,
                                                        T0, 7).mean
    assert registry.production(session, "ctr").version_id == "ctr-v2"


def test_a_truly_worse_version_is_caught_on_the_same_outcomes(settings: Settings, session: Session) -> None:
    from retrainer.demo import synthetic

    two_real_versions(session, settings)
    after = synthetic.generate(300, T0 + timedelta(minutes=1), T0 + timedelta(days=1), seed=24)
    served = np.array([r.label for r in after]) * 1.6  # ctr-v2 serves predictions 60 % too high
    serve_rows(session, "ctr-v2", served, after, T0)
    result = probation.check(session, "ctr", config())
    assert result["comparison"] == "paired" and result["status"] == "rolled_back", result
    assert registry.production(session, "ctr").version_id == "ctr-v1"


def test_without_a_usable_previous_artifact_the_record_stands_in(settings: Settings, session: Session) -> None:
    promoted(session, settings)
    corrupt(session.get(ModelVersion, "ctr-v1").artifact_uri)
    serve(session, "ctr-v2", losses(200, 1.0, 5), T0 + timedelta(minutes=1), T0 + timedelta(days=1))
    result = probation.check(session, "ctr", config())
    assert result["comparison"] == "record" and result["status"] == "watching", result
