"""`retrainer demo` end to end: real worker and beat children on the embedded default, in a shell that
points everything at production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
import yaml

from retrainer.db import session_scope
from retrainer.db.records import SystemEvent

PASSWORD = "prod-s3cret"


def production_shell(tmp_path: Path, work: Path) -> dict[str, str]:
    """An environment and a working directory whose every setting names a production server or place
    (unreachable here, so a demo that used one would fail) and a file that must never appear."""
    prod = tmp_path / "prod"
    prod.mkdir()
    (prod / "retrainer.yaml").write_text(yaml.safe_dump({
        "var_dir": str(prod / "config-var"), "database_url": f"sqlite:///{prod / 'config.db'}",
        "broker_url": "redis://127.0.0.1:1/5"}))
    (work / "retrainer.yaml").write_text(yaml.safe_dump({  # a production file in the working directory
        "var_dir": str(prod / "cwd-var"), "database_url": f"sqlite:///{prod / 'cwd.db'}"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAINER_", "CELERY_"))}
    return env | {
        "RETRAINER_CONFIG": str(prod / "retrainer.yaml"),
        "RETRAINER_DATABASE_URL": f"postgresql+psycopg://retrainer:{PASSWORD}@127.0.0.1:1/retrainer",
        "RETRAINER_BROKER_URL": f"redis://:{PASSWORD}@127.0.0.1:1/0",
        "RETRAINER_RESULT_BACKEND": f"redis://:{PASSWORD}@127.0.0.1:1/1",
        "RETRAINER_VAR_DIR": str(prod / "env-var"),
        "RETRAINER_ARTIFACT_DIR": str(prod / "env-artifacts"),
        "RETRAINER_SLACK_WEBHOOK_URL": "http://127.0.0.1:1/production-channel",
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/2",  # Celery itself prefers these to its configuration
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:1/3",
    }


def test_demo_runs_the_whole_loop_on_its_own_settings_and_leaves_no_process(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = production_shell(tmp_path, work)
    done = subprocess.run([sys.executable, "-m", "retrainer.cli", "demo"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "ctr-v1: retrained — First model" in out
    assert "above threshold" in out  # the replayed drift pushed live MAE over 0.02
    assert "(trigger: accuracy)" in out and "same holdout rows for both: yes" in out
    assert "decision: PROMOTED — New model is" in out
    assert "540/540 events stored, 0 lost" in out
    assert "events inside the debounce window -> 1 retrain" in out
    # a second family on the user's own CSV: inferred schema with a categorical, bad lines refused by line
    assert "worker trained churn-v1 on 1500 rows; schema recorded: plan categorical" in out  # deploy: refit, every row
    assert "line 8: features.seats: expected a number" in out and "2 rejected of 400 rows" in out
    assert "(new_samples):" in out and "by plan (segment): basic" in out
    assert "demo finished" in out
    assert processes_in(tmp_path) == []

    # nothing outside var/demo was touched: no production file, folder or database appeared
    assert sorted(p.name for p in (tmp_path / "prod").iterdir()) == ["retrainer.yaml"]
    assert sorted(p.name for p in work.iterdir()) == ["retrainer.yaml", "var"]
    assert [p.name for p in (work / "var").iterdir()] == ["demo"]
    demo = work / "var" / "demo"
    assert {"retrainer.db", "celery-results.db", "artifacts", "broker", "worker.log", "beat.log"} <= {
        p.name for p in demo.iterdir()}
    logs = (demo / "worker.log").read_text() + (demo / "beat.log").read_text()
    assert "127.0.0.1:1" not in logs + done.stderr and "filesystem://" in logs
    with session_scope(f"sqlite:///{demo / 'retrainer.db'}") as s:  # decisions were logged, never posted
        deliveries = {e.payload["delivery"] for e in s.scalars(sa.select(SystemEvent).filter_by(kind="notification"))}
    assert deliveries == {"logged"}


def processes_in(folder: Path) -> list[str]:
    """Processes whose working directory is `folder` (the demo starts its children there)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd").startswith(str(folder)):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {command[:120]}")
        except OSError:  # gone, or not ours to read
            continue
    return found


def test_a_child_process_config_keeps_the_secrets_themselves(tmp_path: Path) -> None:
    """write_config (the retrainer.yaml a worker or the API reads) writes each secret, not pydantic's
    mask: a masked API token would make '**********' the token a child accepts."""
    from retrainer.config import load_settings
    from retrainer.demo.processes import write_config
    from tests.support import make_settings

    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", api_token="t0ken-xyz",
                             slack_webhook_url="https://hooks.slack.com/services/T/B/x")
    data = yaml.safe_load(write_config(settings, tmp_path / "child.yaml").read_text())
    again = load_settings(**data)
    assert again.api_token.get_secret_value() == "t0ken-xyz"
    assert again.slack_webhook_url.get_secret_value() == "https://hooks.slack.com/services/T/B/x"
