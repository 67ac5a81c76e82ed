"""retrainer.services.reconcile: every repair of one pass, on SQLite and the real PostgreSQL."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from retrainer import clock
from retrainer.config import Recovery, Settings
from retrainer.db import session_scope
from retrainer.db.records import RequestStatus, RetrainRequest, RunStatus, SystemEvent, TrainingRun, Trigger
from retrainer.services import reconcile
from tests.services.builders import make_version

RESEND_AFTER = timedelta(seconds=Recovery().resend_after_seconds)


def add(settings: Settings, *rows: Any) -> None:
    with session_scope(settings.database_url) as s:
        s.add_all(rows)


def request(status: RequestStatus = RequestStatus.PENDING, model: str = "ctr", **fields: Any) -> RetrainRequest:
    return RetrainRequest(model=model, trigger=Trigger.EVENT, requested_by="test", status=status, **fields)


def run(run_id: str, status: RunStatus = RunStatus.RUNNING, model: str = "ctr", **fields: Any) -> TrainingRun:
    return TrainingRun(run_id=run_id, model=model, trigger=Trigger.EVENT, status=status, **fields)


def reconcile_once(settings: Settings) -> reconcile.Repairs:
    with session_scope(settings.database_url) as s:
        return reconcile.reconcile(s, settings)


def get(settings: Settings, table: Any, key: Any) -> Any:
    with session_scope(settings.database_url) as s:
        return s.get(table, key)


def test_a_pass_with_nothing_to_repair_writes_nothing(settings: Settings) -> None:
    repairs = reconcile_once(settings)
    assert not repairs and repairs.jobs == []
    with session_scope(settings.database_url) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SystemEvent)) == 0


def test_a_dead_run_is_expired_and_its_request_resent_at_once(settings: Settings) -> None:
    add(settings, request(RequestStatus.PROCESSING, id=1, run_id="run_dead"),
        run("run_dead", request_id=1, lease_expires_at=clock.now() - timedelta(seconds=1)))
    repairs = reconcile_once(settings)
    assert repairs.expired_runs == ["run_dead"]
    assert repairs.resent_requests == [1] and [(j.request_id, j.countdown) for j in repairs.jobs] == [(1, 0)]
    assert get(settings, RetrainRequest, 1).status == RequestStatus.PENDING
    with session_scope(settings.database_url) as s:
        [audit] = s.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "reconcile"))
    assert audit.payload["expired_runs"] == ["run_dead"] and "1 expired runs" in audit.message


def test_a_lost_message_is_resent_once_per_period(settings: Settings) -> None:
    add(settings, request(id=1, not_before=clock.now() - timedelta(seconds=30)),  # due: its message is on its way
        request(id=2, model="other", not_before=clock.now() - RESEND_AFTER - timedelta(seconds=1)))
    settings.models["other"] = settings.models["ctr"]
    repairs = reconcile_once(settings)
    assert repairs.resent_requests == [2]
    assert reconcile_once(settings).resent_requests == []  # not again within the period
    with clock.frozen(clock.now() + RESEND_AFTER + timedelta(seconds=1)):
        assert sorted(reconcile_once(settings).resent_requests) == [1, 2]


def test_a_request_of_a_model_no_longer_configured_is_cancelled(settings: Settings) -> None:
    add(settings, request(id=1, model="gone", not_before=clock.now() - timedelta(hours=1)))
    repairs = reconcile_once(settings)
    assert repairs.closed_requests == [1] and repairs.jobs == []
    req = get(settings, RetrainRequest, 1)
    assert req.status == RequestStatus.CANCELLED and "no longer configured" in req.error_message


def test_a_running_request_whose_run_ended_is_closed(settings: Settings) -> None:
    add(settings, request(RequestStatus.PROCESSING, id=1, run_id="run_done"),
        request(RequestStatus.PROCESSING, id=2, model="b", run_id="run_failed"),
        run("run_done", RunStatus.COMPLETED, request_id=1),
        run("run_failed", RunStatus.FAILED, request_id=2, model="b"))
    assert sorted(reconcile_once(settings).closed_requests) == [1, 2]
    assert get(settings, RetrainRequest, 1).status == RequestStatus.COMPLETED
    assert get(settings, RetrainRequest, 2).status == RequestStatus.FAILED


def test_orphan_artifacts_are_swept_and_nothing_else(settings: Settings) -> None:
    root = Path(settings.artifact_dir) / "ctr"
    root.mkdir(parents=True)
    with session_scope(settings.database_url) as s:
        kept = Path(make_version(s, settings, 1).artifact_uri)  # a version's file (not a run name): never touched
    referenced = root / "run_20261123_100000_aaaaaa.json"
    orphan = root / "run_20261123_100000_bbbbbb.json"
    tmp = root / ".run_20261123_100000_cccccc.4242.tmp.json"
    writing = root / "run_20261123_100000_dddddd.json"
    young = root / "run_20261123_100000_eeeeee.json"
    foreign = root / "notes.txt"
    for path in (referenced, orphan, tmp, writing, young, foreign):
        path.write_text("x")
    old = time.time() - settings.recovery.orphan_grace_seconds - 60
    for path in (referenced, orphan, tmp, writing, foreign):
        os.utime(path, (old, old))
    with session_scope(settings.database_url) as s:
        version = make_version(s, settings, 2)
        Path(version.artifact_uri).unlink()
        version.artifact_uri = str(referenced)
        s.add(run("run_20261123_100000_dddddd", lease_expires_at=clock.now() + timedelta(minutes=1)))

    repairs = reconcile_once(settings)
    assert sorted(repairs.swept_files) == sorted([str(orphan), str(tmp)])
    assert {p.name for p in root.iterdir()} == {kept.name, referenced.name, writing.name, young.name, foreign.name}


def test_a_decision_never_handed_to_the_queue_is_published_again(settings: Settings) -> None:
    long_ago = clock.now() - RESEND_AFTER - timedelta(minutes=1)
    add(settings,
        run("run_lost_note", RunStatus.COMPLETED, outcome="retrained", completed_at=long_ago),
        run("run_sent", RunStatus.COMPLETED, outcome="kept", completed_at=long_ago, notified_at=long_ago),
        run("run_fresh", RunStatus.COMPLETED, outcome="kept", completed_at=clock.now()),
        run("run_lock_skip", RunStatus.SKIPPED, outcome="skipped", completed_at=long_ago))
    assert reconcile_once(settings).renotified_runs == ["run_lost_note"]
    with session_scope(settings.database_url) as s:
        reconcile.mark_notified(s, ["run_lost_note"])
    assert reconcile_once(settings).renotified_runs == []
