"""Every installed family passes the conformance kit (retrainer.models.testing), and the ctr family's
own promises: its metrics, categorical features, fine-tuning, and hyper-parameters checked early."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from retrainer.config import available_families, load_settings
from retrainer.models.base import DataError, Prediction, check_models, family_class, load_family
from retrainer.models.ctr import CTRFamily
from retrainer.models.testing import check_family, family_checks, synthetic_data

# Small and fast: the kit's data set is a few hundred rows.
SMALL_PARAMS: dict[str, dict[str, Any]] = {"ctr": {"n_estimators": 30, "max_depth": 3},
                                            "timing": {"uncertainty_samples": 50},
                                            "regressor": {"n_estimators": 30, "max_depth": 3},
                                            "classifier": {"n_estimators": 30, "max_depth": 3}}
# A family that serves several tasks runs the kit once per task, which its parameters choose.
TASKS: dict[str, dict[str, dict[str, Any]]] = {
    "classifier": {"binary": {"task": "binary"}, "multiclass": {"task": "multiclass"}},
}
VARIANTS = {f"{family}-{task}" if task else family: (family, SMALL_PARAMS.get(family, {}) | extra)
            for family in sorted(available_families()) for task, extra in TASKS.get(family, {"": {}}).items()}
CASES = [(variant, name) for variant, (family, params) in VARIANTS.items()
         for name, _ in family_checks(family_class(family), params)]


@pytest.mark.parametrize(("variant", "check"), CASES, ids=[f"{v}-{c}" for v, c in CASES])
def test_conformance(variant: str, check: str) -> None:
    family, params = VARIANTS[variant]
    checks = dict(family_checks(family_class(family), params))
    checks[check]()


def test_check_family_names_the_broken_rule() -> None:
    class Forgetful(CTRFamily):
        def get_params(self) -> dict[str, Any]:
            return {}

    with pytest.raises(AssertionError, match="Forgetful fails init_stores_params_only: get_params must return"):
        check_family(Forgetful, {"n_estimators": 5})


def test_ctr_metrics_match_definitions() -> None:
    y = np.array([0.10, 0.20, 0.05, 0.40])
    p = np.array([0.11, 0.30, 0.05, 0.30])
    m = CTRFamily().evaluate(y, Prediction(p))
    assert m.primary == "mae" and m.higher_is_better is False
    err = p - y
    assert m.values["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert m.values["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert m.values["r2"] == pytest.approx(1 - np.sum(err**2) / np.sum((y - y.mean()) ** 2))
    assert m.values["accuracy"] == pytest.approx(0.5)  # within ±20 %: 0.11 vs 0.10 and 0.05 vs 0.05


def test_ctr_learns_from_a_categorical_feature_and_codes_it_as_trained() -> None:
    data = synthetic_data(CTRFamily, n=600)
    X = data.X.assign(channel=data.X["channel"].astype(str))  # as rows arrive: plain strings
    y = data.y + (X["channel"] == "search") * 2.0
    est = CTRFamily(n_estimators=60, max_depth=3).fit(X.iloc[:480], y.iloc[:480])
    assert est.categories_["channel"] == ["email", "feed", "search"]
    predicted = est.predict(X.iloc[480:]).value
    search = (X["channel"].iloc[480:] == "search").to_numpy()
    assert predicted[search].mean() > predicted[~search].mean() + 1.0  # the category carries signal
    # an unseen category is missing, not an error; a reordered category list codes the same
    unseen = X.iloc[480:].assign(channel="billboard")
    assert np.isfinite(est.predict(unseen).value).all()


def test_ctr_fine_tunes_by_boosting_on() -> None:
    data = synthetic_data(CTRFamily, n=600)
    parent = CTRFamily(n_estimators=20, max_depth=3).fit(data.X.iloc[:300], data.y.iloc[:300])
    child = CTRFamily(n_estimators=10, max_depth=3).fit(data.X.iloc[300:], data.y.iloc[300:], parent=parent)
    assert child.model_.get_booster().num_boosted_rounds() == 30  # the parent's 20 trees and 10 more
    assert child.features_ == parent.features_


def test_ctr_refuses_nan_labels_and_no_features() -> None:
    data = synthetic_data(CTRFamily)
    with pytest.raises(DataError, match="label"):
        CTRFamily().fit(data.X, data.y.where(data.y.index != 3))
    with pytest.raises(DataError, match="no feature"):
        CTRFamily().fit(pd.DataFrame(index=data.X.index), data.y)


def test_hyper_parameters_are_checked_when_the_configuration_loads() -> None:
    settings = load_settings(models={
        "ok": {"params": {"n_estimators": 10}},
        "bad": {"params": {"n_estimatorz": 10, "learning_rate": 0}, "primary_metric": "auc"},
    })
    problems = check_models(settings.models)
    assert problems == [
        "models.bad.params.learning_rate: Input should be greater than 0 (family ctr)",
        "models.bad.params.n_estimatorz: Extra inputs are not permitted (family ctr)",
        "models.bad.primary_metric: 'auc' is not a metric of family ctr; choose one of mae, rmse, r2, accuracy",
    ]
    assert load_family("ctr", {"n_estimators": 10}).get_params()["n_estimators"] == 10


@pytest.mark.parametrize("family", ["ctr", "regressor", "classifier"])
def test_xgboost_threads_follow_worker_threads_unless_set(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrainer import config

    monkeypatch.setattr(config, "_current", load_settings(worker_threads=3))
    assert load_family(family).get_params()["n_jobs"] == 3  # one setting sizes every family's threads
    assert load_family(family, {"n_jobs": 1}).get_params()["n_jobs"] == 1  # a model's own value wins
