"""Every check that can ask for a retrain, by name: what it decides with and the trigger it records.
One table for beat's tasks (tasks/checks.py) and `retrainer check MODEL --trigger NAME --local`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from retrainer.config import ModelConfig
from retrainer.db.records import PredictionKind, Trigger
from retrainer.models.base import family_class

Decide = Callable[[Session, str, ModelConfig], dict[str, Any]]


@dataclass(frozen=True)
class Check:
    trigger: Trigger | None  # None: a check that never asks for a retrain (probation acts on its own)
    decide: Decide  # session, model, its config -> result with "status" (retrain_needed opens a request)


def live_kind(family: str) -> PredictionKind:
    return PredictionKind(family_class(family).metric_spec.live.value)


def _accuracy(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    from retrainer.services import accuracy, since_change

    return accuracy.check(session, model, cfg.accuracy, cfg.family, since_change.rows_needed(cfg))


def _accept_rate(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    from retrainer.services import accept_rate

    return accept_rate.check(session, model, cfg.accept_rate)


def _errors(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    from retrainer.services import data_triggers

    return data_triggers.check_errors(session, model, cfg, live_kind(cfg.family))


def _new_data(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    from retrainer.services import data_triggers

    return data_triggers.check_new_data(session, model, cfg)


def _drift(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    from retrainer.services import drift_check  # numpy/pandas: only where drift is checked

    return drift_check.check(session, model, cfg)


def _probation(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    from retrainer.services import probation  # numpy/scipy: only where probation is checked

    return probation.check(session, model, cfg)


CHECKS: dict[str, Check] = {
    "accuracy": Check(Trigger.ACCURACY, _accuracy),
    "accept_rate": Check(Trigger.ACCEPT_RATE, _accept_rate),
    "errors": Check(Trigger.ERRORS, _errors),
    "new_data": Check(Trigger.NEW_SAMPLES, _new_data),
    "drift": Check(Trigger.DRIFT, _drift),
    "probation": Check(None, _probation),  # rolls a worse new version back itself (services/probation.py)
}
