"""The promotion policy: promote only a candidate that is really better on the same holdout."""

from __future__ import annotations

import math
from dataclasses import dataclass

from retrainer.config import Promotion
from retrainer.models.base import Metrics


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    improvement_pct: float | None
    alert: bool = False  # production is unusable and nothing replaced it: a person must look


def decide(
    candidate: Metrics, champion: Metrics | None, policy: Promotion, champion_id: str | None = None,
    champion_problem: str | None = None,
) -> Decision:
    if candidate.primary in candidate.not_finite:
        return Decision(False, f"Candidate's {candidate.primary} is {candidate.score}, not a finite number; "
                               "not promoted", None)
    if missed := below_floor(candidate, policy.floor):
        return Decision(False, f"Candidate misses the quality floor ({missed}); not promoted", None)
    if champion_id is None:
        if not policy.auto_promote:
            return Decision(False, "First model; auto-promotion is off: promote it by hand if wanted", None)
        return Decision(True, "First model: no production version exists" + _cleared(policy), None)
    if champion is not None and champion.primary in champion.not_finite:
        champion_problem = f"its {champion.primary} on this holdout is {champion.score}"
    if champion_problem is not None:
        # A champion that cannot be scored says nothing about the candidate: only a person, or a
        # candidate that clears the absolute floor, may take production from it.
        unusable = f"Production {champion_id} cannot be scored ({champion_problem})"
        if policy.auto_promote and policy.floor:
            return Decision(True, f"{unusable}; the candidate clears the quality floor{_cleared(policy)}", None)
        return Decision(False, f"{unusable}; kept: promote by hand (retrainer promote VERSION) or set a quality "
                               "floor (promotion.floor) a candidate must clear", None, alert=True)
    assert champion is not None
    pct = candidate.improvement_pct(champion)
    direction = f"{candidate.primary} {champion.score:.4f} -> {candidate.score:.4f}"
    if not policy.auto_promote:
        return Decision(False, f"Auto-promotion is off ({pct:+.1f}% on {direction}); promote by hand if wanted", pct)
    if pct >= policy.min_improvement_pct:
        return Decision(True, f"New model is {pct:.1f}% better than {champion_id} ({direction})", pct)
    verdict = "worse" if pct < 0 else "not enough better"
    return Decision(
        False,
        f"New model is {verdict} than {champion_id}: {pct:+.1f}% ({direction}); needs >= {policy.min_improvement_pct:g}%",
        pct,
    )


def below_floor(metrics: Metrics, floor: dict[str, float]) -> str:
    """The floor limits the metrics miss, as text ('' when all are met); a missing or non-finite
    metric misses its limit."""
    missed = []
    for key, limit in floor.items():
        value = metrics.values.get(key[4:], math.nan)
        ok = value <= limit if key.startswith("max_") else value >= limit
        if not ok:  # NaN compares false either way: missed
            missed.append(f"{key[4:]} {value:.4g} {'>' if key.startswith('max_') else '<'} {limit:g}")
    return ", ".join(missed)


def _cleared(policy: Promotion) -> str:
    return f" (clears {', '.join(f'{k} {v:g}' for k, v in policy.floor.items())})" if policy.floor else ""
