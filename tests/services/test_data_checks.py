"""retrainer.services.data_checks: each check on in-memory rows, then through the whole pipeline on
SQLite and the real PostgreSQL (a failing check fails the run with its report; nothing is promoted)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from retrainer.config import ConfigError, DataChecks, Settings, load_settings
from retrainer.db import session_scope
from retrainer.db.records import (
    ModelEvaluation,
    ModelVersion,
    Observation,
    RequestStatus,
    RetrainRequest,
    RunStatus,
    SystemEvent,
    TrainingRun,
    Trigger,
)
from retrainer.models.base import FeatureType, Task
from retrainer.services import data_checks, dataset, registry, reports, retrain
from retrainer.services.data_checks import DataReport
from retrainer.services.schema import Feature, FeatureSchema
from tests.services.builders import END, START, seed
from tests.support import make_settings, model_config

NUM = FeatureType.NUMERIC
CAT = FeatureType.CATEGORICAL


def rows(n: int = 200, seed: int = 1, **columns: Any) -> pd.DataFrame:
    """`n` rows an hour apart: features a and b uniform in [0, 1), label a + b, plus `columns`."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    frame = pd.DataFrame({"row_id": np.arange(1, n + 1), "event_time": pd.date_range(START, periods=n, freq="h"),
                          "label": a + b, "a": a.astype(object), "b": b.astype(object)})
    for name, values in columns.items():
        frame[name] = values
    frame.attrs["problems"] = {}
    return frame


def check(raw: pd.DataFrame, features: FeatureSchema | None = None, production: FeatureSchema | None = None,
          task: Task = Task.REGRESSION, needs_time: bool = False, **cfg: Any) -> DataReport:
    used = features or FeatureSchema(tuple(Feature(c, NUM) for c in ("a", "b")), "production")
    valid = dataset.validate(raw, used, needs_time=needs_time)
    train, holdout, _ = dataset.split(valid.frame, 0.2)
    return data_checks.run(raw, valid, train, holdout, production, task, DataChecks.model_validate(cfg),
                           needs_time=needs_time)


def only(report: DataReport, check: str) -> list[data_checks.Problem]:
    return [p for p in report.problems if p.check == check]


# --- each check ------------------------------------------------------------------------------------

def test_clean_rows_pass_every_check() -> None:
    report = check(rows())
    assert report.ok and report.problems == () and not report.too_few_rows
    assert report.checks == data_checks.CHECKS
    data = json.loads(json.dumps(report.to_json()))  # JSON as the column stores it
    assert data | {"seconds": 0} == {
        "version": 1, "ok": True, "errors": 0, "warnings": 0, "rows": 200, "kept": 200, "train_rows": 160,
        "holdout_rows": 40, "checks": list(data_checks.CHECKS), "problems": [], "seconds": 0,
    }
    assert report.summary() == "" and report.warning_note() == ""


def test_missing_values_over_the_share_fail_counted_before_validation_drops_them() -> None:
    a = rows()["a"].copy()
    a[:30] = None  # 15 % of the rows read
    report = check(rows(a=a))
    [p] = report.errors
    assert (p.check, p.feature, p.severity) == ("missing", "a", "error")
    assert p.message == "a: missing in 30 of 200 rows (15.0%; max 5.0%)"
    assert p.figures == {"rows": 30, "share": 0.15, "max_share": 0.05}
    assert report.rows == 200 and report.kept == 170
    assert check(rows(a=a), missing={"max_share": 0.2}).ok  # the threshold is the model's

    label = rows()["label"].copy()
    label[:4] = np.nan  # 2 %: under the default share
    assert check(rows(label=label)).ok
    label[:20] = np.nan
    [p] = check(rows(label=label)).errors
    assert (p.check, p.feature) == ("missing", "label")


def test_non_finite_values_fail_apart_from_missing_ones() -> None:
    b = rows()["b"].copy()
    b[:6] = float("inf")
    b[6:8] = 1e300  # beyond ±1e15: as unusable as infinity
    b[8:10] = None
    report = check(rows(b=b))
    [p] = report.errors
    assert (p.check, p.feature, p.figures["rows"]) == ("non_finite", "b", 8)
    assert p.message == "b: non-finite or beyond ±1e15 in 8 of 200 rows (4.0%; max 1.0%)"
    assert only(report, "missing") == []  # 2 missing: 1 %, under 5 %


def test_values_of_another_type_than_the_schema_fail_the_schema_check() -> None:
    a = rows()["a"].copy()
    a[:5] = "0.5"  # text where the schema says numeric
    report = check(rows(a=a))
    [p] = report.errors
    assert (p.check, p.feature) == ("feature_schema", "a")
    assert p.message == "a: 5 of 200 rows (2.5%) hold a value that is not numeric (max 1.0%)"
    assert only(report, "missing") == [] and only(report, "non_finite") == []

    undecodable = rows()
    undecodable.attrs["problems"] = {"features": 10}  # dropped by the load, counted as read
    [p] = check(undecodable).errors
    assert p.check == "feature_schema" and p.feature is None
    assert p.message == "10 of 210 rows (4.8%) have features that are not a JSON object (max 1.0%)"


def test_a_schema_that_departs_from_production_is_a_warning() -> None:
    raw = rows(plan=["basic", "pro"] * 100)
    configured = FeatureSchema((Feature("a", NUM), Feature("plan", CAT)), "configured")
    production = FeatureSchema((Feature("a", CAT, ("x",)), Feature("b", NUM, range=(0, 1))))
    report = check(raw, configured, production)
    assert report.ok
    assert {p.message for p in only(report, "feature_schema")} == {
        "a: numeric in this run, categorical in the production version",
        "b: in the production version's schema, not read by this run",
    }
    assert all(p.severity == "warning" for p in report.problems)
    assert "data warnings: a: numeric in this run" in report.warning_note()


def test_a_constant_feature_is_a_warning_by_default_and_can_fail() -> None:
    raw = rows(flag=[1.0] * 200, plan=["basic"] * 200)
    features = FeatureSchema((Feature("a", NUM), Feature("flag", NUM), Feature("plan", CAT)), "production")
    report = check(raw, features)
    assert report.ok
    assert [p.message for p in report.warnings] == [
        "flag: one value (1) in all 160 training rows", "plan: one value (basic) in all 160 training rows"]
    assert not check(raw, features, constant="error").ok
    holdout_only = rows(flag=[0.0] * 160 + [1.0] * 40)  # varies only in the holdout: constant in training
    assert only(check(holdout_only, FeatureSchema((Feature("a", NUM), Feature("flag", NUM)))), "constant")


def test_rows_beyond_the_production_range_or_with_new_categories_are_warned_of() -> None:
    raw = rows(plan=["basic"] * 150 + ["enterprise"] * 30 + ["team"] * 20)
    features = FeatureSchema((Feature("a", NUM), Feature("plan", CAT)), "production")
    production = FeatureSchema((Feature("a", NUM, range=(0.0, 0.5)), Feature("plan", CAT, ("basic", "team"))))
    report = check(raw, features, production)
    assert report.ok  # a world that moved is what a retrain is for
    a, plan = only(report, "out_of_range")
    assert a.feature == "a" and a.figures["production_range"] == [0.0, 0.5] and 0.3 < a.figures["share"] < 0.7
    assert plan.message == ("plan: 30 of 200 rows (15.0%) carry categories the production version never saw: "
                            "enterprise (max 5.0%)")
    assert check(raw, features, None).problems == ()  # a first model has no range to compare with
    assert check(raw, features, production, out_of_range={"max_share": 0.9}).problems == ()
    assert not check(raw, features, production, out_of_range="error").ok


def test_duplicate_rows_are_counted_with_those_that_leak_into_the_holdout() -> None:
    raw = rows()
    copies = raw.iloc[:20].assign(row_id=np.arange(1001, 1021), event_time=raw["event_time"].iloc[-20:].to_numpy()
                                  + pd.Timedelta(minutes=30))  # re-ingested later: same features and label
    doubled = pd.concat([raw, copies], ignore_index=True)
    doubled.attrs["problems"] = {}
    [p] = check(doubled).problems
    assert (p.check, p.severity, p.figures["rows"]) == ("duplicates", "warning", 20)
    assert p.figures["holdout_in_train"] == 20  # the copies are the newest rows: all in the holdout
    assert p.message.startswith("20 of 220 rows (9.1%) repeat another row's features and label")
    # a family that reads the time: the copies' other times make them other inputs
    assert check(doubled, needs_time=True).problems == ()
    assert check(doubled, duplicates={"max_share": 0.1}).problems == ()


def test_classification_labels_need_two_classes_enough_rows_each_and_two_in_the_holdout() -> None:
    def labels(values: list[float], task: Task = Task.BINARY, **cfg: Any) -> list[str]:
        return [p.message for p in check(rows(len(values), label=values), task=task, **cfg).errors]

    balanced = [0.0, 1.0] * 100
    assert labels(balanced) == []
    assert labels([0.0] * 160 + [0.0, 1.0] * 20) == ["label: the training rows hold only class 0: a classifier needs two"]
    assert labels([0.0, 1.0] * 80 + [0.0] * 40) == [
        ("label: the holdout holds only class 0: candidate and production cannot be ranked on it "
         "(ROC AUC needs two classes)")]
    rare = [0.0] * 157 + [1.0] * 3 + [0.0, 1.0] * 20
    assert labels(rare) == ["label: too few training rows for class 1: 3 (min 5 per class)"]
    assert labels(rare, labels={"min_class_rows": 3}) == []
    assert labels([0.0, 1.0, 2.0] * 66 + [0.0, 1.0]) == [
        "label: 66 rows carry class(es) 2: a binary classifier's classes are 0 and 1 (params.task: multiclass for more)"]
    assert labels([0.0, 1.0, 2.0] * 66 + [0.0, 1.0], task=Task.MULTICLASS) == []
    assert labels([0.0, 0.5] * 100) == ["label: 100 rows carry a label that is no class number 0, 1, … (e.g. 0.5)"]


def test_regression_labels_must_vary_and_stay_inside_a_configured_range() -> None:
    assert [p.message for p in check(rows(label=[0.03] * 200)).errors] == [
        "label: one value (0.03) in all 160 training rows: nothing to learn"]
    raw = rows()  # labels a + b, in [0, 2)
    assert check(raw, labels={"range": [0, 2]}).ok
    [p] = check(raw, labels={"range": [0, 1]}).errors
    assert p.feature == "label" and p.figures["range"] == [0, 1] and 0.3 < p.figures["share"] < 0.7
    assert check(rows(label=[0.03] * 200), task=Task.FORECAST, labels="warning").ok


def test_too_small_a_split_is_too_few_rows_not_bad_data() -> None:
    report = check(rows(), split={"min_holdout_rows": 50, "min_train_rows": 200})
    assert [p.message for p in report.errors] == ["training split: 160 rows (min 200)", "holdout: 40 rows (min 50)"]
    assert report.too_few_rows
    a = rows()["a"].copy()
    a[:30] = None
    mixed = check(rows(a=a), split={"min_holdout_rows": 50})
    assert not mixed.ok and not mixed.too_few_rows  # bad data as well: that is what the run fails for


def test_each_check_can_be_switched_off() -> None:
    a = rows()["a"].copy()
    a[:30] = None
    report = check(rows(a=a), missing="off")
    assert report.ok and "missing" not in report.checks
    off = check(rows(a=a, flag=[1.0] * 200), FeatureSchema((Feature("a", NUM), Feature("flag", NUM))),
                **{name: False for name in data_checks.CHECKS})  # YAML reads an unquoted `off` as false
    assert off.checks == () and off.problems == ()


def test_the_configuration_is_checked_when_it_loads(tmp_path: Path) -> None:
    cfg = DataChecks.model_validate({"duplicates": "off", "constant": {"severity": "error"},
                                     "labels": {"range": [0, 1]}})
    assert (cfg.duplicates.severity, cfg.constant.severity, cfg.labels.range) == ("off", "error", (0, 1))
    defaults = DataChecks()
    assert (defaults.enabled, defaults.missing.max_share, defaults.non_finite.max_share) == (True, 0.05, 0.01)
    assert (defaults.constant.severity, defaults.out_of_range.severity, defaults.duplicates.severity) == (
        "warning", "warning", "warning")
    assert (defaults.split.min_train_rows, defaults.split.min_holdout_rows, defaults.labels.min_class_rows) == (
        20, 10, 5)
    for bad, key in (({"labels": {"range": [1, 0]}}, "models.ctr.data_checks.labels.range"),
                     ({"missing": {"max_share": 2}}, "models.ctr.data_checks.missing.max_share"),
                     ({"missing": "fatal"}, "models.ctr.data_checks.missing.severity"),
                     ({"duplicate": "off"}, "models.ctr.data_checks.duplicate")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_settings(var_dir=str(tmp_path), models={"ctr": {"data_checks": bad}})


# --- through the pipeline, on SQLite and PostgreSQL --------------------------------------------------

def run(settings: Settings, **kwargs: Any) -> dict[str, Any]:
    with session_scope(settings.database_url) as s:
        return retrain.retrain(s, settings, "ctr", **kwargs)


def stored(settings: Settings, table: Any, *where: Any) -> list[Any]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(sa.select(table).where(*where)))


def seed_rows(settings: Settings, n: int = 300, **kwargs: Any) -> list[Any]:
    with session_scope(settings.database_url) as s:
        return seed(s, n=n, **kwargs)


def add(settings: Settings, values: list[dict[str, Any]]) -> None:
    with session_scope(settings.database_url) as s:
        s.add_all([Observation(model="ctr", source="test", **v) for v in values])


def test_a_clean_run_keeps_a_passing_report(settings: Settings) -> None:
    seed_rows(settings)
    result = run(settings)
    assert result["status"] == "retrained", result
    assert result["data_report"]["ok"] is True and result["data_report"]["problems"] == []
    [r] = stored(settings, TrainingRun)
    assert r.data_report == result["data_report"]
    assert r.data_report["rows"] == 300 and r.data_report["checks"] == list(data_checks.CHECKS)
    assert "data warnings" not in result["reason"]


def test_bad_data_fails_the_run_naming_each_problem_and_promotes_nothing(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(data_checks={"labels": {"range": [0, 0.2]}})})
    good = seed_rows(settings)
    assert run(settings)["status"] == "retrained"  # ctr-v1: the production schema the next run reads by
    # a producer drops hook_strength from 80 of the newest rows, and 20 more carry a label of 3.5
    later = END + timedelta(hours=1)
    add(settings, [{"event_id": f"bad-{i}", "event_time": later + timedelta(minutes=i),
                    "features": {k: v for k, v in good[i].features.items() if k != "hook_strength" or i < 20},
                    "label": 3.5 if i < 20 else good[i].label} for i in range(100)])
    with session_scope(settings.database_url) as s:
        request = RetrainRequest(model="ctr", trigger=Trigger.ACCURACY, requested_by="test", status=RequestStatus.PENDING)
        s.add(request)
        s.flush()
        request_id = request.id

    result = run(settings, trigger=Trigger.ACCURACY, request_id=request_id)

    assert (result["status"], result["outcome"]) == ("error", "data_check_failed"), result
    assert result["message"].startswith(
        "data checks failed: hook_strength: missing in 80 of 400 rows (20.0%; max 5.0%); "
        "label: 20 of 320 rows (6.2%) outside the target range [0, 0.2] (seen ["), result["message"]
    [r] = stored(settings, TrainingRun, TrainingRun.run_id == result["run_id"])
    assert (r.status, r.outcome, r.error_message) == (RunStatus.FAILED, "data_check_failed", result["message"])
    assert r.version_id is None and r.dataset_size == 320 and r.completed_at is not None
    report = r.data_report
    assert report == result["data_report"] and report["ok"] is False and report["errors"] == 2
    assert [(p["check"], p["feature"], p["severity"]) for p in report["problems"]] == [
        ("missing", "hook_strength", "error"), ("labels", "label", "error")]
    # nothing fitted, nothing promoted
    assert [v.version_id for v in stored(settings, ModelVersion)] == ["ctr-v1"]
    assert stored(settings, ModelEvaluation, ModelEvaluation.run_id == r.run_id) == []
    with session_scope(settings.database_url) as s:
        assert registry.production(s, "ctr").version_id == "ctr-v1"
        history = reports.history(s, "ctr")["training_runs"]
    assert history[0]["outcome"] == "data_check_failed" and history[0]["error_message"] == result["message"]
    [req] = stored(settings, RetrainRequest, RetrainRequest.id == request_id)
    assert req.status == RequestStatus.FAILED and req.error_message == result["message"]
    assert req.run_id == r.run_id
    with session_scope(settings.database_url) as s:
        decision = s.scalars(sa.select(SystemEvent).where(SystemEvent.kind == "decision")
                             .order_by(SystemEvent.id.desc()).limit(1)).one()
    assert decision.payload["outcome"] == "data_check_failed" and decision.payload["checks"] == ["labels", "missing"]
    assert "hook_strength" in decision.message
    assert stored(settings, TrainingRun, TrainingRun.status == RunStatus.RUNNING) == []  # the lock is released


def test_a_warning_passes_and_is_named_in_the_decision(settings: Settings) -> None:
    good = seed_rows(settings)
    # the same 30 rows ingested twice: new ids and times, the same features and labels
    add(settings, [{"event_id": f"again-{i}", "event_time": r.event_time + timedelta(minutes=1),
                    "features": r.features, "label": r.label} for i, r in enumerate(good[:30])])
    result = run(settings)
    assert result["status"] == "retrained", result
    assert result["reason"].endswith("data warnings: 30 of 330 rows (9.1%) repeat another row's features and label "
                                     "(max 5.0%); 0 holdout rows also appear in training")
    [r] = stored(settings, TrainingRun)
    assert r.promotion_reason == result["reason"]
    assert r.data_report["ok"] is True and r.data_report["warnings"] == 1
    assert r.data_report["problems"][0]["check"] == "duplicates"


def test_too_small_a_split_is_insufficient_data_with_its_report(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(data_checks={"split": {"min_holdout_rows": 100}})})
    seed_rows(settings)
    result = run(settings)
    assert result["status"] == "insufficient_data" and result["count"] == 300, result
    assert result["message"] == "too few rows to train and judge a candidate: holdout: 60 rows (min 100)"
    [r] = stored(settings, TrainingRun)
    assert (r.status, r.outcome, r.error_message) == (RunStatus.SKIPPED, "insufficient_data", result["message"])
    assert r.data_report["ok"] is False and r.data_report["problems"][0]["check"] == "split"
    [req] = stored(settings, RetrainRequest)
    assert req.status == RequestStatus.COMPLETED  # more data will do: not a failure
    assert stored(settings, ModelVersion) == []


def test_checks_switched_off_store_no_report(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(data_checks={"enabled": False,
                                                                                        "split": {"min_holdout_rows": 100}})})
    seed_rows(settings)
    result = run(settings)
    assert result["status"] == "retrained" and result["data_report"] is None, result
    [r] = stored(settings, TrainingRun)
    assert r.data_report is None


def test_a_checked_run_that_fails_later_keeps_its_report(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_rows(settings)

    def broken_swap(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database went away mid-swap")

    monkeypatch.setattr(registry, "swap_production", broken_swap)
    result = run(settings)
    assert result["status"] == "error" and "mid-swap" in result["message"]
    [r] = stored(settings, TrainingRun)
    assert (r.status, r.outcome) == (RunStatus.FAILED, "error")
    assert r.data_report["ok"] is True and r.data_report["rows"] == 300

