"""The promotion policy: promote only a candidate that is really better on the same holdout."""

from __future__ import annotations

from dataclasses import dataclass

from models.base import Metrics
from retrainer.config import Promotion


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    improvement_pct: float | None


def decide(
    candidate: Metrics, champion: Metrics | None, policy: Promotion, champion_id: str | None = None,
    champion_problem: str | None = None,
) -> Decision:
    if champion_id is None:
        return Decision(True, "First model: no production version exists", None)
    if champion_problem is not None:
        if not policy.auto_promote:
            return Decision(False, f"Production {champion_id} is unusable ({champion_problem}); auto-promotion is off", None)
        return Decision(True, f"Production {champion_id} is unusable ({champion_problem}); the candidate replaces it", None)
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
