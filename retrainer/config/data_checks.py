"""The data checks a run makes before fitting, per model (services/data_checks.py holds the logic).

Every check has a `severity`: `error` fails the run (nothing is fitted or promoted), `warning` is
recorded in the run's report and the decision's reason, `off` skips it. A check can be written as
its severity alone (`duplicates: off`); YAML reads an unquoted `off` as false, which means off too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from retrainer.config.triggers import Strict

Severity = Literal["error", "warning", "off"]


class Check(Strict):
    severity: Severity = "error"

    @model_validator(mode="before")
    @classmethod
    def _severity_alone(cls, data: Any) -> Any:
        return {"severity": data} if isinstance(data, (str, bool)) else data

    @field_validator("severity", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1: `off` is false


class SchemaCheck(Check):
    """Values of another type than the run's schema says, per feature, and rows whose features are not
    an object. Differences from the production schema (a type changed, a feature no longer read) are
    a person's configuration, so they are warnings whatever the severity."""

    max_share: float = Field(0.01, ge=0, le=1)  # a producer that sends text for a number is a bug


class MissingCheck(Check):
    """The share of rows read that lack a feature (or the label); validation drops those rows."""

    max_share: float = Field(0.05, ge=0, le=1)  # sparse gaps are normal, a broken join or producer is not


class NonFiniteCheck(Check):
    """The share of rows read with a NaN, infinite or beyond-±1e15 feature or label."""

    max_share: float = Field(0.01, ge=0, le=1)


class ConstantCheck(Check):
    """A feature with one value in the training split: common for a rare category or a new flag in a
    short window, so a warning by default; the model simply learns nothing from it."""

    severity: Severity = "warning"


class RangeCheck(Check):
    """Rows beyond the production version's recorded training range (numbers) or with categories it
    never saw. A warning by default: a world that moved is what a retrain is for."""

    severity: Severity = "warning"
    max_share: float = Field(0.05, ge=0, le=1)


class DuplicatesCheck(Check):
    """Rows repeating another row's inputs (features, and the time for a family that reads it) and
    label. A warning by default: few coarse features repeat legitimately; a double ingest shows here."""

    severity: Severity = "warning"
    max_share: float = Field(0.05, ge=0, le=1)


class LabelsCheck(Check):
    """Classification: whole class numbers (binary: 0 and 1), at least two classes in the training
    split, each with `min_class_rows`, and two in the holdout. Regression and forecast: a label that
    is not constant in the training split and, with `range`, inside it."""

    min_class_rows: int = Field(5, ge=1)
    range: tuple[float, float] | None = None  # [lo, hi], inclusive

    @field_validator("range")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] > v[1]:
            raise ValueError(f"range [{v[0]:g}, {v[1]:g}]: lo must not exceed hi")
        return v


class SplitCheck(Check):
    """Rows in the time-ordered training split and holdout. Too few only is `insufficient_data`."""

    min_train_rows: int = Field(20, ge=1)
    min_holdout_rows: int = Field(10, ge=1)  # a promotion decided on fewer rows is noise


class DataChecks(Strict):
    enabled: bool = True  # false: no check runs and the run stores no report
    feature_schema: SchemaCheck = Field(default_factory=SchemaCheck)  # `schema` is pydantic's own name
    missing: MissingCheck = Field(default_factory=MissingCheck)
    non_finite: NonFiniteCheck = Field(default_factory=NonFiniteCheck)
    constant: ConstantCheck = Field(default_factory=ConstantCheck)
    out_of_range: RangeCheck = Field(default_factory=RangeCheck)
    duplicates: DuplicatesCheck = Field(default_factory=DuplicatesCheck)
    labels: LabelsCheck = Field(default_factory=LabelsCheck)
    split: SplitCheck = Field(default_factory=SplitCheck)
