"""checks.check_probation run by a real beat on a real worker (Redis broker, PostgreSQL): a promoted version
worse than the one it replaced is rolled back by the check itself, the ledger shows an auto_rollback by
`probation`, and the alert goes out through notifications.notify_alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from retrainer import clock
from retrainer.db import session_scope
from retrainer.db.records import LedgerEntry, ModelVersion, SystemEvent
from retrainer.demo.processes import child_env, start_beat, write_config
from retrainer.services import predictions, registry
from tests.services.builders import make_version
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import rows

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]


def serve(url: str, version_id: str, n: int, scale: float, start: datetime, end: datetime, seed: int) -> None:
    """`n` predictions of `version_id` over [start, end), each outcome 10 minutes later and off by |N(0, 0.01 scale)|."""
    losses = np.abs(np.random.default_rng(seed).normal(0.0, 0.01 * scale, n))
    step = (end - start) / n
    with session_scope(url) as session:
        for i, loss in enumerate(losses):
            at = start + i * step
            pid = f"{version_id}-p{i}"
            predictions.log_prediction(session, "ctr", {"x": float(i)}, 0.05, version_id=version_id,
                                       prediction_id=pid, at=at)
            session.flush()
            predictions.record_outcome(session, pid, 0.05 + float(loss), at=at + timedelta(minutes=10))


def test_beat_rolls_back_a_worse_promoted_version_and_the_ledger_says_so(
    tmp_path: Path, pg_url: str, redis_url: str, start_worker
) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url,
                             models={"ctr": model_config(schedules={"probation": "@every 2s"})})
    promoted_at = datetime.now(UTC) - timedelta(days=1)
    with session_scope(pg_url) as session:
        for n in (1, 2):
            make_version(session, settings, n)  # real, checksummed artifacts the worker loads
        with clock.frozen(promoted_at - timedelta(days=10)):
            registry.promote(session, "ctr-v1", actor="test")
    serve(pg_url, "ctr-v1", 400, 1.0, promoted_at - timedelta(days=6), promoted_at - timedelta(hours=1), seed=1)
    with session_scope(pg_url) as session, clock.frozen(promoted_at):
        registry.promote(session, "ctr-v2", expected_id="ctr-v1", actor="alice")  # on probation from here
    serve(pg_url, "ctr-v2", 200, 2.0, promoted_at + timedelta(minutes=1), datetime.now(UTC) - timedelta(hours=1), seed=2)

    start_worker(settings, concurrency=2)
    config = write_config(settings, tmp_path / f"beat-{uuid.uuid4().hex[:6]}.yaml")
    beat = start_beat(tmp_path / "beat.log", tmp_path / "celerybeat-schedule", child_env(config), cwd=tmp_path)
    try:
        (entry,) = wait_until(lambda: rows(pg_url, LedgerEntry, LedgerEntry.action == "auto_rollback"),
                              timeout=90, what="the probation's automatic rollback")
        delivered = wait_until(lambda: rows(pg_url, SystemEvent, SystemEvent.kind == "notification",
                                            SystemEvent.message.like("alert %")),
                               timeout=60, what="the rollback's alert through notifications.notify_alert")
    finally:
        beat.stop()
    assert "Sending due task probation:ctr (checks.check_probation)" in beat.output()
    assert (entry.model, entry.version_id, entry.from_version_id, entry.actor) == ("ctr", "ctr-v1", "ctr-v2", "probation")
    assert "worse beyond the 5 % tolerance" in entry.reason
    with session_scope(pg_url) as session:
        assert registry.production(session, "ctr").version_id == "ctr-v1"
        assert session.get(ModelVersion, "ctr-v2").probation == "rolled_back"
    (alert,) = rows(pg_url, SystemEvent, SystemEvent.kind == "alert")
    assert alert.payload["action"] == "auto_rollback" and alert.payload["restored"] == "ctr-v1"
    assert delivered[0].payload["alert_event_id"] == alert.id and delivered[0].payload["delivery"] == "logged"
    checks = rows(pg_url, SystemEvent, SystemEvent.kind == "check", order_by=SystemEvent.id)
    assert checks[0].payload["check"] == "probation" and checks[0].payload["status"] == "rolled_back"
    assert len(rows(pg_url, LedgerEntry, LedgerEntry.action == "auto_rollback")) == 1  # later looks: no second one
