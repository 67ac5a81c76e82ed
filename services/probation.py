"""Probation: a newly promoted version is watched on its live outcomes and rolled back on its own when it
is worse than the version it replaced (models.<name>.promotion.probation).

The promotion (services/registry.py swap_production) puts the version on probation ('watching'). Each
check gathers its losses (prediction_records.error, in the order the outcomes arrived) since it took
production and, paired with them, the losses the version it replaced would have had on the same
outcomes: its artifact scores the features the new version served. The always-valid sequential test of
services/sequential.py (paired_test) judges the differences; its verdict holds however often the check
runs, so beat may run it every few minutes. Pairing matters under drift: compared with the previous
version's own past outcomes, a promotion made because the world changed is blamed for the change and
rolled back (every rollback of the first replay benchmark was of that kind). When the previous artifact
cannot score them (missing, corrupt), its record of the `baseline_days` before the promotion, a fixed
sample summed in SQL, stands in (probation_test). Then:

- worse beyond the tolerance: rolled back to the previous version at once (the ledger's auto_rollback,
  actor `probation`, with the verdict's reason), probation 'rolled_back', an alert for Slack;
- `max_outcomes` outcomes or `max_days` without that: 'passed';
- nothing to judge against (the first version, a previous version with fewer than `min_outcomes`
  outcomes before the promotion, or probation disabled): the probation ends unjudged (probation back to
  none, `probation_ended_at` set), saying why. No rollback without evidence.
Every check is recorded (system_events kind `check`, check `probation`), whatever it found.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ModelConfig
from retrainer.db.records import ModelVersion, PredictionKind, PredictionRecord, PredictionStatus
from retrainer.models.base import ArtifactError, DataError, family_class
from retrainer.services import audit, ledger, predictions, registry, sequential
from retrainer.services.errors import PromotionConflict
from retrainer.services.registry import RollbackArtifactError

P = PredictionRecord


def check(session: Session, model: str, cfg: ModelConfig) -> dict[str, Any]:
    """Judge the production version's probation now. status: rolled_back | rollback_failed | passed |
    watching | insufficient_data (fewer outcomes than a verdict needs; still watching) | ended (no
    baseline, first version, disabled) | not_watching | no_production."""
    now = clock.now()
    result = _decide(session, model, cfg, now)
    verdict = result.get("verdict") or {}
    audit.record(session, "check", f"{model}: probation: {result['message']}", model=model, check="probation",
                 status=result["status"], version_id=result.get("version_id"),
                 statistic=verdict.get("statistic"), threshold=verdict.get("threshold"),
                 outcomes=verdict.get("n_new"), baseline_outcomes=verdict.get("n_prev"))
    return result


def baseline(session: Session, model: str, version_id: str, kind: PredictionKind, until: datetime,
             days: float) -> sequential.Sample:
    """The previous version's record: its predictions of the `days` before `until` whose outcome was known
    by then. Summed in SQL (count, sum, sum of squares): a week of a busy model is never loaded."""
    where = [P.model == model, P.version_id == version_id, P.status == PredictionStatus.COMPLETED, P.kind == kind,
             P.error.is_not(None), P.predicted_at >= until - timedelta(days=days), P.predicted_at < until,
             P.completed_at < until]
    not_binary = sa.func.sum(sa.case(((P.error != 0) & (P.error != 1), 1), else_=0))
    n, total, squares, other = session.execute(
        sa.select(sa.func.count(), sa.func.sum(P.error), sa.func.sum(P.error * P.error), not_binary).where(*where)).one()
    return sequential.Sample.from_sums(int(n or 0), float(total or 0), float(squares or 0), binary=not other)


def losses(session: Session, model: str, version_id: str, kind: PredictionKind, since: datetime, until: datetime,
           limit: int) -> list[float]:
    """The version's losses on what it served since `since`, in the order the outcomes arrived (the first
    `limit`, those known before `until`)."""
    return [float(e) for e in session.scalars(
        sa.select(P.error).where(P.model == model, P.version_id == version_id, P.status == PredictionStatus.COMPLETED,
                                 P.kind == kind, P.error.is_not(None), P.predicted_at >= since,
                                 P.completed_at < until)
        .order_by(P.completed_at, P.id).limit(limit))]


def counterfactual(session: Session, model: str, current: ModelVersion, previous_id: str, kind: PredictionKind,
                   since: datetime, until: datetime, limit: int) -> tuple[list[float], list[float]] | None:
    """The new version's losses since `since` and the previous version's on the same outcomes, its artifact
    run on the features the new version served; None when that artifact cannot be used (missing, corrupt,
    or it refuses the features), and the caller compares with the previous version's record instead."""
    rows = session.execute(
        sa.select(P.features, P.actual, P.error, P.predicted_at).where(
            P.model == model, P.version_id == current.version_id, P.status == PredictionStatus.COMPLETED,
            P.kind == kind, P.error.is_not(None), P.actual.is_not(None), P.predicted_at >= since,
            P.completed_at < until)
        .order_by(P.completed_at, P.id).limit(limit)).all()
    previous = session.get(ModelVersion, previous_id)
    if previous is None:
        return None
    if not rows:
        return [], []
    try:
        rival = registry.load_estimator(previous)
        times = pd.Series([clock.as_utc(r.predicted_at) for r in rows]) if rival.needs_time else None
        served = rival.predict(pd.DataFrame([r.features for r in rows]), time=times).value
    except (ArtifactError, DataError, ValueError, KeyError, TypeError):
        return None
    return ([float(r.error) for r in rows],
            [predictions.outcome_error(kind, float(r.actual), float(v)) for r, v in zip(rows, served, strict=True)])


def _decide(session: Session, model: str, cfg: ModelConfig, now: datetime) -> dict[str, Any]:
    # Locked (PostgreSQL): two checks at once must not both roll back, the second from the restored version.
    current = session.scalar(sa.select(ModelVersion).where(ModelVersion.model == model, ModelVersion.is_production)
                             .with_for_update())
    base: dict[str, Any] = {"model": model, "check": "probation", "checked_at": now.isoformat(),
                            "version_id": current.version_id if current else None}
    if current is None:
        return base | {"status": "no_production", "message": "no production version to watch"}
    if current.probation != "watching":
        state = f"probation {current.probation}" if current.probation else "no probation"
        return base | {"status": "not_watching", "message": f"{current.version_id} is not on probation ({state})"}
    rule = cfg.promotion.probation
    previous_id = current.previous_production_id
    base["previous_version_id"] = previous_id
    if not rule.enabled:
        return base | _end(session, current, now, f"probation is disabled (models.{model}.promotion.probation."
                                                   f"enabled): {current.version_id} is no longer watched")
    last = ledger.history(session, model, limit=1)
    if last and last[0].version_id == current.version_id and last[0].action != "promote":
        # Replaced while still watched, then restored: the known-good fallback is not on trial again.
        return base | _end(session, current, now, f"{current.version_id} is production again by a {last[0].action} "
                                                   f"({last[0].actor}): a restored version is not on probation")
    if previous_id is None:
        return base | _end(session, current, now, f"{current.version_id} replaced no version: nothing to judge it against")
    since = clock.as_utc(current.promoted_at or now)
    kind = PredictionKind(family_class(cfg.family).metric_spec.live.value)
    prev = baseline(session, model, previous_id, kind, since, rule.baseline_days)
    if prev.n < rule.min_outcomes:
        return base | _end(session, current, now, (
            f"{previous_id} has {prev.n} outcome(s) in the {rule.baseline_days:g} days before {current.version_id} "
            f"took production, fewer than {rule.min_outcomes}: no record to judge it against"))
    horizon = sequential.horizon_for(rule.min_outcomes, rule.max_outcomes)
    until = since + timedelta(days=rule.max_days)
    paired = counterfactual(session, model, current, previous_id, kind, since, until, rule.max_outcomes)
    if paired is not None:  # both versions on the same outcomes: a drift at the promotion cancels
        new, rival = paired
        verdict = sequential.paired_test(new, rival, rule.tolerance_pct, rule.alpha, rule.min_outcomes, horizon)
        base["comparison"] = "paired"
    else:  # the previous artifact cannot score them: its own record before the promotion
        new = losses(session, model, current.version_id, kind, since, until, rule.max_outcomes)
        verdict = sequential.probation_test(new, prev, rule.tolerance_pct, rule.alpha, rule.min_outcomes, horizon)
        base["comparison"] = "record"
    days = (now - since).total_seconds() / 86400
    base |= {"verdict": verdict.as_dict(), "outcomes": len(new), "baseline_outcomes": prev.n, "days": round(days, 3)}
    if verdict.status == "worse":
        return base | _roll_back(session, model, current, verdict, now)
    if days >= rule.max_days and len(new) < rule.min_outcomes:
        return base | _end(session, current, now, f"{len(new)} outcome(s) of {current.version_id} in "
                                                   f"{rule.max_days:g} days, fewer than {rule.min_outcomes}")
    if len(new) >= rule.max_outcomes or days >= rule.max_days:
        current.probation, current.probation_ended_at = "passed", now
        why = f"{len(new)} outcomes" if len(new) >= rule.max_outcomes else f"{rule.max_days:g} days"
        message = f"{current.version_id} passed probation after {why}: {verdict.reason}"
        audit.record(session, "probation", f"{model}: {message}", model=model, version_id=current.version_id,
                     outcome="passed", verdict=verdict.as_dict())
        return base | {"status": "passed", "message": message}
    if len(new) < rule.min_outcomes:
        return base | {"status": "insufficient_data", "message": f"{current.version_id} on probation: {verdict.reason}"}
    return base | {"status": "watching", "message": f"{current.version_id} on probation: {verdict.reason}"}


def _end(session: Session, version: ModelVersion, now: datetime, why: str) -> dict[str, Any]:
    """The probation ends without a verdict: not 'passed', which would claim a judgement."""
    version.probation, version.probation_ended_at = None, now
    audit.record(session, "probation", f"{version.model}: probation of {version.version_id} ended unjudged: {why}",
                 model=version.model, version_id=version.version_id, outcome="ended")
    return {"status": "ended", "message": f"probation ended unjudged: {why}"}


def _roll_back(session: Session, model: str, current: ModelVersion, verdict: sequential.Verdict,
               now: datetime) -> dict[str, Any]:
    bad, previous_id = current.version_id, current.previous_production_id
    try:
        with session.begin_nested():  # a failed swap leaves the check's own rows intact
            target = registry.rollback(session, model, actor="probation", reason=verdict.reason, action="auto_rollback")
    except (RollbackArtifactError, PromotionConflict, LookupError, ValueError) as exc:
        message = f"{bad} is worse than {previous_id} but could not be rolled back ({exc}): {verdict.reason}"
        alert = audit.record(session, "alert", f"{model}: {message}", model=model, version_id=bad,
                             action="auto_rollback_failed", verdict=verdict.as_dict())
        session.flush()
        return {"status": "rollback_failed", "message": message, "alert_event_id": alert.id}
    current.probation, current.probation_ended_at = "rolled_back", now
    message = f"{bad} rolled back to {target.version_id} automatically: {verdict.reason}"
    alert = audit.record(session, "alert", f"{model}: {message}", model=model, version_id=bad,
                         restored=target.version_id, action="auto_rollback", actor="probation",
                         verdict=verdict.as_dict())
    session.flush()
    return {"status": "rolled_back", "message": message, "rolled_back_to": target.version_id,
            "alert_event_id": alert.id}
