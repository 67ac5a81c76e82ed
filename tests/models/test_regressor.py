"""The regressor family's own promises: its metrics, categorical features, fine-tuning, objectives and
refused labels (the conformance kit in test_families.py covers the contract)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn import metrics as skm

from retrainer.config import load_settings
from retrainer.models.base import DataError, Prediction, check_models
from retrainer.models.regressor import RegressorFamily
from retrainer.models.testing import synthetic_data

SMALL = {"n_estimators": 40, "max_depth": 3}


def spend_data(n: int = 600) -> tuple[pd.DataFrame, pd.Series]:
    """Spend rising with x1, and 25 more in the `search` channel, which arrives as plain strings."""
    data = synthetic_data(RegressorFamily, n=n)
    X = data.X.assign(channel=data.X["channel"].astype(str))
    return X, 10 * data.y + 25.0 * (X["channel"] == "search")


def test_metrics_match_their_definitions_and_sklearn() -> None:
    y = np.array([12.0, 0.0, 40.0, 7.5, 100.0])
    p = np.array([10.0, 1.0, 35.0, 7.5, 130.0])
    m = RegressorFamily().evaluate(y, Prediction(p))
    assert m.primary == "mae" and m.higher_is_better is False
    err = p - y
    assert m.values["mae"] == pytest.approx(np.mean(np.abs(err))) == pytest.approx(skm.mean_absolute_error(y, p))
    assert m.values["mse"] == pytest.approx(np.mean(err**2)) == pytest.approx(skm.mean_squared_error(y, p))
    assert m.values["r2"] == pytest.approx(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2))
    assert m.values["r2"] == pytest.approx(skm.r2_score(y, p))
    # a constant target: R² is 1 for a perfect prediction, 0 otherwise (as sklearn's r2_score)
    constant = np.full(4, 3.0)
    assert RegressorFamily().evaluate(constant, Prediction(constant)).values["r2"] == 1.0
    assert RegressorFamily().evaluate(constant, Prediction(constant + 1)).values["r2"] == 0.0


def test_a_categorical_feature_carries_signal_and_is_coded_as_trained() -> None:
    X, y = spend_data()
    est = RegressorFamily(**SMALL).fit(X.iloc[:480], y.iloc[:480])
    assert est.categories_["channel"] == ["email", "feed", "search"]
    predicted = est.predict(X.iloc[480:]).value
    search = (X["channel"].iloc[480:] == "search").to_numpy()
    assert predicted[search].mean() > predicted[~search].mean() + 15  # the 25 the channel adds, mostly learned
    metrics = est.evaluate(y.iloc[480:], est.predict(X.iloc[480:]))
    assert metrics.values["r2"] > 0.9
    # an unseen category is missing, not an error
    assert np.isfinite(est.predict(X.iloc[480:].assign(channel="billboard")).value).all()


def test_fine_tunes_by_boosting_on_from_the_parent() -> None:
    X, y = spend_data()
    parent = RegressorFamily(n_estimators=20, max_depth=3).fit(X.iloc[:300], y.iloc[:300])
    child = RegressorFamily(n_estimators=10, max_depth=3).fit(X.iloc[300:], y.iloc[300:], parent=parent)
    assert child.model_.get_booster().num_boosted_rounds() == 30  # the parent's 20 trees and 10 more
    assert child.features_ == parent.features_ and child.categories_ == parent.categories_


def test_the_objective_is_a_checked_hyper_parameter_passed_to_xgboost() -> None:
    X, y = spend_data(300)
    est = RegressorFamily(**SMALL, objective="reg:absoluteerror").fit(X, y)
    assert est.model_.get_params()["objective"] == "reg:absoluteerror"
    with pytest.raises(ValidationError, match="objective"):
        RegressorFamily.Params.model_validate({"objective": "binary:logistic"})


def test_refuses_labels_it_cannot_learn() -> None:
    X, y = spend_data(200)
    with pytest.raises(DataError, match="NaN or infinite"):
        RegressorFamily(**SMALL).fit(X, y.where(y.index != 5))
    with pytest.raises(DataError, match="non-negative for objective reg:tweedie"):
        RegressorFamily(**SMALL, objective="reg:tweedie").fit(X, y - 1000)


def test_configuration_checks_its_params_and_primary_metric() -> None:
    settings = load_settings(models={
        "spend": {"family": "regressor", "params": {"objective": "reg:squarederror"}, "primary_metric": "mse"},
        "bad": {"family": "regressor", "params": {"max_depth": 0}, "primary_metric": "rmse"},
    })
    assert check_models(settings.models) == [
        "models.bad.params.max_depth: Input should be greater than or equal to 1 (family regressor)",
        "models.bad.primary_metric: 'rmse' is not a metric of family regressor; choose one of mae, mse, r2",
    ]
