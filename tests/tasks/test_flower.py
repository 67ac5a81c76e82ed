"""`retrainer flower` against the real Redis with a real worker: a finished retrain read back through
Flower's HTTP API, behind basic auth.

Flower knows tasks only from the workers' task events, which tasks/app.py turns on for every worker
(worker_send_task_events, task_send_sent_event): nothing is enabled here for the test."""

from __future__ import annotations

import base64
import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from retrainer.demo.processes import CeleryProcess, child_env, write_config
from retrainer.tasks.enqueue import send_retrain
from tests.support import make_settings, wait_until
from tests.tasks.helpers import seed_observations

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]

USER, PASSWORD = "ops", "flower-Pw-7f3a"
API_TOKEN = "api-token-never-in-flower"  # a configured secret that must not show in any Flower answer
RETRAINER = [sys.executable, "-m", "retrainer.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, credentials: str | None = None) -> tuple[int, Any]:
    """(status, JSON body or None) of a GET, with basic auth when `credentials` is user:password."""
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (ConnectionError, urllib.error.URLError):  # not listening yet
        return 0, None


def test_flower_shows_a_finished_retrain_and_its_worker(tmp_path: Path, pg_url: str, redis_url: str,
                                                         start_worker, make_celery) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, api_token=API_TOKEN)
    seed_observations(pg_url, 300)
    start_worker(settings, queues="training", concurrency=1)
    app = make_celery(settings)
    (worker_name,) = wait_until(lambda: [name for reply in app.control.ping(timeout=1) for name in reply],
                                timeout=20, what="the worker to answer a ping")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(settings, tmp_path / "flower.yaml")
    env = child_env(config) | {"FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}  # by environment, never argv
    flower = CeleryProcess(["flower", "--port", str(port)], tmp_path / "flower.log", env, cwd=tmp_path,
                           program=RETRAINER)
    try:
        wait_until(lambda: get(f"{base}/api/workers")[0] or not flower.alive(), timeout=30, what="Flower to listen")
        assert flower.alive(), flower.output()[-3000:]
        command_line = Path(f"/proc/{flower.proc.pid}/cmdline").read_bytes().decode()  # what `ps` shows
        assert PASSWORD not in command_line

        assert get(f"{base}/api/workers")[0] == 401  # no credentials
        assert get(f"{base}/api/workers", f"{USER}:wrong")[0] == 401
        # The worker under its own name (the inspect call runs now: refresh=1)
        workers = wait_until(lambda: worker_name in (body := get(f"{base}/api/workers?refresh=1", f"{USER}:{PASSWORD}")[1]
                                                     or {}) and body, timeout=15, what="Flower to list the worker")
        assert "training.retrain_model" in workers[worker_name]["registered"]

        # Flower hears events from the moment it runs: send the retrain only now
        sent = send_retrain("ctr", settings=settings, via=app)
        result = sent.get(timeout=60)
        assert result["status"] == "retrained", result

        task_url = f"{base}/api/task/info/{sent.id}"
        assert get(task_url)[0] == 401
        task = wait_until(lambda: (info := get(task_url, f"{USER}:{PASSWORD}")[1]) and info.get("state") == "SUCCESS"
                          and info, timeout=15, what="Flower to record the task's success")
        assert task["name"] == "training.retrain_model"
        assert task["worker"] == worker_name
        # Arguments readable: the model's name and the request id, as sent (kwargs only)
        assert "'model': 'ctr'" in task["kwargs"] and "'request_id':" in task["kwargs"], task["kwargs"]
        assert task["args"] in ("()", "[]"), task["args"]

        status, listed = get(f"{base}/api/tasks?taskname=training.retrain_model", f"{USER}:{PASSWORD}")
        assert status == 200 and listed[sent.id]["state"] == "SUCCESS"
        # No configured secret in what Flower shows of the tasks and the worker
        shown = json.dumps([listed, task, get(f"{base}/api/workers", f"{USER}:{PASSWORD}")[1]])
        assert API_TOKEN not in shown and PASSWORD not in shown
    finally:
        flower.stop()
