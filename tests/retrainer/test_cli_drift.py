"""`retrainer drift` and `retrainer drift-report` as a user runs them: real processes on a SQLite file;
a per-feature table, exit 3 without a verdict, and one line (exit 1) for a report or model that does
not exist."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from retrainer.db import session_scope
from retrainer.demo import synthetic
from retrainer.services import predictions
from tests.retrainer.test_cli import RETRAINER, seed
from tests.support import model_config


def test_drift_check_and_reports_from_the_command_line(tmp_path: Path) -> None:
    config = tmp_path / "retrainer.yaml"
    config.write_text(yaml.safe_dump({"var_dir": str(tmp_path / "var"), "models": {"ctr": model_config()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")} | {"RETRAINER_CONFIG": str(config)}
    url = f"sqlite:///{tmp_path / 'var' / 'retrainer.db'}"

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*RETRAINER, *args], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == code, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done

    run("init")
    seed(url, n=1500)
    assert run("retrain", "ctr", "--local").stdout.startswith("retrained")  # its profile: 1,200 training rows

    early = run("drift", "ctr", "--local", code=3)  # nothing served yet: no verdict
    assert "insufficient_data: 0 recent input(s) in the last 24 h, need at least 1000" in early.stdout

    now = datetime.now(UTC)
    with session_scope(url) as session:
        for i, row in enumerate(synthetic.generate(1200, now - timedelta(days=20), now, seed=3)):
            moved = row.features | {"hook_strength": row.features["hook_strength"] + 0.5,
                                    "thumbnail_score": row.features["thumbnail_score"] + 0.5,
                                    "video_length_s": row.features["video_length_s"] + 20}
            predictions.log_prediction(session, "ctr", moved, 0.03, at=now - timedelta(seconds=10 + 30 * i))
    shown = run("drift", "ctr", "--local")
    assert "DRIFT" in shown.stdout and "hook_strength" in shown.stdout
    assert "retrain_needed: Dataset drift: 3 of 5 features drifted (60% >= 50%) over 1200 inputs" in shown.stdout
    assert shown.stdout.rstrip().endswith("[drift report 2]")

    latest = json.loads(run("drift-report", "ctr", "--json").stdout)
    assert (latest["id"], latest["status"], latest["rows"], latest["drifted"]) == (2, "drift_detected", 1200, True)
    assert latest["features"]["hook_strength"]["drifted"] is True
    assert json.loads(run("drift-report", "1", "--json").stdout)["status"] == "insufficient_data"
    assert "drift report 2: ctr against ctr-v1, 1200 recent inputs" in run("drift-report", "2").stdout
    status = json.loads(run("status", "--json").stdout)["models"]["ctr"]["drift"]
    assert (status["report_id"], status["status"], status["drifted_share"]) == (2, "drift_detected", 0.6)

    missing = run("drift-report", "999", code=1)
    assert missing.stderr == "error: drift report 999 not found\n"
    unknown = run("drift-report", "nope", code=1)
    assert unknown.stderr.startswith("error: unknown model 'nope'") and unknown.stderr.count("\n") == 1
