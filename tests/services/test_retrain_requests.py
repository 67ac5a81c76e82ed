"""retrainer.services.retrain_requests: the debounce, pulling a request forward, the follow-up, on SQLite and
the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import Settings
from retrainer.db.records import RequestStatus, RetrainRequest, Trigger
from retrainer.services import retrain_requests

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def all_requests(session: Session) -> list[RetrainRequest]:
    return list(session.scalars(sa.select(RetrainRequest).order_by(RetrainRequest.id)))


def test_events_in_one_window_share_one_request(settings: Settings, session: Session) -> None:
    with clock.frozen(NOW):
        job = retrain_requests.coalesce(session, settings, "ctr", count=3)
        assert job is not None and job.countdown == settings.model("ctr").debounce_seconds
        assert retrain_requests.coalesce(session, settings, "ctr", count=2) is None
    [req] = all_requests(session)
    assert req.event_count == 5 and req.status == RequestStatus.PENDING


def test_a_check_pulls_a_waiting_request_forward(settings: Settings, session: Session) -> None:
    with clock.frozen(NOW):
        retrain_requests.coalesce(session, settings, "ctr", window=600)  # events: run in ten minutes
        job = retrain_requests.coalesce(session, settings, "ctr", trigger=Trigger.ACCURACY, requested_by="check",
                                        window=0)
        assert job is not None and job.countdown == 0  # run now; the later message finds it done
        assert retrain_requests.coalesce(session, settings, "ctr", trigger=Trigger.ACCURACY, window=0) is None
    [req] = all_requests(session)
    assert req.not_before == NOW and req.event_count == 3


def test_open_now_returns_the_request_to_run(settings: Settings, session: Session) -> None:
    with clock.frozen(NOW):
        waiting = retrain_requests.coalesce(session, settings, "ctr", window=600)
        req = retrain_requests.open_now(session, "ctr", Trigger.MANUAL, requested_by="cli")
    assert waiting is not None and req.id == waiting.request_id and req.not_before == NOW


def test_the_follow_up_is_sent_at_its_due_time(settings: Settings, session: Session) -> None:
    with clock.frozen(NOW):
        assert retrain_requests.next_job(session, "ctr") is None
        retrain_requests.coalesce(session, settings, "ctr", window=30)
    with clock.frozen(NOW + timedelta(seconds=10)):
        job = retrain_requests.next_job(session, "ctr")
    assert job is not None and job.countdown == 20
    with clock.frozen(NOW + timedelta(minutes=5)):
        assert retrain_requests.next_job(session, "ctr").countdown == 0


def test_close_records_why(settings: Settings, session: Session) -> None:
    job = retrain_requests.coalesce(session, settings, "ctr")
    retrain_requests.close(session, job.request_id, RequestStatus.FAILED, "the data is gone")
    [req] = all_requests(session)
    assert req.status == RequestStatus.FAILED and req.error_message == "the data is gone"
    assert req.completed_at is not None
