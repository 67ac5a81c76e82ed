"""retrainer.services.run_failures: three failed runs of a model in seven days raise one alert a day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.db.records import RunStatus, SystemEvent, TrainingRun, Trigger
from retrainer.services import run_failures

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def failed(session: Session, run_id: str, at: datetime, model: str = "ctr", status: RunStatus = RunStatus.FAILED) -> None:
    session.add(TrainingRun(run_id=run_id, model=model, trigger=Trigger.MANUAL, status=status, started_at=at,
                            outcome="error", error_message=f"ValueError: {run_id} broke\nsecond line"))
    session.flush()


def alerts(session: Session) -> list[SystemEvent]:
    return list(session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "alert").order_by(SystemEvent.id)))


def test_third_failure_in_a_week_alerts_once_a_day(session: Session) -> None:
    failed(session, "run_old", NOW - timedelta(days=8))  # outside the week
    failed(session, "run_1", NOW - timedelta(days=3))
    failed(session, "run_roas", NOW - timedelta(days=1), model="roas")  # another model's
    failed(session, "run_ok", NOW - timedelta(days=1), status=RunStatus.COMPLETED)
    failed(session, "run_2", NOW - timedelta(hours=5))
    with clock.frozen(NOW):
        assert run_failures.alert_if_repeated(session, "ctr") is None  # two in the week
        failed(session, "run_3", NOW - timedelta(minutes=1))
        event = run_failures.alert_if_repeated(session, "ctr")
    assert event is not None and event.id is not None
    assert event.message == ("ctr: 3 failed retrains in the last 7 days; latest run_3: ValueError: run_3 broke "
                             "(`retrainer logs run_3`)")
    assert event.payload["failed_runs"] == ["run_3", "run_2", "run_1"]
    with clock.frozen(NOW + timedelta(hours=2)):
        failed(session, "run_4", NOW + timedelta(hours=1))
        assert run_failures.alert_if_repeated(session, "ctr") is None  # alerted today already
    with clock.frozen(NOW + timedelta(days=1, minutes=1)):
        failed(session, "run_5", NOW + timedelta(days=1))
        again = run_failures.alert_if_repeated(session, "ctr")
    assert again is not None and again.payload["failed_runs"][0] == "run_5"
    assert [e.id for e in alerts(session)] == [event.id, again.id]


def test_another_alert_does_not_silence_this_one(session: Session) -> None:
    session.add(SystemEvent(model="ctr", kind="alert", message="ctr: still degraded", payload={}, created_at=NOW))
    for i in range(3):
        failed(session, f"run_{i}", NOW - timedelta(hours=i + 1))
    with clock.frozen(NOW):
        assert run_failures.alert_if_repeated(session, "ctr") is not None
