"""retrainer.services.ledger: the append-only history of each model's production pointer."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from retrainer.config import Settings
from retrainer.services import ledger
from tests.services.builders import make_version


def test_history_is_newest_first_per_model_and_bounded(settings: Settings, session: Session) -> None:
    for n in (1, 2, 3):
        make_version(session, settings, n)
    make_version(session, settings, 1, model="roas")
    ledger.record(session, "ctr", "ctr-v1", None, "promote", "policy", "first model", run_id="run_a")
    ledger.record(session, "ctr", "ctr-v2", "ctr-v1", "promote", "alice", "")
    ledger.record(session, "roas", "roas-v1", None, "promote", "policy", "first model")
    ledger.record(session, "ctr", "ctr-v1", "ctr-v2", "auto_rollback", "probation", "worse live")
    session.flush()

    assert [(e.action, e.version_id) for e in ledger.history(session, "ctr")] == [
        ("auto_rollback", "ctr-v1"), ("promote", "ctr-v2"), ("promote", "ctr-v1")]
    assert [e.version_id for e in ledger.history(session, "ctr", limit=1)] == ["ctr-v1"]
    assert ledger.held_production(session, "ctr") == {"ctr-v1", "ctr-v2"}
    assert ledger.held_production(session, "churn") == set()
    assert ledger.for_run(session, "run_a").reason == "first model"
    assert ledger.for_run(session, "run_b") is None
    shown = ledger.entry_dict(ledger.history(session, "ctr")[0])
    assert {k: shown[k] for k in ("from_version_id", "version_id", "action", "actor", "reason", "run_id")} == {
        "from_version_id": "ctr-v2", "version_id": "ctr-v1", "action": "auto_rollback", "actor": "probation",
        "reason": "worse live", "run_id": None}
    assert shown["created_at"]


def test_unknown_action_is_refused(settings: Settings, session: Session) -> None:
    make_version(session, settings, 1)
    with pytest.raises(ValueError, match="ledger action 'demote': use one of promote, rollback, auto_rollback"):
        ledger.record(session, "ctr", "ctr-v1", None, "demote", "cli", "")


def _evaluate(session: Session, version: str, run_id: str, role: str, digest: str, mae: float, r2: float,
              test: dict | None = None) -> None:
    from datetime import UTC, datetime

    from retrainer.db.records import ModelEvaluation

    now = datetime.now(UTC)
    session.add(ModelEvaluation(version_id=version, run_id=run_id, role=role, holdout_start=now, holdout_end=now,
                                holdout_rows=300, holdout_hash=digest, metrics={"mae": mae, "r2": r2},
                                primary_metric="mae", predictions_sample={}, test=test))
    session.flush()


def test_compare_finds_the_run_that_scored_both_and_refuses_other_holdouts(settings: Settings, session: Session) -> None:
    from datetime import UTC, datetime

    from retrainer.db.records import RunStatus, TrainingRun, Trigger
    from retrainer.services import reports

    for n in (1, 2, 3):
        make_version(session, settings, n)
    for run in ("run_1", "run_2", "run_3"):
        session.add(TrainingRun(run_id=run, model="ctr", trigger=Trigger.MANUAL, status=RunStatus.COMPLETED,
                                started_at=datetime.now(UTC)))
    session.flush()
    test = {"method": "paired_bootstrap", "metric": "mae", "point_pct": 12.0, "lower_pct": 4.0, "upper_pct": 19.0,
            "confidence": 0.95, "resamples": 1000, "rows": 300, "p_value": 0.002}
    _evaluate(session, "ctr-v1", "run_1", "candidate", "a" * 64, 0.020, 0.5)
    _evaluate(session, "ctr-v2", "run_2", "candidate", "b" * 64, 0.0176, 0.6, test)
    _evaluate(session, "ctr-v1", "run_2", "champion", "b" * 64, 0.020, 0.5)
    _evaluate(session, "ctr-v3", "run_3", "candidate", "c" * 64, 0.018, 0.55)

    shown = reports.compare(session, "ctr-v1", "ctr-v2")
    assert shown["same_run"] is True and shown["holdout"]["hash"] == "b" * 64
    assert shown["metrics"] == {"mae": {"a": 0.020, "b": 0.0176, "better": "ctr-v2"},  # lower is better
                                "r2": {"a": 0.5, "b": 0.6, "better": "ctr-v2"}}  # higher is better
    assert shown["test"] == test | {"candidate": "ctr-v2", "reference": "ctr-v1"}
    with pytest.raises(reports.NotComparable) as info:
        reports.compare(session, "ctr-v2", "ctr-v3")
    assert str(info.value) == ("ctr-v2 and ctr-v3 were scored on different holdouts (bbbbbbbbbbbb vs cccccccccccc): "
                               "not comparable")
    make_version(session, settings, 1, model="roas")
    with pytest.raises(reports.NotComparable, match="a version of 'ctr' and roas-v1 of 'roas'"):
        reports.compare(session, "ctr-v1", "roas-v1")
