"""retrainer.services.guards: a guarded metric measured overall and per segment of the holdout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrainer.models.base import Prediction, load_family
from retrainer.services import guards


def test_a_segment_made_worse_is_caught_where_the_overall_figure_hides_it() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.uniform(0.02, 0.08, n)
    hook = np.where(np.arange(n) % 4 == 0, "story", "question")  # a quarter of the rows are "story"
    champion = y + rng.normal(0, 0.004, n)
    candidate = y + rng.normal(0, 0.002, n)  # better everywhere ...
    story = hook == "story"
    candidate[story] = y[story] + rng.normal(0, 0.012, story.sum())  # ... except on "story" rows
    holdout = pd.DataFrame({"label": y, "hook_type": hook, "x": np.zeros(n)})
    family = load_family("ctr")
    found = guards.measure(family, holdout, "label", Prediction(candidate), Prediction(champion),
                           {"rmse": 20.0}, ["hook_type", "not_a_column"], min_rows=30)
    by_segment = {g.segment: g for g in found}
    assert set(by_segment) == {None, "hook_type=question", "hook_type=story"}
    assert by_segment["hook_type=question"].passed and by_segment["hook_type=question"].worse_pct < 0
    story_guard = by_segment["hook_type=story"]
    assert not story_guard.passed and story_guard.worse_pct > 100 and story_guard.rows == 100
    assert story_guard.champion == pytest.approx(float(np.sqrt(np.mean((champion[story] - y[story]) ** 2))))
    # too few rows in a segment: not judged
    small = guards.measure(family, holdout, "label", Prediction(candidate), Prediction(champion), {"rmse": 20.0},
                           ["hook_type"], min_rows=200)
    assert {g.segment for g in small} == {None, "hook_type=question"}
    assert guards.measure(family, holdout, "label", Prediction(candidate), Prediction(champion), {}, [], 30) == ()


def test_a_higher_is_better_guard_and_a_perfect_champion() -> None:
    y = np.array([0.05] * 50)
    family = load_family("ctr")
    holdout = pd.DataFrame({"label": y})
    [g] = guards.measure(family, holdout, "label", Prediction(y * 1.5), Prediction(y.copy()), {"accuracy": 5.0}, [], 1)
    assert g.metric == "accuracy" and g.champion == 1.0 and g.candidate == 0.0 and g.worse_pct == 100.0
    assert not g.passed
    [g] = guards.measure(family, holdout, "label", Prediction(y * 1.5), Prediction(y.copy()), {"mae": 5.0}, [], 1)
    assert g.champion == 0.0 and g.worse_pct == float("inf") and not g.passed  # worse than a perfect champion
