"""retrainer.services.run_logs: a run's own log lines, bounded, secrets masked, stored on the run."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import numpy as np
from sqlalchemy.orm import Session

from retrainer.db.records import RunStatus, TrainingRun, Trigger
from retrainer.services import run_logs
from tests.support import make_settings

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) [\w.]+: ")


def empty_mean() -> float:
    return float(np.mean([]))  # numpy's RuntimeWarning "Mean of empty slice", a library's own warning


def test_own_info_and_libraries_warnings_time_stamped() -> None:
    own, library = logging.getLogger("retrainer.services.retrain"), logging.getLogger("xgboost.core")
    with run_logs.capture() as captured:
        own.info("fitting %d rows", 480)
        own.debug("not kept: below INFO")
        library.info("not kept: a library's INFO")
        library.warning("a library's warning")
        empty_mean()
        empty_mean()  # the same place again: once
        try:
            raise ValueError("boom")
        except ValueError:
            own.exception("scoring failed")
    text = captured.text()
    lines = [line for line in text.splitlines() if LINE.match(line)]
    names = [line.split(" ", 2)[2].split(":", 1)[0] for line in lines]
    assert names[:2] == ["retrainer.services.retrain", "xgboost.core"] and names[-1] == "retrainer.services.retrain"
    assert set(names[2:-1]) == {"py.warnings"}
    assert "fitting 480 rows" in text and "not kept" not in text
    assert text.count("Mean of empty slice") == 1 and "RuntimeWarning" in text
    assert "ValueError: boom" in text  # the traceback of a logged exception
    with run_logs.capture() as again:  # the next run sees the same warning again: once per run, not per process
        empty_mean()
    assert "Mean of empty slice" in again.text()


def test_a_quiet_process_still_records_info_and_is_restored() -> None:
    own = logging.getLogger("retrainer")
    before = own.level
    own.setLevel(logging.WARNING)
    try:
        with run_logs.capture() as captured:
            logging.getLogger("retrainer.services.dataset").info("loaded 600 rows")
        assert "loaded 600 rows" in captured.text()
        assert own.level == logging.WARNING
        assert not any(isinstance(h, run_logs._Collector) for h in logging.getLogger().handlers)
    finally:
        own.setLevel(before)


def test_secrets_are_masked(tmp_path) -> None:
    db = "postgresql+psycopg://retrainer:db-Pa55word@db.internal:5432/retrainer"
    hook = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"
    settings = make_settings(tmp_path, db, broker_url="redis://:br0ker-pw@redis.internal:6379/0",
                             slack_webhook_url=hook)
    secrets = run_logs.secret_values(settings)
    assert {"db-Pa55word", "br0ker-pw", hook} <= set(secrets)
    log = logging.getLogger("retrainer.services.sources")
    with run_logs.capture(secrets) as captured:
        log.warning("connecting to %s", db)
        log.warning("posting to %s failed", hook)
        log.warning("the password was db-Pa55word; dsn host=x password=other-secret user=y")
        log.warning("unknown url mysql://me:mine@host/db")
    text = captured.text()
    for secret in ("db-Pa55word", "br0ker-pw", "XXXXSECRETXXXX", "other-secret", "mine@"):
        assert secret not in text, secret
    assert "postgresql+psycopg://retrainer:***@db.internal:5432/retrainer" in text
    assert "mysql://me:***@host/db" in text


def test_bounded_to_the_last_bytes_saying_how_much_was_cut() -> None:
    log = logging.getLogger("retrainer.services.retrain")
    with run_logs.capture(limit_bytes=2000) as captured:
        for i in range(100):
            log.info("line %03d %s", i, "x" * 40)
        log.info("huge %s", "y" * 10_000)
    text = captured.text()
    assert len(text.encode()) < 2000 + 200
    head, *rest = text.splitlines()
    assert re.fullmatch(r"\[… \d+ earlier line\(s\), [\d,]+ bytes, cut: the last 2,000 bytes are kept\]", head), head
    assert "line 099" in text and "line 000" not in text
    assert rest[-1].endswith("… [line cut]")


def test_store_on_the_run_and_find_a_tasks_run(session: Session) -> None:
    now = datetime.now(UTC)
    session.add(TrainingRun(run_id="run_a", model="ctr", trigger=Trigger.MANUAL, status=RunStatus.FAILED,
                            started_at=now, celery_task_id="task-1", attempt=1))
    session.flush()
    assert run_logs.store(session, "run_a", "2026-01-01T00:00:00.000Z INFO retrainer: hello")
    assert not run_logs.store(session, "run_missing", "x")
    session.expire_all()
    assert session.get(TrainingRun, "run_a").logs.endswith("hello")
    assert run_logs.run_of_task(session, "task-1", 1) == "run_a"
    assert run_logs.run_of_task(session, "task-1", 0) is None
    assert run_logs.run_of_task(session, None, 0) is None


def test_xgboosts_own_warnings_are_kept() -> None:
    import xgboost

    rng = np.random.default_rng(0)
    data = xgboost.DMatrix(rng.random((20, 2)), label=rng.random(20))
    with run_logs.capture() as captured:  # the native library's warning, through warnings.warn
        xgboost.train({"not_a_param": 1, "nthread": 1}, data, 1)
    assert 'Parameters: { "not_a_param" } are not used' in captured.text()
