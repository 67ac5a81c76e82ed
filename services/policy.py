"""The promotion policy: promote only a candidate that is really better on the same holdout.

Each rule is checked and recorded with its threshold, its value and its verdict (the decision record
`retrainer explain RUN_ID` shows); the candidate is promoted only when every rule passes, and the
reason names the first that did not. Replacing a usable champion needs, in order:

  evidence      the holdout has at least `min_holdout_rows` rows
  improvement   the point estimate of the relative improvement reaches `min_improvement_pct`
  significance  the paired bootstrap's lower confidence bound clears `min_lower_bound_pct` (beyond noise)
  guards        no guarded metric worse beyond its tolerance, overall or in a segment
  cooldown      the last change of production is `cooldown_hours` old
  auto_promote  automatic promotion is on

The first model, or a replacement of a champion that cannot be scored, must instead beat a constant
prediction beyond noise (`baseline`) and clear the quality floor when one is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retrainer.config import Promotion
from retrainer.models.base import Metrics


@dataclass(frozen=True)
class Rule:
    rule: str
    threshold: Any
    value: Any
    passed: bool | None  # None: not applied (and why is in `note`)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "threshold": _plain(self.threshold), "value": _plain(self.value),
                "passed": self.passed, "note": self.note}


@dataclass(frozen=True)
class Guard:
    """One guarded metric on the holdout, overall (segment None) or in one segment's rows."""

    metric: str
    segment: str | None
    candidate: float
    champion: float
    worse_pct: float  # how much worse the candidate is, in percent of the champion's value (+ = worse)
    tolerance_pct: float
    rows: int

    @property
    def passed(self) -> bool:
        return not self.worse_pct > self.tolerance_pct  # NaN: nothing measurable, not a breach

    def text(self) -> str:
        where = f" in {self.segment}" if self.segment else ""
        return (f"{self.metric}{where} {self.champion:.4g} -> {self.candidate:.4g} "
                f"({self.worse_pct:+.1f}% worse, tolerance {self.tolerance_pct:g}%)")


@dataclass(frozen=True)
class Evidence:
    """What the decision is made from, all measured on one holdout."""

    candidate: Metrics
    holdout_rows: int
    champion: Metrics | None = None
    champion_id: str | None = None
    champion_problem: str | None = None  # the champion could not be scored: why
    test: Any = None  # services.significance.PairedTest of candidate vs champion (None: not run)
    baseline_test: Any = None  # PairedTest of candidate vs a constant prediction
    guards: tuple[Guard, ...] = ()
    last_change: datetime | None = None  # when production last changed
    now: datetime | None = None


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    improvement_pct: float | None
    alert: bool = False  # production is unusable and nothing replaced it: a person must look
    rules: tuple[Rule, ...] = field(default=())

    def record(self) -> dict[str, Any]:
        """The decision record stored on the run."""
        return {"promote": self.promote, "summary": self.reason,
                "improvement_pct": _plain(self.improvement_pct), "rules": [r.to_json() for r in self.rules]}


def decide(evidence: Evidence, policy: Promotion) -> Decision:
    cand = evidence.candidate
    rules: list[Rule] = []
    if cand.primary in cand.not_finite:
        rules.append(Rule("finite", "finite", _plain(cand.score), False))
        return Decision(False, f"Candidate's {cand.primary} is {cand.score}, not a finite number; not promoted",
                        None, rules=tuple(rules))
    missed = below_floor(cand, policy.floor)
    if policy.floor:
        rules.append(Rule("floor", dict(policy.floor), {k[4:]: cand.values.get(k[4:]) for k in policy.floor},
                          not missed, missed))
    if missed:
        return Decision(False, f"Candidate misses the quality floor ({missed}); not promoted", None, rules=tuple(rules))
    champion, champion_id = evidence.champion, evidence.champion_id
    problem = evidence.champion_problem
    if champion is not None and champion.primary in champion.not_finite:
        problem = f"its {champion.primary} on this holdout is {champion.score}"
    if champion_id is None or problem is not None:
        return _without_champion(evidence, policy, rules, problem)
    assert champion is not None
    return _against_champion(evidence, champion, champion_id, policy, rules)


def _without_champion(evidence: Evidence, policy: Promotion, rules: list[Rule], problem: str | None) -> Decision:
    """The first model, or one replacing a champion that cannot be scored: it must beat a constant."""
    first = evidence.champion_id is None
    what = "First model: no production version exists" if first else \
        f"Production {evidence.champion_id} cannot be scored ({problem})"
    beats, baseline_note = _beats_baseline(evidence, policy, rules)
    if not beats:
        return Decision(False, f"{what}; the candidate {baseline_note}: not promoted", None,
                        alert=not first, rules=tuple(rules))
    if not first and not (policy.baseline or policy.floor):
        # Nothing vouches for the candidate: only a person may take production from the champion.
        return Decision(False, f"{what}; kept: promote by hand (retrainer promote VERSION), or set a quality floor "
                               "(promotion.floor) or promotion.baseline a candidate must clear", None,
                        alert=True, rules=tuple(rules))
    rules.append(Rule("auto_promote", True, policy.auto_promote, policy.auto_promote))
    if not policy.auto_promote:
        return Decision(False, f"{what}; auto-promotion is off: promote it by hand if wanted", None, rules=tuple(rules))
    cleared = [note for note in (baseline_note, _cleared(policy)) if note]
    return Decision(True, what + ("; " + "; ".join(cleared) if cleared else ""), None, rules=tuple(rules))


def _beats_baseline(evidence: Evidence, policy: Promotion, rules: list[Rule]) -> tuple[bool, str]:
    if not policy.baseline:
        return True, ""
    test = evidence.baseline_test
    if test is None:
        rules.append(Rule("baseline", "> constant", None, None, "no baseline could be scored"))
        return True, ""
    point, lower = test.point_pct, test.lower_pct
    bootstrap = policy.significance.test == "bootstrap"
    measured = lower if bootstrap else point
    passed = _finite(measured) and measured > 0
    bound = f"lower bound {lower:+.1f}%" if bootstrap else f"{point:+.1f}%"
    note = (f"beats a constant prediction ({test.metric} {point:+.1f}%, {bound})" if passed
            else f"does not beat a constant prediction beyond noise ({test.metric} {point:+.1f}%, {bound})")
    rules.append(Rule("baseline", "> 0% vs constant" + (" (lower bound)" if bootstrap else ""), _plain(measured),
                      passed, note))
    return passed, note


def _against_champion(evidence: Evidence, champion: Metrics, champion_id: str, policy: Promotion,
                      rules: list[Rule]) -> Decision:
    cand = evidence.candidate
    pct = cand.improvement_pct(champion)
    direction = f"{cand.primary} {champion.score:.4f} -> {cand.score:.4f}"
    failures: list[str] = []

    def check(rule: Rule, failure: str) -> None:
        rules.append(rule)
        if rule.passed is False:
            failures.append(failure)

    rows, least = evidence.holdout_rows, policy.min_holdout_rows
    check(Rule("evidence", least, rows, rows >= least),
          f"the holdout has {rows} rows; automatic promotion needs >= {least} (promotion.min_holdout_rows)")
    verdict = "worse" if pct < 0 else "not enough better"
    check(Rule("improvement", policy.min_improvement_pct, _plain(pct), pct >= policy.min_improvement_pct),
          f"New model is {verdict} than {champion_id}: {pct:+.1f}% ({direction}); needs >= "
          f"{policy.min_improvement_pct:g}%")
    sig = policy.significance
    test = evidence.test
    if sig.test == "none":
        rules.append(Rule("significance", None, None, None, "significance.test is none: point estimate only"))
    elif test is None or not _finite(test.lower_pct):
        check(Rule("significance", sig.min_lower_bound_pct, None, False, "the paired test was inconclusive"),
              "the paired test was inconclusive (too few finite resamples)")
    else:
        level = f"{sig.confidence:.0%}"
        check(Rule("significance", sig.min_lower_bound_pct, _plain(test.lower_pct),
                   test.lower_pct > sig.min_lower_bound_pct, f"{level} interval {_interval(test)}"),
              f"not better beyond noise: {level} interval of the improvement {_interval(test)} "
              f"(lower bound must be > {sig.min_lower_bound_pct:g}%)")
    breached = [g for g in evidence.guards if not g.passed]
    if evidence.guards or policy.guards:
        check(Rule("guards", dict(policy.guards), [g.text() for g in breached] or "all within tolerance",
                   not breached, f"{len(evidence.guards)} guard measurement(s)"),
              "a guarded metric is worse beyond its tolerance: " + "; ".join(g.text() for g in breached[:3]))
    if evidence.last_change is not None and evidence.now is not None and policy.cooldown_hours > 0:
        hours = (evidence.now - evidence.last_change).total_seconds() / 3600
        check(Rule("cooldown", policy.cooldown_hours, round(hours, 2), hours >= policy.cooldown_hours),
              f"cooldown: production changed {hours:.1f} h ago; no automatic promotion within "
              f"{policy.cooldown_hours:g} h (promotion.cooldown_hours)")
    check(Rule("auto_promote", True, policy.auto_promote, policy.auto_promote),
          f"Auto-promotion is off ({pct:+.1f}% on {direction}); promote by hand if wanted")
    if failures:
        head = failures[0]
        if not head.startswith("New model"):
            head = f"Kept {champion_id} ({pct:+.1f}% on {direction}): {head}"
        more = f" (and {len(failures) - 1} more rule(s) failed)" if len(failures) > 1 else ""
        return Decision(False, head + more, pct, rules=tuple(rules))
    beyond = f", {sig.confidence:.0%} interval {_interval(test)}" if sig.test == "bootstrap" and test else ""
    return Decision(True, f"New model is {pct:.1f}% better than {champion_id} ({direction}{beyond})", pct,
                    rules=tuple(rules))


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
    return f"clears the quality floor ({', '.join(f'{k} {v:g}' for k, v in policy.floor.items())})" if policy.floor else ""


def _interval(test: Any) -> str:
    return f"[{test.lower_pct:+.1f}%, {test.upper_pct:+.1f}%]"


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
