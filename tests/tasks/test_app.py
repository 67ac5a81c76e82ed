"""The Celery app's configuration and the tasks' declared limits (no broker, no worker needed)."""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path

import pytest
from celery.schedules import crontab, schedule
from celery_batches import Batches
from sqlalchemy.exc import InterfaceError, OperationalError

from retrainer.config import get_settings
from retrainer.db import TRANSIENT_ERRORS
from retrainer.services.notifications import SlackTransientError
from retrainer.tasks import broker
from retrainer.tasks.app import (
    EVENTS_WINDOW,
    QUEUES,
    TASK_MODULES,
    broker_options,
    events_prefetch_multiplier,
    longest_hard_limit,
    make_app,
)
from retrainer.tasks.app import app as module_app
from retrainer.tasks.events import FLUSH_EVERY, RETRY_SECONDS
from tests.support import make_settings, model_config

REDIS = "redis://127.0.0.1:6379/13"
RETRAINER_TASKS = {
    "training.retrain_model", "checks.check_accuracy", "events.ingest_event", "notifications.notify_decision",
}


def own_tasks() -> dict:
    for module in TASK_MODULES:  # importing a task module registers its tasks on the worker's app
        importlib.import_module(module)
    return {name: t for name, t in module_app.tasks.items() if not name.startswith("celery.")}


def test_json_only(tmp_path: Path) -> None:
    conf = make_app(make_settings(tmp_path, "sqlite:///x.db", broker_url=REDIS)).conf
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]


@pytest.mark.parametrize(("task", "queue"), [
    ("training.retrain_model", "training"),
    ("events.ingest_event", "events"),
    ("checks.check_accuracy", "checks"),
    ("notifications.notify_decision", "notifications"),
    ("checks.some_future_check", "checks"),
])
def test_routes_send_each_domain_to_its_queue(tmp_path: Path, task: str, queue: str) -> None:
    app = make_app(make_settings(tmp_path, "sqlite:///x.db", broker_url=REDIS))
    assert app.amqp.router.route({}, task, (), {})["queue"].name == queue
    assert [q.name for q in app.conf.task_queues] == list(QUEUES)
    assert set(QUEUES) == {"training", "events", "checks", "notifications"}


def test_beat_schedule_comes_from_config(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "sqlite:///x.db", broker_url=REDIS, models={
        "ctr": model_config(schedules={"check": "0 2 * * *", "retrain": "@every 5s"}),
        "weekly": model_config(schedules={"check": None, "retrain": "0 3 * * 0", "monitor": "0 * * * *"}),
        "quiet": model_config(),  # every schedule off
    })
    beat = make_app(settings).conf.beat_schedule
    assert set(beat) == {"check-accuracy:ctr", "retrain:ctr", "retrain:weekly", "monitor:weekly", "reconcile",
                         "compact-observations"}
    assert beat["monitor:weekly"]["task"] == "checks.monitor" and beat["monitor:weekly"]["kwargs"] == {"model": "weekly"}
    assert beat["compact-observations"]["schedule"].run_every.total_seconds() == 300
    assert beat["reconcile"]["task"] == "checks.reconcile" and beat["reconcile"]["options"]["queue"] == "checks"

    check = beat["check-accuracy:ctr"]
    assert check["task"] == "checks.check_accuracy" and check["kwargs"] == {"model": "ctr"}
    assert check["options"]["queue"] == "checks"
    assert isinstance(check["schedule"], crontab)
    assert check["schedule"] == crontab(minute="0", hour="2")

    every = beat["retrain:ctr"]  # beat opens a request; the request's message does the training
    assert every["task"] == "checks.request_retrain"
    assert every["kwargs"] == {"model": "ctr", "trigger": "schedule"}
    assert every["options"]["queue"] == "checks"
    assert type(every["schedule"]) is schedule
    assert every["schedule"].run_every == timedelta(seconds=5)

    weekly = beat["retrain:weekly"]["schedule"]
    assert isinstance(weekly, crontab)
    assert weekly.day_of_week == {0} and weekly.hour == {3} and weekly.minute == {0}


def test_default_schedules_are_the_documented_ones(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "sqlite:///x.db", models={"ctr": {"family": "ctr"}})
    beat = make_app(settings).conf.beat_schedule
    assert beat["check-accuracy:ctr"]["schedule"] == crontab(minute="0", hour="2")  # daily 02:00
    assert beat["retrain:ctr"]["schedule"] == crontab(minute="0", hour="3", day_of_week="0")  # Sunday 03:00
    assert beat["monitor:ctr"]["schedule"] == crontab(minute="0")  # hourly accept rate
    assert beat["errors:ctr"]["schedule"] == crontab(minute="0", hour="2")  # daily high-confidence errors
    assert beat["new-data:ctr"]["schedule"] == crontab(minute="30")  # hourly new data
    assert beat["drift:ctr"]["schedule"] == crontab(minute="15")  # hourly drift
    assert beat["probation:ctr"]["schedule"].run_every == timedelta(minutes=10)  # a promoted version's probation
    assert {e["task"] for e in beat.values()} == {
        "checks.check_accuracy", "checks.monitor", "checks.check_errors", "checks.check_new_data",
        "checks.check_drift", "checks.check_probation", "checks.request_retrain", "checks.reconcile",
        "checks.compact_observations"}
    assert make_app(settings).conf.beat_scheduler == "retrainer.tasks.schedule:ReloadingScheduler"


def test_redis_visibility_timeout_exceeds_every_time_limit(tmp_path: Path) -> None:
    long_model = model_config(training={"time_limit_seconds": 7200})
    settings = make_settings(tmp_path, "sqlite:///x.db", broker_url=REDIS,
                             models={"ctr": model_config(), "slow": long_model})
    options = make_app(settings).conf.broker_transport_options
    hard_limit_of_slow = 7200 + 60  # what send_retrain puts on its message
    assert longest_hard_limit(settings) >= hard_limit_of_slow
    assert options["visibility_timeout"] > hard_limit_of_slow
    assert options["global_keyprefix"] == f"{settings.redis_key_prefix}:"

    # the limits the registered tasks carry come from this process's settings: the same settings
    # on a Redis broker must give a visibility timeout above every one of them
    own = get_settings().model_copy(update={"broker_url": REDIS})
    longest_task_limit = max(t.time_limit for t in own_tasks().values())
    assert broker_options(own)["visibility_timeout"] > longest_task_limit


def test_result_keys_share_the_prefix(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "sqlite:///x.db", broker_url=REDIS)
    conf = make_app(settings).conf
    assert conf.result_backend == REDIS
    assert conf.result_backend_transport_options == {"global_keyprefix": f"{settings.redis_key_prefix}:"}


def test_embedded_broker_folders(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}")
    options = make_app(settings).conf.broker_transport_options
    assert "visibility_timeout" not in options
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        assert Path(options[key]).is_dir() and Path(options[key]).is_relative_to(tmp_path)
    assert options["data_folder_in"] == options["data_folder_out"]


def test_every_task_declares_its_limits() -> None:
    tasks = own_tasks()
    assert RETRAINER_TASKS <= set(tasks)
    for name, task in tasks.items():
        assert task.time_limit, f"{name} has no time_limit"
        assert task.soft_time_limit, f"{name} has no soft_time_limit"
        assert task.soft_time_limit < task.time_limit, name


def test_acks_late_only_where_idempotent_and_results_only_where_read() -> None:
    tasks = own_tasks()
    retrain = tasks["training.retrain_model"]
    assert retrain.acks_late is True
    assert retrain.soft_time_limit == longest_hard_limit(get_settings()) - 60
    assert tasks["events.ingest_event"].acks_late is True  # event ids make re-delivery a no-op
    assert tasks["checks.check_accuracy"].acks_late is False
    assert tasks["notifications.notify_decision"].acks_late is False  # a re-post would message Slack twice

    assert retrain.ignore_result is False and tasks["checks.check_accuracy"].ignore_result is False
    assert tasks["events.ingest_event"].ignore_result is True
    assert tasks["notifications.notify_decision"].ignore_result is True

    notify = tasks["notifications.notify_decision"]
    assert tuple(notify.autoretry_for) == (SlackTransientError, *TRANSIENT_ERRORS)  # narrow: a 4xx is not retried
    assert notify.retry_backoff and notify.retry_jitter is True and notify.max_retries
    for name in ("training.retrain_model", "checks.check_accuracy"):
        # only a lost or locked database is transient for these; bad input and bugs fail at once
        assert tuple(tasks[name].autoretry_for) == TRANSIENT_ERRORS == (OperationalError, InterfaceError), name
        assert tasks[name].retry_backoff and tasks[name].retry_jitter is True, name
    # A batch of events rides a database outage out in place (Celery's retry would re-publish the
    # batch as one message of Python objects), within its time limits, then hands the batch back.
    ingest = tasks["events.ingest_event"]
    assert isinstance(ingest, Batches) and not getattr(ingest, "autoretry_for", ())
    assert ingest.flush_every == FLUSH_EVERY <= EVENTS_WINDOW / 2 and ingest.flush_interval <= 0.5
    assert RETRY_SECONDS < ingest.soft_time_limit < ingest.time_limit


def test_worker_settings_for_long_tasks(tmp_path: Path) -> None:
    conf = make_app(make_settings(tmp_path, "sqlite:///x.db", broker_url=REDIS)).conf
    assert conf.worker_prefetch_multiplier == 1
    # ...but a worker for the events queue (and not training) holds two batches' worth, whatever its -c
    assert events_prefetch_multiplier(["events", "checks", "notifications"], 2) == EVENTS_WINDOW / 2
    assert events_prefetch_multiplier(["events"], 3) * 3 >= EVENTS_WINDOW
    assert events_prefetch_multiplier(["training", "events"], 2) is None
    assert events_prefetch_multiplier(["checks"], 2) is None
    # the embedded broker's synchronous loop acknowledges late (celery 5.6): a wider window there
    assert make_app(make_settings(tmp_path, "sqlite:///x.db")).conf.worker_prefetch_multiplier == 16
    assert conf.task_track_started is True
    assert conf.worker_send_task_events is True  # Flower
    assert conf.enable_utc is True and conf.timezone == "UTC"


def test_redis_urls_use_the_bulk_transport(tmp_path: Path) -> None:
    redis_app = make_app(make_settings(tmp_path, "sqlite:///x.db", broker_url=REDIS))
    assert redis_app.conf.broker_transport == "retrainer.tasks.broker:Transport"
    with redis_app.connection_for_write() as conn:
        assert isinstance(conn.transport, broker.Transport)  # instantiated without connecting
    assert make_app(make_settings(tmp_path, "sqlite:///x.db")).conf.broker_transport is None  # filesystem://


def test_a_broker_without_fanout_cannot_tell_which_workers_are_up(tmp_path: Path) -> None:
    """kombu's SQLAlchemy transport has no fanout exchange, so its workers run no remote control
    (Celery's own test): `workers_on` says it cannot tell (None) rather than "no worker" ({})."""
    from celery import Celery

    from retrainer.tasks.enqueue import workers_on

    app = Celery("no-fanout", broker=f"sqla+sqlite:///{tmp_path / 'broker.db'}", set_as_current=False)
    try:
        assert workers_on("training", via=app) is None
    finally:
        app.close()
    assert not (tmp_path / "broker.db").exists()  # decided from the transport's kind, without connecting
