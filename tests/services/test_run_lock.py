"""retrainer.services.run_lock: claiming requests, the lease, its heartbeat and the hand-back of dead runs,
on SQLite and the real PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import get_engine, session_scope
from retrainer.db.records import RequestStatus, RetrainRequest, RunStatus, SystemEvent, TrainingRun, Trigger
from retrainer.services import run_lock


def request(settings: Settings, status: RequestStatus = RequestStatus.PENDING, **fields: Any) -> int:
    with session_scope(settings.database_url) as s:
        row = RetrainRequest(model="ctr", trigger=Trigger.EVENT, requested_by="test", status=status, **fields)
        s.add(row)
        s.flush()
        return row.id


def running_run(settings: Settings, run_id: str, request_id: int | None = None, lease: timedelta = timedelta(hours=1),
                task_id: str | None = None, attempt: int = 0) -> None:
    with session_scope(settings.database_url) as s:
        s.add(TrainingRun(run_id=run_id, model="ctr", trigger=Trigger.EVENT, status=RunStatus.RUNNING,
                          started_at=clock.now(), lease_expires_at=clock.now() + lease, request_id=request_id,
                          celery_task_id=task_id, attempt=attempt))
        if request_id is not None:
            s.execute(sa.update(RetrainRequest).where(RetrainRequest.id == request_id)
                      .values(status=RequestStatus.PROCESSING, run_id=run_id))


def claim(settings: Settings, request_id: int | None, task_id: str | None = "task-1", attempt: int = 0) -> run_lock.Claim:
    with session_scope(settings.database_url) as s:
        return run_lock.claim(s, "ctr", Trigger.MANUAL, request_id, task_id, attempt, settings.recovery)


def get(settings: Settings, table: Any, key: Any) -> Any:
    with session_scope(settings.database_url) as s:
        return s.get(table, key)


def test_a_pending_request_is_claimed_once(settings: Settings) -> None:
    rid = request(settings)
    first = claim(settings, rid)
    assert first.run_id is not None and first.request_id == rid
    req = get(settings, RetrainRequest, rid)
    assert req.status == RequestStatus.PROCESSING and req.run_id == first.run_id
    run = get(settings, TrainingRun, first.run_id)
    assert run.status == RunStatus.RUNNING and run.trigger == Trigger.EVENT  # the request's trigger, not the message's
    assert run.lease_expires_at <= clock.now() + timedelta(seconds=settings.recovery.lease_seconds)

    duplicate = claim(settings, rid, task_id="task-2")  # a re-sent or re-delivered message
    assert duplicate.run_id is None
    assert duplicate.skipped["holder"] == first.run_id and "being handled" in duplicate.skipped["message"]


def test_a_message_without_a_request_opens_one(settings: Settings) -> None:
    claimed = claim(settings, None)
    req = get(settings, RetrainRequest, claimed.request_id)
    assert req.status == RequestStatus.PROCESSING and req.run_id == claimed.run_id
    assert req.trigger == Trigger.MANUAL and req.requested_by == "task task-1"


def test_a_message_without_a_request_joins_the_pending_one(settings: Settings) -> None:
    rid = request(settings, not_before=clock.now() + timedelta(minutes=1))
    claimed = claim(settings, None)
    assert claimed.request_id == rid and claimed.run_id is not None
    with session_scope(settings.database_url) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(RetrainRequest)) == 1


def test_a_finished_request_is_not_run_again(settings: Settings) -> None:
    for status in (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED):
        rid = request(settings, status)
        skipped = claim(settings, rid)
        assert skipped.run_id is None and "already handled" in skipped.skipped["message"]
    assert claim(settings, 10_000).skipped["message"] == "retrain request 10000 of 'ctr' does not exist"


def test_a_retry_of_the_same_task_takes_over_its_own_run(settings: Settings) -> None:
    rid = request(settings)
    running_run(settings, "run_attempt0", rid, task_id="task-9", attempt=0)  # its lease is still fresh

    same_attempt = claim(settings, rid, task_id="task-9", attempt=0)  # a re-delivery while it may be alive
    assert same_attempt.run_id is None

    retry = claim(settings, rid, task_id="task-9", attempt=1)
    assert retry.run_id is not None
    old = get(settings, TrainingRun, "run_attempt0")
    assert old.status == RunStatus.FAILED and "superseded by attempt 1" in old.error_message
    assert get(settings, RetrainRequest, rid).run_id == retry.run_id


def test_another_requests_run_holds_the_model(settings: Settings) -> None:
    running_run(settings, "run_holder", request(settings, RequestStatus.PROCESSING))
    follow_up = request(settings)
    skipped = claim(settings, follow_up)
    assert skipped.run_id is None and skipped.skipped["holder"] == "run_holder"
    assert get(settings, RetrainRequest, follow_up).status == RequestStatus.PENDING  # owed, not dropped
    row = get(settings, TrainingRun, skipped.skipped["run_id"])
    assert row.status == RunStatus.SKIPPED and "run_holder" in row.error_message


def test_a_dead_run_is_expired_and_its_request_handed_back(settings: Settings) -> None:
    rid = request(settings)
    running_run(settings, "run_dead", rid, lease=-timedelta(seconds=1))
    with session_scope(settings.database_url) as s:
        assert [r.run_id for r in run_lock.expire_dead(s, settings.recovery)] == ["run_dead"]
    dead = get(settings, TrainingRun, "run_dead")
    assert dead.status == RunStatus.FAILED and "lease expired" in dead.error_message
    assert dead.notified_at is not None  # nothing to publish for it: its request runs again
    req = get(settings, RetrainRequest, rid)
    assert req.status == RequestStatus.PENDING and req.lost_runs == 1 and "died" in req.error_message

    again = claim(settings, rid)  # the re-sent message
    assert again.run_id is not None


def test_a_request_whose_runs_keep_dying_fails_after_the_cap(settings: Settings) -> None:
    rid = request(settings)
    for i in range(settings.recovery.max_lost_runs):
        claimed = claim(settings, rid, task_id=f"t{i}")
        assert claimed.run_id is not None, claimed
        with session_scope(settings.database_url) as s:
            s.execute(sa.update(TrainingRun).where(TrainingRun.run_id == claimed.run_id)
                      .values(lease_expires_at=clock.now() - timedelta(seconds=1)))
            run_lock.expire_dead(s, settings.recovery)
    req = get(settings, RetrainRequest, rid)
    assert req.status == RequestStatus.FAILED and req.lost_runs == settings.recovery.max_lost_runs
    assert f"gave up after {settings.recovery.max_lost_runs} runs died" in req.error_message
    assert claim(settings, rid).run_id is None


def test_a_dead_runs_request_merges_into_a_waiting_follow_up(settings: Settings) -> None:
    rid = request(settings, event_count=5)
    running_run(settings, "run_dead", rid, lease=-timedelta(seconds=1))
    follow_up = request(settings, event_count=2)
    with session_scope(settings.database_url) as s:
        run_lock.expire_dead(s, settings.recovery)
    assert get(settings, RetrainRequest, rid).status == RequestStatus.CANCELLED
    merged = get(settings, RetrainRequest, follow_up)
    assert merged.status == RequestStatus.PENDING and merged.event_count == 7


def test_finish_is_fenced(settings: Settings) -> None:
    running_run(settings, "run_a")
    with session_scope(settings.database_url) as s:
        run_lock.finish(s, "run_a", status=RunStatus.COMPLETED, outcome="kept")
    with session_scope(settings.database_url) as s:
        try:
            run_lock.finish(s, "run_a", status=RunStatus.FAILED, outcome="error")
        except run_lock.LostLock as exc:
            assert "run_a lost its lock" in str(exc)
        else:
            raise AssertionError("a second finish must be refused")
    assert get(settings, TrainingRun, "run_a").outcome == "kept"


def test_the_heartbeat_renews_the_lease_and_notices_a_takeover(settings: Settings) -> None:
    running_run(settings, "run_beat", lease=timedelta(seconds=1))
    engine = get_engine(settings.database_url)
    with run_lock.Heartbeat(engine, "run_beat", lease=timedelta(seconds=30), every=timedelta(seconds=0.2)) as beat:
        deadline = time.monotonic() + 10
        while get(settings, TrainingRun, "run_beat").lease_expires_at < clock.now() + timedelta(seconds=20):
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.1)
        with session_scope(settings.database_url) as s:  # another run takes over
            s.execute(sa.update(TrainingRun).values(status=RunStatus.FAILED))
        while not beat.lost:
            assert time.monotonic() < deadline, "the heartbeat did not notice the takeover"
            time.sleep(0.1)
    assert get(settings, TrainingRun, "run_beat").status == RunStatus.FAILED


def test_expiry_is_audited(settings: Settings) -> None:
    running_run(settings, "run_dead", lease=-timedelta(seconds=1))
    with session_scope(settings.database_url) as s:
        run_lock.expire_dead(s, settings.recovery)
    with session_scope(settings.database_url) as s:
        kinds = list(s.scalars(sa.select(SystemEvent.kind)))
    assert kinds == ["lock_expired"]
