"""`retrainer ingest` as a user runs it: a real process on a SQLite file, a CSV of their own."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.retrainer.test_cli import RETRAINER
from tests.services.builders import churn_csv
from tests.support import model_config

START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    config = tmp_path / "retrainer.yaml"
    config.write_text(yaml.safe_dump({"var_dir": str(tmp_path / "var"),
                                      "models": {"churn": model_config(family="classifier")}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")} | {"RETRAINER_CONFIG": str(config)}

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*RETRAINER, *args], check=False, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == code, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        return done

    run("init")
    return run


def test_ingest_a_csv_then_again_then_retrain_then_reject_bad_rows_by_line(cli: Any, tmp_path: Path) -> None:
    path = churn_csv(tmp_path / "churn.csv", n=240, start=START)
    args = ["ingest", "churn", "--file", str(path), "--label", "churned", "--time", "at", "--id", "customer"]
    first = cli(*args)
    assert first.stdout.strip().startswith("240 stored, 0 already there, 0 rejected of 240 rows; retrain request")
    assert "churn.csv: 240 rows read, 240 stored" in first.stderr  # progress, on stderr
    again = cli(*args, "--no-retrain")
    assert again.stdout.strip() == "0 stored, 240 already there, 0 rejected of 240 rows"
    assert "retrained" in cli("retrain", "churn", "--local").stdout

    later = (START + timedelta(days=12)).isoformat()
    bad = tmp_path / "bad.csv"
    bad.write_text("customer,plan,spend,trial,churned,at\n" + f"n1,pro,1.5,true,0,{later}\n"
                   + "".join(f"b{i},pro,abc,true,0,{later}\n" for i in range(25)))
    done = cli("ingest", "churn", "--file", str(bad), "--label", "churned", "--time", "at", "--id", "customer",
               "--no-retrain", code=1)
    assert done.stdout.strip() == "1 stored, 0 already there, 25 rejected of 26 rows"
    lines = [line for line in done.stderr.splitlines() if line.startswith("line ")]
    assert lines[0] == "line 3: features.spend: expected a number (numeric), got string"
    assert len(lines) == 20 and lines[-1].startswith("line 22: ")
    assert "... and 5 more rejected rows" in done.stderr


def test_ingest_problems_are_one_line_with_exit_1(cli: Any, tmp_path: Path) -> None:
    path = churn_csv(tmp_path / "churn.csv", n=5, start=START)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for args, problem in [
        (["nope", "--file", str(path), "--label", "churned"], "error: unknown model 'nope'; configured models: churn"),
        (["churn", "--file", str(tmp_path / "missing.csv"), "--label", "churned"], "missing.csv: no such file"),
        (["churn", "--file", str(path), "--label", "target"], "no column 'target' (--label); its columns: customer,"),
        (["churn", "--file", str(empty), "--label", "churned"], "empty.csv: the file is empty"),
    ]:
        done = cli("ingest", *args, "--no-retrain", code=1)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
        assert problem in done.stderr
