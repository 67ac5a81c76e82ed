"""retrainer.services.schema: inferring, configuring, recording and applying a feature schema."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from retrainer.models.base import DataError, FeatureType
from retrainer.services import schema
from retrainer.services.schema import Feature, FeatureSchema

NUMERIC, CATEGORICAL, BOOLEAN = FeatureType.NUMERIC, FeatureType.CATEGORICAL, FeatureType.BOOLEAN


def rows(records: list[dict]) -> pd.DataFrame:
    """Rows as dataset.load gives them: decoded JSON objects, one column per key."""
    return pd.DataFrame.from_records(json.loads(json.dumps(records)))


@pytest.fixture
def frame() -> pd.DataFrame:
    return rows([{"plan": ("basic", "pro", "team")[i % 3], "spend": float(i), "seats": i, "trial": i % 2 == 0}
                 for i in range(100)])


def test_infer_types_numbers_booleans_and_strings(frame: pd.DataFrame) -> None:
    inferred = schema.infer(frame)
    assert [(f.name, f.type) for f in inferred.features] == [
        ("plan", CATEGORICAL), ("spend", NUMERIC), ("seats", NUMERIC), ("trial", BOOLEAN)]
    assert inferred.source == "inferred" and inferred.left_out == {}


def test_infer_leaves_out_rare_and_mixed_keys_and_says_why(frame: pd.DataFrame) -> None:
    frame["rare"] = [1.0 if i < 60 else None for i in range(100)]  # the key in 60 % of rows
    frame["mixed"] = [i if i % 2 else "x" for i in range(100)]  # half numbers, half strings
    frame["few_bad"] = [1.0 if i else "oops" for i in range(100)]  # one stray string: still numeric
    inferred = schema.infer(frame)
    assert "rare" not in inferred.names and "60% of rows" in inferred.left_out["rare"]
    assert "mixed" not in inferred.names and "mixed types" in inferred.left_out["mixed"]
    assert inferred.type_of("few_bad") is NUMERIC


def test_apply_types_the_columns_and_counts_wrong_and_missing_values(frame: pd.DataFrame) -> None:
    frame = frame.astype(object)  # as JSON's mixed values decode
    frame.loc[3, "spend"] = "12"  # a numeric string is not a number
    frame.loc[4, "trial"] = 1  # nor is 1 a boolean
    frame.loc[5, "plan"] = 7  # nor a number a category
    frame.loc[6, "spend"] = None
    applied = schema.infer(frame).apply(frame)
    X = applied.X
    assert X["spend"].dtype == np.float64 and X["seats"].dtype == np.float64
    assert X["trial"].dtype == bool
    assert isinstance(X["plan"].dtype, pd.CategoricalDtype)
    assert list(X["plan"].cat.categories) == ["basic", "pro", "team"]
    assert applied.problems == {"spend": 2, "trial": 1, "plan": 1}
    assert list(np.flatnonzero(applied.bad)) == [3, 4, 5, 6]


def test_apply_keeps_training_categories_first_and_adds_new_ones() -> None:
    known = FeatureSchema((Feature("plan", CATEGORICAL, ("pro", "team")),))
    X = known.apply(rows([{"plan": "enterprise"}, {"plan": "pro"}])).X
    assert list(X["plan"].cat.categories) == ["pro", "team", "enterprise"]


def test_a_feature_no_row_carries_drops_every_row() -> None:
    applied = FeatureSchema((Feature("x", NUMERIC),)).apply(rows([{"y": 1}, {"y": 2}]))
    assert applied.problems == {"x": 2} and applied.bad.all()


def test_json_round_trip_with_observed_categories_and_ranges(frame: pd.DataFrame) -> None:
    inferred = schema.infer(frame)
    recorded = inferred.observed(inferred.apply(frame).X).to_json()
    assert recorded["features"][0] == {"name": "plan", "type": "categorical", "categories": ["basic", "pro", "team"]}
    assert recorded["features"][1] == {"name": "spend", "type": "numeric", "range": [0.0, 99.0]}
    assert recorded["features"][3] == {"name": "trial", "type": "boolean"}
    again = FeatureSchema.from_json(json.loads(json.dumps(recorded)))
    assert again.to_json() == recorded and again.features[0].categories == ("basic", "pro", "team")


def test_from_config_mapping_and_list(frame: pd.DataFrame) -> None:
    typed = schema.from_config({"plan": "categorical", "seats": "numeric", "trial": "boolean"}, frame)
    assert [(f.name, f.type) for f in typed.features] == [("plan", CATEGORICAL), ("seats", NUMERIC), ("trial", BOOLEAN)]
    assert typed.source == "configured"
    listed = schema.from_config(["trial", "plan"], frame)
    assert [(f.name, f.type) for f in listed.features] == [("trial", BOOLEAN), ("plan", CATEGORICAL)]
    with pytest.raises(DataError, match="absent from every row: nope"):
        schema.from_config(["plan", "nope"], frame)


def test_resolve_order_configured_then_production_then_inferred(frame: pd.DataFrame) -> None:
    production = FeatureSchema((Feature("seats", NUMERIC),), "inferred")
    assert schema.resolve(frame, ["plan"], production).names == ["plan"]
    from_production = schema.resolve(frame, None, production)
    assert from_production.names == ["seats"] and from_production.source == "production"
    assert schema.resolve(frame, None, None).names == ["plan", "spend", "seats", "trial"]
    # a list names the features; their types come from the production schema when it has them
    typed_as_before = FeatureSchema((Feature("seats", CATEGORICAL),))
    assert schema.resolve(frame, ["seats"], typed_as_before).type_of("seats") is CATEGORICAL


def test_check_names_the_missing_or_wrong_typed_feature() -> None:
    fits = FeatureSchema((Feature("plan", CATEGORICAL), Feature("spend", NUMERIC), Feature("trial", BOOLEAN)))
    assert fits.check({"plan": "pro", "spend": 3, "trial": False, "extra": "ok"}) is None
    assert fits.check({"plan": "pro", "trial": False}) == "features.spend: missing (the production schema needs it)"
    assert fits.check({"plan": "pro", "spend": True, "trial": False}) == (
        "features.spend: expected a number (numeric), got boolean")
    assert fits.check({"plan": 3, "spend": 1.0, "trial": False}) == (
        "features.plan: expected a string (categorical), got integer")
    assert fits.check({"plan": "pro", "spend": 1.0, "trial": "yes"}) == (
        "features.trial: expected a boolean (boolean), got string")


def test_configured_features_are_checked_when_the_configuration_loads(tmp_path) -> None:
    from retrainer.config import ConfigError, load_settings
    from retrainer.models.base import check_models

    base = {"var_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"models\.churn\.features: plan: type 'categorial' is not one of numeric"):
        load_settings(**base, models={"churn": {"family": "classifier", "features": {"plan": "categorial"}}})
    with pytest.raises(ConfigError, match=r"models\.churn\.features: a feature is named twice: a"):
        load_settings(**base, models={"churn": {"family": "classifier", "features": ["a", "a"]}})
    typed = load_settings(**base, models={
        "churn": {"family": "classifier", "features": {"plan": "categorical", "spend": "numeric", "trial": "boolean"}},
        "empty": {"family": "classifier", "features": []},
        "timing": {"family": "timing", "features": {}},
    })
    assert typed.models["churn"].features == {"plan": "categorical", "spend": "numeric", "trial": "boolean"}
    assert check_models(typed.models) == ["models.empty.features: empty; family classifier needs at least one feature"]
