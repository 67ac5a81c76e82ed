"""The promotion rules in the real pipeline (services/retrain.py + services/policy.py): the holdout after
the champion's training rows, enough new rows, enough evidence, beating a constant, the cooldown, the
decision record and the paired test stored, and refitting what gets deployed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from retrainer.config import ModelConfig, Settings
from retrainer.db import session_scope
from retrainer.db.migrate import upgrade
from retrainer.db.records import ModelEvaluation, ModelVersion, Observation, TrainingRun, Trigger
from retrainer.services import registry, retrain
from tests.services.builders import END, seed
from tests.support import make_settings, model_config

LATER = END + timedelta(days=30)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'rules.db'}"
    upgrade(url)
    return url


def settings_with(tmp_path: Path, url: str, **cfg: Any) -> Settings:
    return make_settings(tmp_path, url, models={"ctr": model_config(**cfg)})


def run(settings: Settings, trigger: Trigger = Trigger.MANUAL) -> dict[str, Any]:
    with session_scope(settings.database_url) as s:
        return retrain.retrain(s, settings, "ctr", trigger=trigger)


def add(settings: Settings, n: int, **kwargs: Any) -> None:
    with session_scope(settings.database_url) as s:
        seed(s, n=n, **kwargs)


def production(settings: Settings) -> str | None:
    with session_scope(settings.database_url) as s:
        current = registry.production(s, "ctr")
        return current.version_id if current else None


def test_the_holdout_holds_only_rows_newer_than_the_champions_training(tmp_path: Path, db_url: str) -> None:
    # the champion was trained on 90 % of 300 rows (rows 0-269)
    add(make_settings(tmp_path, db_url), 300)
    first = run(settings_with(tmp_path, db_url, training={"test_fraction": 0.1, "min_new_rows": 0}))
    assert first["status"] == "retrained" and first["samples"] == 270
    # 30 new rows arrive; a 20 % share of 330 would start at row 264, six of the champion's training rows
    settings = settings_with(tmp_path, db_url)
    add(settings, 30, start=END, end=END + timedelta(days=3), seed=9, prefix="new")
    second = run(settings)
    assert second["holdout"]["rows"] == 60  # rows 270-329 only: nothing the champion was trained on
    with session_scope(settings.database_url) as s:
        v1 = registry.get(s, "ctr-v1")
        assert v1.training_last_row_id is not None
        holdout_start = s.scalar(sa.select(ModelEvaluation.holdout_start).where(
            ModelEvaluation.run_id == second["run_id"], ModelEvaluation.role == "champion"))
        assert holdout_start.replace(tzinfo=None) > v1.training_window_end.replace(tzinfo=None)
        evaluation = s.scalar(sa.select(ModelEvaluation).where(ModelEvaluation.run_id == second["run_id"],
                                                              ModelEvaluation.role == "candidate"))
        assert evaluation.test["reference"] == "champion" and evaluation.test["rows"] == 60
        assert evaluation.test["lower_pct"] <= evaluation.test["point_pct"] <= evaluation.test["upper_pct"]
        run_row = s.get(TrainingRun, second["run_id"])
        assert run_row.decision["summary"] == second["reason"]
        assert {r["rule"] for r in run_row.decision["rules"]} >= {"evidence", "improvement", "significance"}


def test_an_automatic_retrain_needs_new_rows_and_a_person_s_does_not(tmp_path: Path, sqlite_db: str) -> None:
    settings = settings_with(tmp_path, sqlite_db, training={"min_new_rows": 100})
    add(settings, 300)
    assert run(settings, Trigger.SCHEDULE)["status"] == "retrained"  # the first run has nothing to compare with
    add(settings, 40, start=END, end=END + timedelta(days=2), seed=9, prefix="few")
    again = run(settings, Trigger.EVENT)
    assert again["status"] == "no_new_data", again
    assert "40 labelled rows newer than the last run's data" in again["message"]
    assert "training.min_new_rows" in again["message"]
    with session_scope(settings.database_url) as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ModelVersion)) == 1  # nothing fitted
        assert s.get(TrainingRun, again["run_id"]).outcome == "no_new_data"
    assert run(settings, Trigger.MANUAL)["status"] in ("retrained", "kept")  # a person asked: it runs
    add(settings, 120, start=END + timedelta(days=2), end=END + timedelta(days=6), seed=10, prefix="more")
    assert run(settings, Trigger.EVENT)["status"] in ("retrained", "kept")


def test_a_better_candidate_on_a_small_holdout_is_kept_for_want_of_evidence(tmp_path: Path, sqlite_db: str) -> None:
    settings = settings_with(tmp_path, sqlite_db, promotion={"min_holdout_rows": 200, "cooldown_hours": 0})
    add(settings, 300)
    assert run(settings)["status"] == "retrained"  # the first model: no minimum, it must beat a constant
    add(settings, 300, start=END, end=LATER, drift_from=END, seed=8, prefix="drift")
    result = run(settings)
    assert result["status"] == "kept", result
    assert result["improvement"]["percentage"] > 20  # truly better after the drift ...
    assert "automatic promotion needs >= 200 (promotion.min_holdout_rows)" in result["reason"]  # ... but 120 rows
    assert production(settings) == "ctr-v1"


def test_a_first_model_trained_on_shuffled_labels_is_not_promoted(tmp_path: Path, sqlite_db: str) -> None:
    settings = settings_with(tmp_path, sqlite_db)
    add(settings, 400)
    with session_scope(settings.database_url) as s:  # shuffle the labels: nothing left to learn
        obs = list(s.scalars(sa.select(Observation)))
        labels = np.random.default_rng(0).permutation([o.label for o in obs])
        for o, label in zip(obs, labels, strict=True):
            o.label = float(label)
    result = run(settings)
    assert result["status"] == "kept", result
    assert "First model" in result["reason"] and "does not beat a constant prediction" in result["reason"]
    assert production(settings) is None


def test_no_automatic_promotion_within_the_cooldown(tmp_path: Path, sqlite_db: str) -> None:
    settings = settings_with(tmp_path, sqlite_db, promotion={"cooldown_hours": 6})
    add(settings, 300)
    assert run(settings)["status"] == "retrained"
    add(settings, 300, start=END, end=LATER, drift_from=END, seed=8, prefix="drift")
    result = run(settings)
    assert result["status"] == "kept" and "no automatic promotion within 6 h" in result["reason"], result
    with session_scope(settings.database_url) as s:  # six hours later it may
        v1 = registry.get(s, "ctr-v1")
        v1.promoted_at = v1.promoted_at - timedelta(hours=7)
    assert run(settings)["status"] == "retrained"


def test_refit_deploys_the_winning_configuration_trained_on_every_row(tmp_path: Path, sqlite_db: str) -> None:
    """The default since replay measured it (benchmarks/README.md (j)); the tests' config pins evaluated."""
    assert ModelConfig().promotion.deploy == "refit"
    settings = settings_with(tmp_path, sqlite_db, promotion={"deploy": "refit"})
    add(settings, 300)
    result = run(settings)
    assert result["status"] == "retrained" and result["refit"] is True
    with session_scope(settings.database_url) as s:
        version = registry.get(s, "ctr-v1")
        assert version.refit is True and version.num_training_samples == 300  # train + holdout
        assert version.training_window_end.replace(tzinfo=None) == max(
            o.event_time for o in s.scalars(sa.select(Observation))).replace(tzinfo=None)
        registry.load_estimator(version)  # the deployed artifact verifies and loads
    # the next run's holdout can only hold rows the refit version never saw
    add(settings, 80, start=END, end=END + timedelta(days=5), seed=11, prefix="new")
    assert run(settings)["holdout"]["rows"] == 76  # its 20 % share of 380 rows, all of them new
