"""When a candidate may take production, and how a promoted version is watched afterwards.

Every rule is a per-model setting with a documented default (services/policy.py applies them, in
this order, and records each one's threshold, value and verdict on the run):

- `min_holdout_rows` - automatic replacement of a champion needs this much evidence;
- the paired bootstrap (`significance`) - the candidate is better beyond noise, not by a point estimate;
- `min_improvement_pct` - and better by at least this much (point estimate);
- `guards` - no other metric worse beyond its tolerance (per segment too);
- `cooldown_hours` - no automatic promotion this soon after the last one;
- `baseline` - the first model, or one replacing an unusable champion, beats a constant.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from retrainer.config.triggers import Strict


class Significance(Strict):
    """The paired test over holdout rows (services/significance.py): both versions are scored on the
    same bootstrap resamples of the holdout, and the relative improvement's confidence interval decides.

    Promotion needs the interval's lower bound above `min_lower_bound_pct` (0: better beyond noise).
    `test: none` restores the plain point-estimate rule (not recommended: on a 200-row holdout it
    promotes an equally good candidate about 40 % of the time)."""

    test: Literal["bootstrap", "none"] = "bootstrap"
    confidence: float = Field(0.95, gt=0.5, lt=1)  # two-sided; the lower bound is the (1-c)/2 quantile
    min_lower_bound_pct: float = 0.0
    resamples: int = Field(1000, ge=100, le=20_000)
    seed: int = 0  # resamples are reproducible: the same holdout gives the same decision


class Probation(Strict):
    """After a promotion, the new version's live outcomes are compared, as they arrive, with the
    previous version's record by an always-valid sequential test (services/probation.py): a version
    worse by more than `tolerance_pct` is rolled back automatically, with false alarms held to `alpha`
    however often it is looked at."""

    enabled: bool = True
    tolerance_pct: float = Field(5.0, ge=0)  # worse than the previous version by more than this: roll back
    alpha: float = Field(0.05, gt=0, lt=0.5)  # false rollback rate over the whole probation
    min_outcomes: int = Field(30, ge=5)  # no verdict on fewer outcomes of the new version
    max_outcomes: int = Field(5000, ge=10)  # probation passes after this many without a rollback
    max_days: float = Field(14.0, gt=0)  # or after this long
    baseline_days: float = Field(7.0, gt=0)  # the previous version's record: its last outcomes in this window


class Promotion(Strict):
    auto_promote: bool = True  # false: every promotion, the first model's too, is a person's call
    min_improvement_pct: float = Field(2.0, ge=0)  # the point estimate must reach this
    significance: Significance = Field(default_factory=Significance)
    # Fewer holdout rows than this: a champion is never replaced automatically (the candidate is kept,
    # saying so). Below 200 rows the gate finds a true 10 % gain less than half the time (39 % at 100
    # rows, 62 % at 200; benchmarks/promotion_gate.py).
    min_holdout_rows: int = Field(200, ge=1)
    # The first model, and a replacement of an unusable champion, must beat a constant prediction
    # (the training median, or the majority class) on the holdout, beyond noise.
    baseline: bool = True
    # metric -> tolerance in percent: the candidate may be worse on it by at most this much, overall
    # and in every segment (accuracy.segments) with at least `guard_min_rows` holdout rows.
    guards: dict[str, float] = Field(default_factory=dict)
    guard_min_rows: int = Field(30, ge=1)
    cooldown_hours: float = Field(6.0, ge=0)  # no automatic promotion within this time after the last one
    # What goes to production: "evaluated" deploys the artifact that was judged; "refit" refits the same
    # configuration on every row (holdout included) after the decision, recorded on the version.
    deploy: Literal["evaluated", "refit"] = "refit"
    # An absolute quality floor every candidate must clear, the first model too: "max_<metric>" or
    # "min_<metric>" -> limit, e.g. {max_mae: 0.02} or {min_roc_auc: 0.7} (metrics of the family).
    floor: dict[str, float] = Field(default_factory=dict)
    probation: Probation = Field(default_factory=Probation)

    @field_validator("floor")
    @classmethod
    def _bounds(cls, v: dict[str, float]) -> dict[str, float]:
        for key in v:
            if not key.startswith(("max_", "min_")) or len(key) < 5:
                raise ValueError(f"floor key {key!r}: write max_<metric> or min_<metric>")
        return v

    @field_validator("guards")
    @classmethod
    def _tolerances(cls, v: dict[str, float]) -> dict[str, float]:
        for key, tolerance in v.items():
            if tolerance < 0:
                raise ValueError(f"guard {key!r}: the tolerance is a percentage >= 0, got {tolerance}")
        return v
