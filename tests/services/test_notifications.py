"""retrainer.services.notifications: decision messages and delivery to a real local HTTP webhook."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.orm import Session

from retrainer.config import Settings, load_settings
from retrainer.db import session_scope
from retrainer.db.records import RunStatus, SystemEvent, TrainingRun, Trigger
from retrainer.services import notifications, retrain
from retrainer.services.errors import NotFound
from retrainer.services.notifications import SlackRejected, SlackTransientError
from tests.services.builders import seed

SECRET = "T0SECRET/B0SECRET/hushhushTOKEN1234"


class Hook:
    """A real HTTP server on 127.0.0.1: answers with `status` and records every JSON body it gets. With
    `echo`, an error's body repeats the request path and URL, as some relays and proxies do."""

    def __init__(self) -> None:
        self.status = 200
        self.echo = False
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                hook.paths.append(self.path)
                hook.bodies.append(json.loads(self.rfile.read(length)))
                body = b"ok" if hook.status == 200 else b"invalid_payload"
                if hook.echo and hook.status != 200:
                    body = f"no route for POST {self.path} (http://{self.headers['Host']}{self.path})".encode()
                self.send_response(hook.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/{SECRET}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert "hushhush" not in text


# --- decision messages -------------------------------------------------------------------------------

def _run(session: Session, run_id: str, **fields: Any) -> None:
    session.add(TrainingRun(run_id=run_id, model="ctr", trigger=Trigger.ACCURACY, started_at=datetime.now(UTC),
                            **fields))
    session.flush()


def test_retrained_message(session: Session) -> None:
    _run(session, "run_r", status=RunStatus.COMPLETED, outcome="retrained",
         metrics={"mae": 0.0101, "rmse": 0.0142, "r2": 0.81, "accuracy": 0.64},
         old_metrics={"mae": 0.0312, "rmse": 0.0401, "r2": 0.12, "accuracy": 0.21},
         promoted_to_production=True, improvement_percentage=67.6,
         promotion_reason="New model is 67.6% better than ctr-v1 (mae 0.0312 -> 0.0101)")
    text, blocks = notifications.decision_message(session, "run_r")
    assert text.startswith(":white_check_mark:") and "ctr" in text and "promoted" in text
    assert blocks[0]["type"] == "header"
    body = message_text(blocks)
    assert "*Model*\\nctr" in body and "*Trigger*\\naccuracy" in body and "run_r" in body
    assert "0.0312 → 0.0101" in body  # mae before -> after
    assert "0.0401 → 0.0142" in body and "0.1200 → 0.8100" in body and "0.2100 → 0.6400" in body
    assert "67.6% better than ctr-v1" in body


def test_messages_from_real_runs_carry_versions_metrics_and_reason(settings: Settings) -> None:
    url = settings.database_url
    with session_scope(url) as s:
        seed(s, n=300)
    with session_scope(url) as s:
        first = retrain.retrain(s, settings, "ctr")
    with session_scope(url) as s:
        kept = retrain.retrain(s, settings, "ctr")
    assert (first["status"], kept["status"]) == ("retrained", "kept")
    with session_scope(url) as s:
        text, blocks = notifications.decision_message(s, first["run_id"])
        body = message_text(blocks)
        assert "ctr-v1 promoted to production" in text
        assert "ctr-v1" in body and "First model" in body
        assert f"– → {first['metrics']['test_mae']:.4f}" in body  # nothing before the first model

        text, blocks = notifications.decision_message(s, kept["run_id"])
        body = message_text(blocks)
        assert text.startswith(":pause_button:") and "ctr-v2 trained, production kept" in text
        assert "ctr-v2" in body and "ctr-v1" in body  # candidate and the production it was measured against
        before, after = kept["old_metrics"]["test_mae"], kept["metrics"]["test_mae"]
        assert f"{before:.4f} → {after:.4f}" in body
        assert "needs >= 2%" in body


def test_error_message_carries_the_error(session: Session) -> None:
    _run(session, "run_e", status=RunStatus.FAILED, outcome="error", error_message="DataError: labels contain NaN")
    text, blocks = notifications.decision_message(session, "run_e")
    assert text.startswith(":x:") and "retrain failed" in text
    body = message_text(blocks)
    assert "DataError: labels contain NaN" in body
    assert "*Model*\\nctr" in body
    assert "→" not in body  # no metrics to compare


def test_unknown_run(session: Session) -> None:
    with pytest.raises(NotFound, match="nope"):
        notifications.decision_message(session, "nope")


# --- delivery ----------------------------------------------------------------------------------------

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]


def test_no_webhook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert notifications.send(None, "ctr: decision", BLOCKS, timeout=2) == "logged"
    assert "ctr: decision" in caplog.text


def test_sent_to_a_real_webhook(hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    secret = load_settings(slack_webhook_url=hook.url).slack_webhook_url  # a loopback relay is allowed
    with caplog.at_level(logging.DEBUG):
        assert notifications.send(secret, ":white_check_mark: ctr", BLOCKS, timeout=5) == "sent"
    assert len(hook.bodies) == 1
    assert hook.bodies[0]["text"] == ":white_check_mark: ctr"
    assert hook.bodies[0]["blocks"] == BLOCKS
    assert hook.paths == [f"/services/{SECRET}"]
    assert_no_secret(caplog.text)


@pytest.mark.parametrize("status,error", [(500, SlackTransientError), (503, SlackTransientError),
                                          (429, SlackTransientError), (400, SlackRejected),
                                          (404, SlackRejected)])
def test_failures_are_classified_without_leaking_the_url(hook: Hook, caplog: pytest.LogCaptureFixture,
                                                         status: int, error: type[Exception]) -> None:
    hook.status = status
    with caplog.at_level(logging.DEBUG), pytest.raises(error) as info:
        notifications.send(SecretStr(hook.url), "text", BLOCKS, timeout=5)
    assert str(status) in str(info.value)
    assert len(hook.bodies) == 1
    assert_no_secret(str(info.value), repr(info.value), caplog.text)
    assert info.value.__cause__ is None or SECRET not in str(info.value.__cause__)


@pytest.mark.parametrize("status,error", [(400, SlackRejected), (500, SlackTransientError)])
def test_an_endpoint_echoing_the_url_never_gets_it_into_the_error_or_the_log(
        hook: Hook, caplog: pytest.LogCaptureFixture, status: int, error: type[Exception]) -> None:
    hook.status, hook.echo = status, True
    with caplog.at_level(logging.DEBUG), pytest.raises(error) as info:
        notifications.send(SecretStr(hook.url), "text", BLOCKS, timeout=5)
    assert hook.paths == [f"/services/{SECRET}"]  # the secret did reach the endpoint, which echoed it
    assert str(info.value) in (f"Slack webhook refused the message: {status}", f"Slack webhook answered {status}")
    assert info.value.__cause__ is None
    assert_no_secret(str(info.value), repr(info.value), caplog.text)


def test_unreachable_webhook_is_transient(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/{SECRET}"
    with caplog.at_level(logging.DEBUG), pytest.raises(SlackTransientError) as info:
        notifications.send(SecretStr(url), "text", BLOCKS, timeout=2)
    assert "unreachable" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert_no_secret(str(info.value), repr(info.value), caplog.text)


def test_notify_decision_records_the_delivery(settings: Settings, hook: Hook, caplog: pytest.LogCaptureFixture) -> None:
    url = settings.database_url
    with session_scope(url) as s:
        _run(s, "run_k", status=RunStatus.COMPLETED, outcome="kept",
             metrics={"mae": 0.02}, old_metrics={"mae": 0.0199}, promotion_reason="not enough better")
    with caplog.at_level(logging.DEBUG), session_scope(url) as s:
        assert notifications.notify_decision(s, "run_k", SecretStr(hook.url), timeout=5) == "sent"
        assert notifications.notify_decision(s, "run_k", None, timeout=5) == "logged"
    assert len(hook.bodies) == 1
    assert "production kept" in hook.bodies[0]["text"]
    assert any("0.0199 → 0.0200" in json.dumps(b, ensure_ascii=False) for b in hook.bodies[0]["blocks"])
    with session_scope(url) as s:
        rows = s.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "notification").order_by(SystemEvent.id)).all()
        assert [r.payload["delivery"] for r in rows] == ["sent", "logged"]
        assert all(r.payload["run_id"] == "run_k" and r.model == "ctr" for r in rows)
        assert_no_secret(*(r.message + json.dumps(r.payload) for r in rows))
    assert_no_secret(caplog.text)
    # a failed delivery raises and records nothing
    hook.status = 500
    with session_scope(url) as s, pytest.raises(SlackTransientError):
        notifications.notify_decision(s, "run_k", SecretStr(hook.url), timeout=5)
    with session_scope(url) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SystemEvent)
                        .where(SystemEvent.kind == "notification")) == 2


def test_the_trigger_field_says_who_asked_why_and_whether_it_fine_tuned(session: Session) -> None:
    from retrainer.db.records import Priority, RetrainRequest, RunStatus, TrainingRun, Trigger

    session.add(RetrainRequest(id=7, model="ctr", trigger=Trigger.MANUAL, requested_by="alice", reason="new campaign",
                               priority=Priority.HIGH))
    session.add_all([
        TrainingRun(run_id="r-manual", model="ctr", trigger=Trigger.MANUAL, status=RunStatus.COMPLETED, request_id=7),
        TrainingRun(run_id="r-errors", model="ctr", trigger=Trigger.ERRORS, status=RunStatus.COMPLETED, fine_tune=True),
        TrainingRun(run_id="r-since", model="ctr", trigger=Trigger.ACCURACY, status=RunStatus.COMPLETED,
                    train_since=datetime(2024, 1, 7, 22, 55, tzinfo=UTC)),
    ])
    session.flush()
    assert notifications.trigger_text(session, session.get(TrainingRun, "r-manual")) == "manual by alice: new campaign"
    assert notifications.trigger_text(session, session.get(TrainingRun, "r-errors")) == "errors (fine-tune)"
    assert notifications.trigger_text(session, session.get(TrainingRun, "r-since")) == (
        "accuracy, trained on the rows since it got worse at 2024-01-07 22:55 UTC")
