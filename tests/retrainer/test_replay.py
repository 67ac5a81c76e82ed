"""`retrainer replay`: a labelled CSV through the real loop (a real worker, checks in simulated time),
scored beside a model never retrained and periodic retraining; and its parts on their own."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from retrainer.config import ModelConfig
from retrainer.config.triggers import Schedules
from retrainer.models.base import Live
from retrainer.replay import baselines
from retrainer.replay.beat import SimulatedBeat
from retrainer.replay.stream import ReplayInputError, read
from tests.retrainer.test_cli import RETRAINER
from tests.support import RUN_ID

START = datetime(2024, 1, 1, tzinfo=UTC)


def sea_csv(path: Path, rows: int, change: int, seed: int = 0, time: bool = True) -> Path:
    """SEA-like rows (Street & Kim 2001): x1, x2, x3 uniform on [0, 10], label x1 + x2 <= theta with 5 %
    label noise; theta is 8, then 12 from row `change` on (an abrupt concept change: a third of the
    rows change class). A row a minute."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, (rows, 3))
    y = (x[:, 0] + x[:, 1] <= np.where(np.arange(rows) < change, 8.0, 12.0)).astype(int)
    y = np.where(rng.random(rows) < 0.05, 1 - y, y)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["x1", "x2", "x3", "y", *(["at"] if time else [])])
        for i in range(rows):
            at = [(START + timedelta(minutes=i)).isoformat()] if time else []
            out.writerow([f"{x[i, 0]:.4f}", f"{x[i, 1]:.4f}", f"{x[i, 2]:.4f}", y[i], *at])
    return path


def replay(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAINER_", "CELERY_"))}
    return subprocess.run([*RETRAINER, "replay", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


SHAPE = {"rows", "metric", "score", "retrains", "promotions", "rollbacks", "baselines", "seconds"}


@pytest.mark.worker
def test_a_concept_change_is_caught_retrained_and_beats_a_model_never_retrained(tmp_path: Path) -> None:
    csv_path = sea_csv(tmp_path / "sea.csv", rows=3000, change=1500)
    var = tmp_path / "var"
    done = replay("--csv", str(csv_path), "--label", "y", "--time", "at", "--family", "classifier",
                  "--warmup", "500", "--json", "--var-dir", str(var), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert SHAPE <= set(report)
    assert report["rows"] == 2500 and report["metric"] == "accuracy"
    assert set(report["baselines"]) == {"never", "periodic"}
    for baseline in report["baselines"].values():
        assert {"score", "retrains"} <= set(baseline)
    assert report["baselines"]["periodic"]["retrains"] == 2  # at 1,000 and 2,000 replayed rows
    # the live accuracy check saw the change (replayed row 1,000) and a retrain after it went to production
    assert any(key.startswith("accuracy:") for key in report["runs"])
    assert any(e["action"] == "promote" and e["row"] >= 1000 for e in report["events"])
    assert report["retrains"] >= 1
    assert report["score"] > report["baselines"]["never"]["score"]
    # the figures are the database's: the worker's runs, in simulated time
    engine = sa.create_engine(f"sqlite:///{var / 'retrainer.db'}")
    with engine.connect() as conn:
        fitted = conn.scalar(sa.text("select count(*) from training_runs where version_id is not null"))
        started = conn.scalars(sa.text("select started_at from training_runs order by started_at")).all()
    engine.dispose()
    assert fitted == report["retrains"] + 1  # the warm-up's first version besides
    assert all(str(t).startswith("2024-01-0") for t in started)  # the worker read the simulated clock
    assert "replay: " in done.stderr and "rows" in done.stderr  # progress, on stderr


@pytest.mark.worker
@pytest.mark.redis
@pytest.mark.postgres
def test_replay_runs_on_postgresql_and_redis_from_a_config_file(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    config = tmp_path / "retrainer.yaml"
    config.write_text(yaml.safe_dump({"database_url": pg_url, "broker_url": redis_url, "result_backend": redis_url,
                                      "redis_key_prefix": f"rt-{RUN_ID}-replay", "models": {}}))
    csv_path = sea_csv(tmp_path / "sea.csv", rows=1500, change=1000, time=False)
    done = replay("--csv", str(csv_path), "--label", "y", "--family", "classifier", "--warmup", "500",
                  "--config", str(config), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["rows"] == 1000 and SHAPE <= set(report)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        runs = conn.scalar(sa.text("select count(*) from training_runs where model = 'replay'"))
        outcomes = conn.scalar(sa.text("select count(*) from prediction_records where model = 'replay' "
                                       "and status = 'completed'"))
    engine.dispose()
    assert runs >= 1 and outcomes == 1000
    again = replay("--csv", str(csv_path), "--label", "y", "--family", "classifier", "--warmup", "500",
                   "--config", str(config), cwd=tmp_path)  # the model's rows are there: refused, nothing touched
    assert again.returncode == 1 and "already holds rows of model 'replay'" in again.stderr


def _bad(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    good = sea_csv(tmp_path / "sea.csv", rows=300, change=300)
    text = tmp_path / "text.csv"
    text.write_text("a,b,y\n1,2,3.5\n2,3,high\n")  # a regressor's label: a number on every line
    fraction = tmp_path / "fraction.csv"
    fraction.write_text("a,y\n1,0\n2,0.5\n")
    when = tmp_path / "when.csv"
    when.write_text("a,y,at\n1,0,2024-01-01T00:00:00Z\n2,1,yesterday\n")
    common = ["--label", "y", "--family", "classifier"]
    return {
        "missing file": (["--csv", str(tmp_path / "nope.csv"), *common], "nope.csv: no such file"),
        "unknown label": (["--csv", str(good), "--label", "z", "--family", "classifier"],
                          "no column 'z' (--label); its columns: x1, x2, x3, y, at"),
        "unknown time": ([*common, "--csv", str(good), "--time", "when"], "no column 'when' (--time)"),
        "text label, regressor": (["--csv", str(text), "--label", "y", "--family", "regressor"],
                                  "line 3: label 'y' is 'high'; a regressor's label is a number"),
        "fractional class": (["--csv", str(fraction), *common], "line 3: label 'y' is '0.5'; a classifier's labels"),
        "too few rows": (["--csv", str(good), *common, "--time", "at"], "300 rows; --warmup 1000 needs more"),
        "unknown family": (["--csv", str(good), "--label", "y", "--family", "prophecy"], "unknown model family 'prophecy'"),
        "bad time": (["--csv", str(when), *common, "--time", "at"], "line 3: time 'at' is 'yesterday'"),
    }


@pytest.mark.parametrize("case", ["missing file", "unknown label", "unknown time", "text label, regressor",
                                  "fractional class", "too few rows", "unknown family", "bad time"])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path: Path, case: str) -> None:
    args, expected = _bad(tmp_path)[case]
    done = replay(*args, cwd=tmp_path, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0]


# --- the parts --------------------------------------------------------------------------------------

def test_a_stream_is_typed_by_column_and_put_in_time_order(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("n,flag,plan,y,at\n"
                    "1.5,true,pro,1,2024-01-01T00:02:00Z\n"
                    "2,false,free,0,2024-01-01T00:00:00Z\n"
                    "3,TRUE,pro,true,2024-01-01T00:01:00Z\n")
    stream = read(path, "y", "at", Live.CLASSIFICATION, START, timedelta(minutes=1))
    assert stream.features["n"].tolist() == [2.0, 3.0, 1.5]
    assert stream.features["flag"].tolist() == [False, True, True]
    assert stream.features["plan"].tolist() == ["free", "pro", "pro"]
    assert stream.labels.tolist() == [0.0, 1.0, 1.0]
    assert stream.records()[0] == {"n": 2.0, "flag": False, "plan": "free"}
    untimed = read(path, "y", None, Live.CLASSIFICATION, START, timedelta(minutes=5))
    assert list(untimed.times) == [START + timedelta(minutes=5 * i) for i in range(3)]
    with pytest.raises(ReplayInputError, match="line 3: column 'plan' is empty"):
        path.write_text("plan,y\npro,1\n,0\n")
        read(path, "y", None, Live.CLASSIFICATION, START, timedelta(minutes=1))


def test_simulated_beat_runs_each_schedule_at_its_own_times() -> None:
    probation = "probation" in Schedules.model_fields  # the probation check's schedule, where it exists
    schedules = {"check": "0 * * * *", "drift": "15 * * * *", "new_data": None, "retrain": None, "errors": None,
                 "monitor": None} | ({"probation": "@every 10m"} if probation else {})
    beat = SimulatedBeat(ModelConfig(family="classifier", schedules=schedules), datetime(2024, 1, 1, 8, 29, tzinfo=UTC))
    seen = []
    while (due := beat.next_due()) is not None and due <= datetime(2024, 1, 1, 9, 20, tzinfo=UTC):
        seen.append((f"{due:%H:%M}", beat.pop_due(due)))
    expected = [("08:39", ["probation"]), ("08:49", ["probation"]), ("08:59", ["probation"]), ("09:00", ["check"]),
                ("09:09", ["probation"]), ("09:15", ["drift"]), ("09:19", ["probation"])]
    assert seen == (expected if probation else [e for e in expected if e[1] != ["probation"]])


def test_the_baselines_refit_on_their_own_schedule_and_score_prequentially(tmp_path: Path) -> None:
    stream = read(sea_csv(tmp_path / "sea.csv", rows=2600, change=1300), "y", "at", Live.CLASSIFICATION, START,
                  timedelta(minutes=1))
    params = {"n_estimators": 20, "max_depth": 3}
    never = baselines.never(stream, "classifier", params, warmup=500)
    periodic = baselines.periodic(stream, "classifier", params, warmup=500, every_rows=500, max_rows=1000)
    assert len(never.predicted) == len(periodic.predicted) == 2100
    assert (never.retrains, periodic.retrains) == (0, 4)  # at 1000, 1500, 2000, 2500
    labels = stream.labels[500:]
    before, after = slice(0, 800), slice(800, None)  # the change is at replayed row 800
    assert baselines.score("accuracy", labels[before], never.predicted[before]) > 0.85
    assert (baselines.score("accuracy", labels[after], periodic.predicted[after])
            > baselines.score("accuracy", labels[after], never.predicted[after]) + 0.1)
    assert baselines.score("mae", np.array([1.0, 2.0]), np.array([1.5, 1.0])) == 0.75


def test_a_model_defined_in_the_config_file_keeps_its_own_settings(tmp_path: Path) -> None:
    """--config may define the model fully; a --family that contradicts it is refused before anything runs."""
    config = tmp_path / "retrainer.yaml"
    config.write_text(yaml.safe_dump({"var_dir": str(tmp_path / "cfg-var"),
                                      "models": {"churn": {"family": "regressor"}}}))
    csv_path = sea_csv(tmp_path / "sea.csv", rows=600, change=600)
    done = replay("--csv", str(csv_path), "--label", "y", "--family", "classifier", "--model", "churn",
                  "--config", str(config), cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: --family classifier: model 'churn' in --config is of family 'regressor'"
