"""What each trigger watches and when it looks: the per-model check and schedule settings."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_EVERY = re.compile(r"^@every\s+(\d+)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_schedule(expr: str) -> timedelta | dict[str, str]:
    """A five-field cron line ("0 2 * * *") as crontab fields, or "@every 30s" as an interval.

    Celery's own crontab parser does the checking, so what passes here is what beat will run.
    """
    expr = expr.strip()
    if m := _EVERY.match(expr):
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds <= 0:
            raise ValueError(f"interval must be positive: {expr!r}")
        return timedelta(seconds=seconds)
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"a cron line has 5 fields (minute hour day month weekday), got {expr!r}")
    from celery.schedules import crontab  # the parser beat itself uses

    spec = dict(zip(("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), fields, strict=True))
    try:
        crontab(**spec)
    except Exception as exc:  # noqa: BLE001  celery raises ValueError/ParseException with the field's text
        raise ValueError(f"malformed cron line {expr!r}: {exc}") from None
    return spec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecondTarget(Strict):
    """A second target a model's predictions are served with (ROAS beside CTR): predictions carry
    `targets: {name: predicted}`, outcomes `targets: {name: actual}`; the check measures it too, and a
    breach of either starts a retrain."""

    target: str = Field(min_length=1, max_length=64)
    metric: Literal["mae", "rmse", "within_20pct"] = "mae"
    threshold: float = Field(ge=0)  # mae/rmse: breached above; within_20pct (a share): below


class AccuracyCheck(Strict):
    """Daily check of live accuracy (reference: MAE > 0.02 over 7 days with >= 50 samples).

    `metric` is a live metric of the model's kind (retrainer.models.base.LIVE_METRICS; default: mae
    for regression and forecast, accuracy for classification); an error metric breaches above
    `threshold`, accuracy/precision/recall below it. `threshold` defaults to the family's own
    (ctr: MAE 0.02); without one the check measures but never asks for a retrain."""

    metric: str | None = None
    threshold: float | None = Field(None, ge=0)
    mae_threshold: float | None = Field(None, ge=0, description="deprecated: {metric: mae, threshold: x}")
    lookback_days: int = Field(7, gt=0)  # exactly N x 24 h back from now (services/accuracy.py `window`)
    min_samples: int = Field(50, gt=0)
    # A retrain this recent suppresses another check-triggered one (stops a loop on a kept candidate).
    cooldown_hours: float = Field(12.0, ge=0)
    # Segment keys (prediction segments, e.g. hook_type) the check also measures per value: shown in its
    # result and `retrainer status`, so a degradation confined to one segment is seen.
    segments: list[str] = Field(default_factory=list, max_length=8)
    second_target: SecondTarget | None = None
    # Relative threshold: breached when the live metric is worse than the production version's own
    # holdout figure by more than this percentage (e.g. 50: MAE 1.5x its holdout MAE). With `threshold`
    # set too, either breach starts a retrain.
    relative_pct: float | None = Field(None, gt=0)
    # On a breach, find when the production version got worse (a CUSUM test on its live record) and
    # retrain on the rows from then on, once there are enough to judge a candidate
    # (services/since_change.py); without a significant change, an ordinary retrain.
    train_after_change: bool = True

    @model_validator(mode="after")
    def _old_key(self) -> AccuracyCheck:
        if self.mae_threshold is not None:  # step 1's key keeps existing files working
            # (equal values are one setting written both ways: what a dump of these settings reads back)
            if self.threshold not in (None, self.mae_threshold) or self.metric not in (None, "mae"):
                raise ValueError("mae_threshold is the deprecated alias of {metric: mae, threshold: ...}; "
                                 "write one of the two, not both")
            self.metric, self.threshold = "mae", self.mae_threshold
        return self


class AcceptRateCheck(Strict):
    """The hourly monitor's accept-rate check (reference: the average accept rate of the last 5
    learning cycles below 0.6, with at least 3 cycles, starts a retrain)."""

    threshold: float = Field(0.6, ge=0, le=1)
    cycles: int = Field(5, ge=1)  # the most recent learning cycles averaged
    min_cycles: int = Field(3, ge=1)  # fewer: no decision either way (recorded)
    # A retrain this check started this recently suppresses another (recorded): cycles change slowly,
    # so without it a low rate would start a retrain every hour.
    cooldown_hours: float = Field(12.0, ge=0)

    @model_validator(mode="after")
    def _enough(self) -> AcceptRateCheck:
        if self.min_cycles > self.cycles:
            raise ValueError(f"min_cycles ({self.min_cycles}) cannot exceed cycles ({self.cycles})")
        return self


class ErrorsCheck(Strict):
    """The daily high-confidence errors check (reference: wrong predictions with confidence above 0.7
    in the last 7 days, at least 10 of them, start a fine-tuning run from the production version).

    A classification prediction is wrong when its class is; a regression or forecast one when its
    error exceeds `tolerance` (required for those kinds: without it the check never fires, recorded)."""

    confidence: float = Field(0.7, ge=0, le=1)  # only predictions surer than this count
    min_errors: int = Field(10, ge=1)
    lookback_days: float = Field(7.0, gt=0)
    tolerance: float | None = Field(None, ge=0)  # regression/forecast: |actual - predicted| above it is wrong
    fine_tune: bool = True  # false: a full retrain instead (also when the family cannot fine-tune)
    cooldown_hours: float = Field(24.0, ge=0)


class NewDataCheck(Strict):
    """The new-data check (reference: at least 100 new labelled samples and at least 24 h since the
    last run). Checked hourly, so a retrain follows within the hour of both holding."""

    min_samples: int = Field(100, ge=1)  # labelled rows that arrived since the last run started
    min_hours: float = Field(24.0, ge=0)  # since the last run of this model (any trigger)


class DriftCheck(Strict):
    """The drift check: recent inputs against the production version's reference profile, per feature
    (services/drift.py). Dataset drift when at least `share` of the features drift."""

    numeric: Literal["wasserstein", "psi", "ks"] = "wasserstein"  # wasserstein: normalised by the reference std
    # Default: the method's (services/drift.py DEFAULT_THRESHOLDS: wasserstein 0.1, ks 0.1, psi 0.1, chi2 0.3),
    # set by the false-alarm rates measured on data without drift (benchmarks/drift_calibration.py).
    numeric_threshold: float | None = Field(None, gt=0)
    categorical: Literal["psi", "chi2"] = "psi"  # chi2: Cohen's w, which does not grow with the sample
    categorical_threshold: float | None = Field(None, gt=0)
    share: float = Field(0.5, gt=0, le=1)
    window_hours: float = Field(24.0, gt=0)  # recent inputs: predictions logged in this window (the newest 100,000)
    # Fewer recent inputs (or training rows) than this: no verdict (recorded). 1,000, not 500: at 500 the
    # wasserstein test's sampling noise alone flags a feature in up to 12 % of checks (under 2 % at 1,000).
    min_samples: int = Field(1000, ge=1)
    cooldown_hours: float = Field(24.0, ge=0)  # a drift-triggered retrain this recent suppresses another


class Budget(Strict):
    """At most `max_runs` automatic retrains (any trigger but a person's) per `per_hours`; a trigger past
    it is recorded as suppressed with that reason. null: no limit."""

    max_runs: int | None = Field(48, ge=1)
    per_hours: float = Field(24.0, gt=0)


class Schedules(Strict):
    check: str | None = "0 2 * * *"  # daily accuracy check, 02:00
    retrain: str | None = "0 3 * * 0"  # weekly retrain, Sunday 03:00
    monitor: str | None = "0 * * * *"  # hourly monitor: the accept-rate check (services/accept_rate.py)
    errors: str | None = "0 2 * * *"  # daily high-confidence errors check, 02:00 (seed 003's hour)
    new_data: str | None = "30 * * * *"  # hourly new-data check
    drift: str | None = "15 * * * *"  # hourly drift check
    # A newly promoted version's probation (services/probation.py): cheap, and a bad version should not
    # serve for an hour; the test stays valid however often it looks.
    probation: str | None = "@every 10m"

    @field_validator("check", "retrain", "monitor", "errors", "new_data", "drift", "probation")
    @classmethod
    def _valid(cls, v: str | None) -> str | None:
        if v is not None:
            parse_schedule(v)
        return v
