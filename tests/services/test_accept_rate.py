"""The hourly monitor's accept-rate check (reference 002) on SQLite and PostgreSQL: it fires on data
made to cross its threshold and stays silent just below it; too few cycles or none is a recorded
no-decision; only the most recent cycles count; a retrain it started suppresses the next (cooldown)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import AcceptRateCheck, Settings
from retrainer.db.records import Feedback, SystemEvent, TrainingRun, Trigger
from retrainer.services import accept_rate, events
from retrainer.services.errors import InvalidEvent

CFG = AcceptRateCheck()  # the reference's defaults: 0.6 over the last 5 cycles, at least 3


def cycles(session: Session, rates: list[float], model: str = "ctr", per_cycle: int = 100) -> None:
    """One cycle per rate, oldest first, an hour apart; each as two events (accepts, then rejects)."""
    start = clock.now() - timedelta(hours=len(rates) + 1)
    for i, rate in enumerate(rates):
        at = start + timedelta(hours=i)
        accepted = round(rate * per_cycle)
        session.add_all([Feedback(model=model, cycle_id=f"c{i}", accepted=accepted, rejected=0, recorded_at=at),
                         Feedback(model=model, cycle_id=f"c{i}", accepted=0, rejected=per_cycle - accepted,
                                  recorded_at=at + timedelta(minutes=1))])
    session.flush()


def recorded(session: Session) -> list[str]:
    return list(session.scalars(sa.select(SystemEvent.payload["status"].as_string())
                                .where(SystemEvent.kind == "check").order_by(SystemEvent.id)))


@pytest.mark.parametrize(("rates", "status"), [
    ([0.58, 0.58, 0.58, 0.58, 0.58], "retrain_needed"),  # just below 0.6
    ([0.60, 0.60, 0.60, 0.60, 0.60], "no_retrain_needed"),  # at the threshold: acceptable
    ([0.62, 0.62, 0.62, 0.62, 0.62], "no_retrain_needed"),
    ([0.2, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9], "no_retrain_needed"),  # two bad old cycles fall outside the last 5
    ([0.9, 0.9, 0.2, 0.2, 0.2], "retrain_needed"),  # (0.9·2 + 0.2·3) / 5 = 0.48
    ([0.1, 0.1], "insufficient_data"),  # fewer than 3 cycles: no decision
    ([], "no_cycles"),
])
def test_fires_below_the_threshold_and_records_every_outcome(session: Session, rates: list[float], status: str) -> None:
    cycles(session, rates)
    result = accept_rate.check(session, "ctr", CFG)
    assert result["status"] == status, result
    assert len(result["cycles"]) == min(len(rates), 5)
    if len(rates) >= 3:
        assert result["avg_accept_rate"] == pytest.approx(sum(rates[-5:]) / len(rates[-5:]))
    assert recorded(session) == [status]


def test_a_retrain_it_started_suppresses_the_next_within_the_cooldown(session: Session) -> None:
    cycles(session, [0.3] * 5)
    session.add(TrainingRun(run_id="r1", model="ctr", trigger=Trigger.ACCEPT_RATE, status="completed",
                            started_at=clock.now() - timedelta(hours=2)))
    session.flush()
    assert accept_rate.check(session, "ctr", CFG)["status"] == "suppressed"
    assert accept_rate.check(session, "ctr", AcceptRateCheck(cooldown_hours=1))["status"] == "retrain_needed"
    assert recorded(session) == ["suppressed", "retrain_needed"]


def test_feedback_events_are_stored_once_and_refused_when_malformed(session: Session, settings: Settings) -> None:
    batch = [events.parse({"type": "feedback", "model": "ctr", "cycle_id": "c1", "accepted": 1, "rejected": 0,
                           "event_id": f"f{i}"}) for i in range(3)]
    assert events.store(session, settings, batch).stored == 3
    again = events.store(session, settings, batch)
    assert (again.stored, again.duplicates) == (0, 3)
    unknown = events.store(session, settings, [events.parse({"type": "feedback", "model": "nope", "cycle_id": "c",
                                                            "accepted": 0, "rejected": 2})])
    assert unknown.rejected and "unknown model 'nope'" in unknown.rejected[0][1]
    for bad, why in [({"accepted": 0, "rejected": 0}, "both 0"), ({"accepted": -1, "rejected": 1}, "accepted: expected"),
                     ({"accepted": 1.5, "rejected": 1}, "accepted: expected"), ({"accepted": True, "rejected": 1}, "boolean")]:
        with pytest.raises(InvalidEvent, match=why):
            events.parse({"type": "feedback", "model": "ctr", "cycle_id": "c"} | bad)
    assert accept_rate.recent_cycles(session, "ctr", 5)[0] | {"last_feedback_at": None} == {
        "cycle_id": "c1", "accepted": 3, "rejected": 0, "accept_rate": 1.0, "last_feedback_at": None}
