"""`retrainer up` as a user runs it: one command brings up a real worker, beat and API on the embedded
default; a retrain asked over HTTP is run by that worker; Ctrl-C stops everything and leaves no process.
A port in use is one line and nothing started."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from retrainer.demo.processes import write_config
from tests.retrainer.api.conftest import AUTH, TOKEN
from tests.retrainer.api.test_cli_api import _env, _free_port
from tests.retrainer.test_cli import RETRAINER
from tests.retrainer.test_demo import processes_in
from tests.support import make_settings
from tests.tasks.helpers import seed_observations


def _get(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status, json.loads(answer.read())


def _until(what: str, predicate: Any, up: subprocess.Popen, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert up.poll() is None, f"`retrainer up` exited with {up.returncode} while waiting for {what}"
        try:
            if value := predicate():
                return value
        except OSError:  # not listening yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie is dead, only unreaped
    except OSError:
        return False


def test_up_runs_worker_beat_and_api_and_stops_clean_on_ctrl_c(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(make_settings(tmp_path, sqlite_url), tmp_path / "retrainer.yaml")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    up = subprocess.Popen([*RETRAINER, "up", "--port", str(port)], cwd=tmp_path,
                          env=_env(config) | {"RETRAINER_API_TOKEN": TOKEN},
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def healthy() -> dict[str, Any] | None:  # workers seen and beat's schedule file written
            code, body = _get(f"{base}/healthz")
            return body if code == 200 and body["status"] == "ok" else None

        health = _until("status ok at /healthz", healthy, up, 45)
        assert health["queues_without_worker"] == [] and health["beat"] == "ok"
        assert health["workers"] == [f"training-events-checks-notifications@{socket.gethostname()}"]

        seed_observations(sqlite_url, 300)  # `up` migrated the database: the rows go straight in
        ask = urllib.request.Request(f"{base}/models/retrain", method="POST",
                                     data=json.dumps({"model": "ctr", "reason": "from retrainer up"}).encode(),
                                     headers=AUTH | {"Content-Type": "application/json"})
        with urllib.request.urlopen(ask, timeout=10) as answer:
            assert answer.status == 202
            request_id = json.loads(answer.read())["request_id"]

        def finished() -> dict[str, Any] | None:
            rows = _get(f"{base}/requests?model=ctr")[1]["requests"]
            done = [r for r in rows if r["id"] == request_id and r["status"] not in ("pending", "processing")]
            return done[0] if done else None

        request = _until("finished retrain request", finished, up, 60)
        assert request["status"] == "completed" and request["run_outcome"] in ("retrained", "kept"), request
        history = _get(f"{base}/models/training-history?model=ctr")[1]["training_runs"]
        assert [run["run_id"] for run in history] == [request["run_id"]] and history[0]["status"] == "completed"
    finally:
        up.send_signal(signal.SIGINT)
        try:
            out, err = up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            out, err = up.communicate()
            raise AssertionError(f"`retrainer up` did not stop within 30 s after SIGINT:\n{out}\n{err}") from None

    assert up.returncode == 0, out + err
    pids = {role: int(pid) for role, pid in re.findall(r"^(worker|beat|api)\s+pid (\d+)", out, re.M)}
    assert set(pids) == {"worker", "beat", "api"}, out
    assert [role for role, pid in pids.items() if _alive(pid)] == []
    assert processes_in(tmp_path) == []  # nor any worker pool process
    assert f"{base}/docs" in out and "SIGINT: stopping api, beat, worker" in out
    assert f"dashboard: {base}/dashboard  (its buttons ask for your RETRAINER_API_TOKEN once)" in out
    assert "#token=" not in out and TOKEN not in out + err  # a configured token is never shown
    assert "Traceback" not in err
    logs = tmp_path / "var" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["api.log", "beat.log", "worker.log"]
    assert "POST /models/retrain HTTP/1.1\" 202" in (logs / "api.log").read_text()


def test_a_port_in_use_is_one_line_and_starts_nothing(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(make_settings(tmp_path, sqlite_url), tmp_path / "retrainer.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*RETRAINER, "up", "--port", str(port)], cwd=tmp_path, env=_env(config),
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"error: cannot serve on 127.0.0.1:{port}: address already in use; pick another --port\n"
    assert done.stdout == ""
    assert not (tmp_path / "var" / "logs").exists() and not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    assert processes_in(tmp_path) == []


def test_a_child_that_dies_stops_the_others_and_exits_1(tmp_path: Path, sqlite_url: str) -> None:
    """Supervision is simple on purpose: no restart; the dead child is named with its exit and its log."""
    config = write_config(make_settings(tmp_path, sqlite_url), tmp_path / "retrainer.yaml")
    port = _free_port()
    up = subprocess.Popen([*RETRAINER, "up", "--port", str(port)], cwd=tmp_path, env=_env(config),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _until("the API", lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, up, 45)
        # No RETRAINER_API_TOKEN: `up` made one for this run and shows it once, in the dashboard link's fragment
        link = next(line for line in iter(up.stdout.readline, "") if line.startswith("dashboard: "))
        assert link.startswith(f"dashboard: http://127.0.0.1:{port}/dashboard#token=")
        token = link.split("#token=", 1)[1].strip()
        pause = urllib.request.Request(f"http://127.0.0.1:{port}/retraining/stop", method="POST", data=b"{}",
                                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(pause, timeout=10) as answer:
            assert answer.status == 200 and json.loads(answer.read())["status"] == "paused"
        assert token not in (tmp_path / "var" / "logs" / "api.log").read_text()
        (beat,) = [int(line.split(":")[0]) for line in processes_in(tmp_path) if " beat -s " in line]
        os.kill(beat, signal.SIGKILL)
        out, err = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=30)
    assert up.returncode == 1
    lines = err.splitlines()
    assert f"error: beat (pid {beat}) exited with signal SIGKILL; the last lines of {tmp_path}/var/logs/beat.log:" in lines, err
    assert lines[-1] == "error: stopped the others; fix the cause and run `retrainer up` again"
    assert processes_in(tmp_path) == []
