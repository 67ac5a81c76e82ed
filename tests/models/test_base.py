"""retrainer.models.base: the contract's own pieces (metric spec, metrics, the start-up check)."""

from __future__ import annotations

import math

import pytest

from retrainer.config import load_settings
from retrainer.models.base import Live, Metrics, MetricSpec, check_models

SPEC = MetricSpec(names=("mae", "r2"), primary="mae", higher_is_better=frozenset({"r2"}), live=Live.REGRESSION)


def test_a_metric_spec_must_name_its_own_metrics() -> None:
    with pytest.raises(ValueError, match="primary and directions"):
        MetricSpec(names=("mae",), primary="auc", higher_is_better=frozenset(), live=Live.REGRESSION)
    with pytest.raises(ValueError, match="primary and directions"):
        MetricSpec(names=("mae",), primary="mae", higher_is_better=frozenset({"r2"}), live=Live.REGRESSION)


def test_metrics_take_the_direction_of_the_chosen_primary() -> None:
    assert Metrics.of({"mae": 0.1, "r2": 0.5}, SPEC).higher_is_better is False
    chosen = Metrics.of({"mae": 0.1, "r2": 0.5}, SPEC, primary="r2")
    assert chosen.primary == "r2" and chosen.higher_is_better is True
    assert chosen.improvement_pct(Metrics.of({"mae": 0.1, "r2": 0.4}, SPEC, "r2")) == pytest.approx(25.0)


def test_metrics_store_what_json_can_hold() -> None:
    m = Metrics({"mae": math.inf, "r2": math.nan, "rmse": 0.2}, "mae", False)
    assert m.not_finite == ["mae", "r2"] and m.storable() == {"mae": None, "r2": None, "rmse": 0.2}


def test_floor_metrics_are_checked_against_the_family() -> None:
    settings = load_settings(models={"ctr": {"promotion": {"floor": {"max_mae": 0.02, "min_roc_auc": 0.7}}}})
    assert check_models(settings.models) == [
        "models.ctr.promotion.floor.min_roc_auc: 'roc_auc' is not a metric of family ctr; "
        "choose one of mae, rmse, r2, accuracy",
    ]


def test_guard_metrics_are_checked_against_the_family() -> None:
    settings = load_settings(models={"ctr": {"promotion": {"guards": {"rmse": 5, "f1": 2}}}})
    assert check_models(settings.models) == [
        "models.ctr.promotion.guards.f1: 'f1' is not a metric of family ctr; choose one of mae, rmse, r2, accuracy",
    ]
