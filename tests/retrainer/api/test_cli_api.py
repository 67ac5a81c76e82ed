"""`retrainer api` as a user runs it: a real uvicorn process answering /healthz and a write with the token
from RETRAINER_API_TOKEN (never in its log); a port in use or a bad configuration is one line on stderr and
a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from retrainer.demo.processes import write_config
from tests.retrainer.api.conftest import TOKEN
from tests.retrainer.test_cli import RETRAINER
from tests.support import make_settings


def _env(config: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")} | {"RETRAINER_CONFIG": str(config)}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serves_healthz_then_refuses_a_port_in_use(tmp_path: Path, sqlite_url: str) -> None:
    from retrainer.db.migrate import upgrade

    upgrade(sqlite_url)
    config = write_config(make_settings(tmp_path, sqlite_url), tmp_path / "retrainer.yaml")
    port = _free_port()
    server = subprocess.Popen([*RETRAINER, "api", "--port", str(port)], cwd=tmp_path,
                              env=_env(config) | {"RETRAINER_API_TOKEN": TOKEN},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, health = time.monotonic() + 30, None
        while health is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    health = (answer.status, json.loads(answer.read()))
            except OSError:
                time.sleep(0.2)
        assert health is not None, f"no answer from `retrainer api` (exit {server.poll()})"
        assert health[0] == 200 and health[1]["status"] in ("ok", "degraded")  # no worker or beat here: degraded, still 200
        ask = urllib.request.Request(f"http://127.0.0.1:{port}/models/retrain", method="POST",
                                     data=json.dumps({"model": "ctr", "reason": "from curl"}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(ask, timeout=10) as answer:
            assert answer.status == 202 and json.loads(answer.read())["status"] == "pending"

        taken = subprocess.run([*RETRAINER, "api", "--port", str(port)], cwd=tmp_path, env=_env(config),
                               capture_output=True, text=True, timeout=60)
        assert taken.returncode == 1
        assert taken.stderr == f"error: cannot serve on 127.0.0.1:{port}: address already in use; pick another --port\n"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=20)
    assert '"POST /models/retrain HTTP/1.1" 202' in out  # uvicorn's access log: method, path, status
    assert TOKEN not in out + err and "Traceback" not in err


def test_a_bad_configuration_is_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "retrainer.yaml"
    config.write_text("broker_url: bogus://x\n")
    done = subprocess.run([*RETRAINER, "api", "--port", str(_free_port())], cwd=tmp_path, env=_env(config),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: invalid configuration: settings: broker_url: unsupported URL scheme 'bogus'; use one of amqp, amqps, "
        "filesystem, pyamqp, redis, rediss, sqs"]
