"""The CLI as a user runs it: a real `retrainer` process per command, on a SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from retrainer.db import session_scope
from retrainer.db.records import Observation
from services import synthetic
from tests.support import model_config

RETRAINER = [sys.executable, "-m", "retrainer.cli"]


@pytest.fixture
def cli(tmp_path: Path):
    config = tmp_path / "retrainer.yaml"
    config.write_text(yaml.safe_dump({"var_dir": str(tmp_path / "var"), "models": {"ctr": model_config()}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")} | {"RETRAINER_CONFIG": str(config)}

    def run(*args: str, ok: bool = True, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*RETRAINER, *args], cwd=tmp_path, env=env | (extra_env or {}), capture_output=True,
                              text=True, timeout=120)
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    run.url = f"sqlite:///{tmp_path / 'var' / 'retrainer.db'}"  # type: ignore[attr-defined]
    return run


def seed(url: str, n: int = 400, drift: bool = False) -> None:
    now = datetime.now(UTC)
    rows = synthetic.generate(n, now - timedelta(days=20), now, seed=11 if drift else 5,
                              drift_from=now - timedelta(days=20) if drift else None)
    with session_scope(url) as s:
        s.add_all([Observation(model="ctr", features=r.features, label=r.label, event_time=r.event_time,
                               source="test") for r in rows])


def test_init_is_idempotent(cli) -> None:
    assert "revision 0001" in cli("init").stdout
    assert "revision 0001" in cli("init").stdout


def test_local_retrain_status_history_versions_promote_rollback(cli) -> None:
    cli("init")
    seed(cli.url)
    first = json.loads(cli("retrain", "ctr", "--local", "--json").stdout)
    assert first["status"] == "retrained" and first["version_id"] == "ctr-v1"
    assert set(first["metrics"]) >= {"test_mae", "test_rmse", "test_r2", "test_accuracy"}

    seed(cli.url, drift=True)
    second = json.loads(cli("retrain", "ctr", "--local", "--json").stdout)
    assert second["status"] in ("retrained", "kept") and second["old_metrics"] is not None

    versions = json.loads(cli("versions", "ctr", "--json").stdout)
    assert versions["count"] == 2
    assert {v["version_id"] for v in versions["versions"]} == {"ctr-v1", "ctr-v2"}
    history = json.loads(cli("history", "ctr", "--json").stdout)
    assert history["count"] == 2 and history["training_runs"][0]["model_version_id"] == "ctr-v2"
    status = json.loads(cli("status", "--json").stdout)["models"]["ctr"]
    assert status["production"]["version_id"] == ("ctr-v2" if second["status"] == "retrained" else "ctr-v1")

    target = "ctr-v1" if status["production"]["version_id"] == "ctr-v2" else "ctr-v2"
    promoted = json.loads(cli("promote", target).stdout)
    assert promoted == {"status": "success", "message": f"Model {target} promoted to production", "version_id": target}
    rolled = json.loads(cli("rollback", "ctr").stdout)
    assert rolled["version_id"] != target
    assert json.loads(cli("status", "--json").stdout)["models"]["ctr"]["production"]["version_id"] == rolled["version_id"]


def test_predict_outcome_and_local_check(cli) -> None:
    cli("init")
    seed(cli.url)
    cli("retrain", "ctr", "--local")
    features = json.dumps(synthetic.generate(1, datetime.now(UTC), datetime.now(UTC))[0].features)
    made = json.loads(cli("predict", "ctr", "--features", features, "--hook-type", "question").stdout)
    assert made["version_id"] == "ctr-v1" and 0 < made["predicted"] < 0.5
    done = json.loads(cli("outcome", made["prediction_id"], str(made["predicted"] + 0.05)).stdout)
    assert done["status"] == "completed" and done["error"] == pytest.approx(0.05)
    check = json.loads(cli("check", "ctr", "--local", "--json").stdout)
    assert check["status"] == "insufficient_data" and check["current_accuracy"]["total_predictions"] == 1


def test_errors_name_the_problem(cli) -> None:
    cli("init")
    unknown = cli("retrain", "nope", "--local", ok=False)
    assert unknown.returncode == 1 and "unknown model 'nope'" in unknown.stderr
    missing = cli("promote", "ctr-v99", ok=False)
    assert missing.returncode == 1 and "ctr-v99" in missing.stderr
    no_prod = cli("rollback", "ctr", ok=False)
    assert no_prod.returncode == 1 and "no production version" in no_prod.stderr
    bad = cli("status", ok=False, extra_env={"RETRAINER_MODELS__CTR__ACCURACY__MAE_THRESHOLD": "-1"})
    assert bad.returncode == 2 and "models.ctr.accuracy.mae_threshold" in bad.stderr
    nan = cli("event", "purchase", "ctr", "--features", '{"a": NaN}', "--value", "0.1", ok=False)
    assert nan.returncode == 1 and "not a finite number" in nan.stderr


def test_event_file_uses_the_batch_path(cli, tmp_path: Path) -> None:
    cli("init")
    now = datetime.now(UTC)
    events = synthetic.as_purchase_events(synthetic.generate(120, now - timedelta(hours=1), now), "ctr", "file")
    lines = [json.dumps(e) for e in events] + ["{not json", json.dumps({"type": "purchase", "model": "nope",
                                                                         "features": {"a": 1}, "value": 1})]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = cli("event", "--file", str(path), ok=False)
    assert done.returncode == 1  # two rejected lines
    out = json.loads(done.stdout)
    assert out["stored"] == 120 and out["retrains_enqueued"] == 1
    assert [r["index"] for r in out["rejected"]] == [120, 121]
    with session_scope(cli.url) as s:
        assert s.query(Observation).filter(Observation.event_id.like("file-%")).count() == 120
