"""notifications.notify_decision on a real worker against a real local HTTP server standing in for the
Slack incoming webhook: transient failures are retried with backoff, a refusal is not, the decision
is committed before any of it, and the webhook URL (a secret) is never logged or stored, even when
the endpoint echoes it back in its error responses."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from retrainer.db import session_scope
from retrainer.db.records import ModelVersion, RunStatus, SystemEvent, TrainingRun
from retrainer.tasks.enqueue import send_retrain
from tests.support import make_settings, wait_until
from tests.tasks.helpers import rows, seed_observations

pytestmark = [pytest.mark.worker, pytest.mark.redis]

TOKEN = "SECRET-TOKEN"


class FakeSlack:
    """Answers each POST with the next status of `statuses` (the last one repeats) and records it,
    along with what the database held at that very moment (via `on_request`). An error's body echoes
    the request path and URL, token included, as some relays and proxies do."""

    def __init__(self, statuses: list[int]):
        self.statuses = statuses
        self.requests: list[dict[str, Any]] = []
        self.on_request = lambda: None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = fake.statuses[min(len(fake.requests), len(fake.statuses) - 1)]
                fake.requests.append({"path": self.path, "body": json.loads(body), "status": status,
                                      "seen": fake.on_request()})
                url = f"http://{self.headers['Host']}{self.path}"
                reply = b"ok" if status == 200 else f"invalid_token: POST {self.path} ({url})".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/{TOKEN}"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    slack = FakeSlack([500, 200, 403])
    slack.thread.start()
    yield slack
    slack.server.shutdown()
    slack.server.server_close()


def test_slack_outage_is_retried_and_the_secret_never_leaks(
    tmp_path: Path, sqlite_db: str, redis_url: str, start_worker, make_celery, fake_slack: FakeSlack
) -> None:
    settings = make_settings(tmp_path, sqlite_db, broker_url=redis_url, slack_webhook_url=fake_slack.url)
    seed_observations(sqlite_db, 600)

    def committed() -> dict[str, Any]:
        with session_scope(sqlite_db) as session:
            runs = session.query(TrainingRun).all()
            return {
                "runs": [(r.run_id, r.status, r.outcome) for r in runs],
                "production": [v.version_id for v in session.query(ModelVersion).filter(ModelVersion.is_production)],
                "notifications": session.query(SystemEvent).filter(SystemEvent.kind == "notification").count(),
            }

    fake_slack.on_request = committed
    app = make_celery(settings)
    worker = start_worker(settings, queues="training,notifications", concurrency=1)

    result = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert result["status"] == "retrained"
    run_id = result["run_id"]

    # Slack fails first (500): the task retries with backoff (5 s base, jitter) and then gets through
    wait_until(lambda: len(fake_slack.requests) >= 2, timeout=45, what="the retried Slack post")
    failed, delivered = fake_slack.requests[:2]
    assert (failed["status"], delivered["status"]) == (500, 200)
    assert failed["path"] == delivered["path"] == f"/services/{TOKEN}"
    # the decision was committed before Slack was ever called, and stayed while Slack was down
    assert failed["seen"] == {"runs": [(run_id, RunStatus.COMPLETED, "retrained")], "production": ["ctr-v1"],
                              "notifications": 0}
    assert failed["body"] == delivered["body"]

    body = delivered["body"]
    assert "ctr-v1 promoted to production" in body["text"]
    blocks = body["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"] == {"type": "plain_text", "text": "ctr: ctr-v1 promoted to production"}
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert f"*Run*\n{run_id}" in fields and "*Trigger*\nmanual" in fields
    assert any(b["type"] == "context" and "First model" in b["elements"][0]["text"] for b in blocks)

    (note,) = wait_until(lambda: rows(sqlite_db, SystemEvent, SystemEvent.kind == "notification"), timeout=30,
                         what="the notification row")
    assert note.payload == {"run_id": run_id, "channel": "slack", "delivery": "sent"}
    assert "SlackTransientError" in worker.output()  # the 500 went through Celery's retry

    # a refusal (4xx) is final: the task fails once, without retrying, and still names no secret
    second = send_retrain("ctr", settings=settings, via=app).get(timeout=120)
    assert second["status"] in ("retrained", "kept")
    wait_until(lambda: "SlackRejected" in worker.output(), timeout=30, what="the refused post to be logged")
    assert [r["status"] for r in fake_slack.requests] == [500, 200, 403]
    assert len(rows(sqlite_db, SystemEvent, SystemEvent.kind == "notification")) == 1
    # ... and recorded as undelivered, so `status` shows it
    (lost,) = wait_until(lambda: rows(sqlite_db, SystemEvent, SystemEvent.kind == "notification_failed"),
                         timeout=30, what="the undelivered notification's row")
    assert lost.payload["run_id"] == second["run_id"] and lost.model == "ctr"
    assert lost.message.endswith("SlackRejected: Slack webhook refused the message: 403")

    log = worker.output()
    assert "Slack webhook refused the message: 403" in log  # logged, without the echoed body
    assert TOKEN not in log
    assert fake_slack.url.split("/services/")[0] not in log  # not even the host and port
    everything = [(e.kind, e.message, json.dumps(e.payload)) for e in rows(sqlite_db, SystemEvent)]
    assert everything  # triggers, decisions, the notification
    assert not [e for e in everything if TOKEN in "".join(e)]
    assert not [r for r in rows(sqlite_db, TrainingRun) if TOKEN in (r.error_message or "")]
    assert worker.alive()
