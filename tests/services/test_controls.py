"""Pause/resume, the retrain budget and the gate every automatic trigger passes (services/controls.py),
and a person's requests (services/retrain_requests.py: ask, listing, cancel)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import (
    Priority,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)
from retrainer.services import controls, events, retrain_requests, run_lock
from retrainer.services.controls import Suppressed
from retrainer.services.errors import NotFound, RequestConflict
from retrainer.services.retrain_requests import Enqueue
from tests.support import make_settings, model_config


def suppressions(session: Session) -> list[SystemEvent]:
    return list(session.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "suppressed")
                                .order_by(SystemEvent.id)))


def purchase(i: int) -> events.Event:
    return events.parse({"type": "purchase", "model": "ctr", "event_id": f"e{i}", "value": 0.1,
                         "features": {"hook_strength": 0.5}})


def test_a_paused_model_stores_events_but_records_their_retrain_as_suppressed(session: Session, settings: Settings) -> None:
    controls.set_paused(session, "ctr", True, "ops", "freeze")
    first = events.store(session, settings, [purchase(i) for i in range(3)])
    second = events.store(session, settings, [purchase(i) for i in range(3, 5)])
    assert (first.stored, second.stored) == (3, 2)  # nothing is lost
    assert first.enqueue == [] and "paused by ops" in first.suppressed["ctr"] and "(freeze)" in first.suppressed["ctr"]
    assert session.scalar(sa.select(sa.func.count()).select_from(RetrainRequest)) == 0
    rows = suppressions(session)
    assert len(rows) == 1, "a storm of events is one suppression row, counting its repeats"
    assert rows[0].payload["trigger"] == "event" and rows[0].payload["repeats"] == 5

    controls.set_paused(session, "ctr", False, "ops")
    assert isinstance(retrain_requests.coalesce(session, settings, "ctr", trigger=Trigger.ACCURACY,
                                                requested_by="check_accuracy", window=0), Enqueue)


def test_pausing_cancels_waiting_automatic_requests_and_keeps_a_persons(session: Session, settings: Settings) -> None:
    job = retrain_requests.coalesce(session, settings, "ctr")
    assert isinstance(job, Enqueue)
    state = controls.set_paused(session, "ctr", True, "ops")
    assert state["paused"] and state["cancelled_requests"] == [job.request_id]
    assert session.get(RetrainRequest, job.request_id).status == RequestStatus.CANCELLED

    person = retrain_requests.ask(session, "ctr", "alice", "new features", Priority.HIGH)
    session.flush()
    assert person.status == RequestStatus.PENDING and person.trigger == Trigger.MANUAL
    assert controls.set_paused(session, "ctr", True, "ops")["cancelled_requests"] == []  # idempotent, keeps alice's
    assert session.get(RetrainRequest, person.id).status == RequestStatus.PENDING


def test_the_budget_counts_automatic_runs_in_its_window(tmp_path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(budget={"max_runs": 2, "per_hours": 24})})
    from retrainer.db import session_scope

    now = clock.now()
    with session_scope(db_url) as session:
        for i, (trigger, hours_ago, status) in enumerate([
            (Trigger.EVENT, 1, RunStatus.COMPLETED), (Trigger.MANUAL, 2, RunStatus.COMPLETED),  # a person's: free
            (Trigger.SCHEDULE, 3, RunStatus.SKIPPED),  # did no work
            (Trigger.ACCURACY, 30, RunStatus.COMPLETED),  # outside the window
        ]):
            session.add(TrainingRun(run_id=f"r{i}", model="ctr", trigger=trigger, status=status,
                                    started_at=now - timedelta(hours=hours_ago)))
        session.flush()
        assert controls.automatic_runs(session, "ctr", 24) == 1
        assert isinstance(retrain_requests.coalesce(session, settings, "ctr", trigger=Trigger.DRIFT, window=0), Enqueue)
        session.add(TrainingRun(run_id="r9", model="ctr", trigger=Trigger.ERRORS, status=RunStatus.FAILED,
                                started_at=now - timedelta(minutes=5)))
        session.execute(sa.update(RetrainRequest).values(status=RequestStatus.COMPLETED))
        session.flush()
        spent = retrain_requests.coalesce(session, settings, "ctr", trigger=Trigger.NEW_SAMPLES,
                                          requested_by="check_new_data", window=0)
        assert isinstance(spent, Suppressed)
        assert spent.reason == "retrain budget spent: 2 automatic runs in the last 24 h (budget.max_runs 2)"
        assert suppressions(session)[-1].payload["trigger"] == "new_samples"
        # a person is never over budget
        assert retrain_requests.ask(session, "ctr", "alice").status == RequestStatus.PENDING


def test_a_persons_request_takes_over_a_waiting_one_with_the_higher_priority(session: Session, settings: Settings) -> None:
    job = retrain_requests.coalesce(session, settings, "ctr", count=5)  # events, due in the debounce window
    taken = retrain_requests.ask(session, "ctr", "alice", "weekly review", Priority.LOW)
    assert taken.id == job.request_id, "one waiting request per model: one run serves both"
    assert (taken.trigger, taken.requested_by, taken.priority) == (Trigger.MANUAL, "alice", Priority.NORMAL)
    assert taken.not_before <= clock.now()
    again = retrain_requests.ask(session, "ctr", "bob", "urgent", Priority.HIGH)
    assert again.id == taken.id and again.priority == Priority.HIGH and again.requested_by == "bob"
    assert retrain_requests.next_job(session, "ctr").priority == Priority.HIGH  # what the follow-up is sent with

    listed = retrain_requests.listing(session, "ctr")
    assert [(r["id"], r["status"], r["priority"], r["requested_by"]) for r in listed] == [
        (taken.id, "pending", "high", "bob")]


def test_cancel_only_a_pending_request_and_its_message_then_does_nothing(session: Session, settings: Settings) -> None:
    request = retrain_requests.ask(session, "ctr", "alice")
    session.flush()
    shown = retrain_requests.cancel(session, request.id, "alice")
    assert shown["status"] == "cancelled" and shown["error_message"] == "cancelled by alice"
    session.commit()
    claim = run_lock.claim(session, "ctr", Trigger.MANUAL, request.id, "task-1")
    assert claim.run_id is None and "cancelled: already handled" in claim.skipped["message"]

    with pytest.raises(RequestConflict, match="only a pending request can be cancelled"):
        retrain_requests.cancel(session, request.id, "bob")
    with pytest.raises(NotFound, match="no retrain request 999"):
        retrain_requests.cancel(session, 999, "bob")

    running = retrain_requests.ask(session, "ctr", "alice")
    session.commit()
    claimed = run_lock.claim(session, "ctr", Trigger.MANUAL, running.id, "task-2")
    with pytest.raises(RequestConflict, match=f"is processing by run {claimed.run_id}"):
        retrain_requests.cancel(session, running.id, "alice")
