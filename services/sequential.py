"""An always-valid sequential test: is a newly promoted version worse than the one it replaced?

The question, per outcome loss (prediction_records.error: |actual - predicted| for regression and
forecasts, 1 if wrong else 0 for classes, so the mean is the live MAE or the error rate; a family whose
primary metric is squared, RMSE or MSE, is judged on its absolute error here, as the live check does):

    H0: mean_new <= (1 + tolerance) * mean_prev     against     H1: mean_new > (1 + tolerance) * mean_prev

The new version's losses arrive one by one; the previous version's record is a fixed sample (its
outcomes in the days before the promotion). The test may be looked at after every outcome: the chance
that it *ever* says "worse" while H0 holds stays at or below `alpha` however often it is looked at,
where a fixed-sample z-test looked at daily for a month says so in 15-27 % of probations at the
tolerance's edge, more on a small record (Armitage, McPherson & Rowe 1969 for why; benchmarks/probation.py
measures both: this test rolls back at most 2.3 % there, alpha being 5 %).

The statistic is a mixture likelihood ratio (Robbins 1970), the mixture sequential probability ratio
test of Johari, Koomen, Pekelis & Walsh ("Always valid inference: continuous monitoring of A/B tests",
Operations Research 2022), one-sided: the excess theta = mean_new - c * mean_prev (c = 1 + tolerance)
is mixed over a half-normal prior, which gives the closed form of Howard, Ramdas, McAuliffe & Sekhon
("Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021, the
one-sided normal mixture). Under H0 the ratio is a nonnegative martingale, so by Ville's inequality it
reaches 1/alpha with probability at most alpha at any time, ever. Its variance is plugged in from the
data, which makes the guarantee asymptotic, as in Waudby-Smith, Arnold, Wu, Ramdas & Howard's
"Time-uniform central limit theory and asymptotic confidence sequences" (Annals of Statistics 2024):
their result is what licenses a plug-in variance and a central limit approximation in place of known
Gaussian increments. The mixture's scale follows their rule for a boundary tightest at `horizon`
outcomes: rho^2 = (2 log(1/alpha) + log(2 log(1/alpha) + 1)) / horizon, in standard deviations.

The previous version's mean is itself an estimate. Treating it as exact would let a baseline that is
low by chance accumulate into a false rollback: its error enters every new outcome alike, so it grows
like n while the boundary grows like sqrt(n log n). It is instead modelled as what it is, a common
shift V ~ N(0, c^2 var / n_prev) of every new outcome (the central limit theorem for the baseline
mean). The test statistic depends on the data only through X_i - c * mean_prev, whose law under the
null boundary is "noise plus the same V in every increment" whatever the true means are, so the
likelihood ratio of that marginal law (V integrated out under both hypotheses) is again a martingale
and Ville's inequality applies. The result: with n new outcomes the evidence saturates once n is much
larger than n_prev / c^2 - a small baseline cannot prove a small degradation, however long one waits -
and a large baseline (a week of outcomes) behaves as a fixed mean.

Robustness, each measured in benchmarks/probation.py (0/1 losses, |N(0,1)| and lognormal absolute
errors, at the null boundary):
- the variance `var`, of a new loss and in V alike, is the larger of the new version's running estimate
  and the baseline's: early on the new version's estimate from 30 skewed outcomes is often far too
  small, which is where a plug-in mixture loses its calibration, and a skewed baseline's variance is
  underestimated together with its mean, which is when a false rollback threatens (with the baseline's
  own variance in V, lognormal(0, 1.5) errors on a 100-outcome record were rolled back in 7.6 % of
  probations at the null edge in a side check; 0.0 % with this rule);
- 0/1 losses: the baseline's variance is the Agresti-Coull p(1-p) with p = (errors + 2) / (n + 4), so a
  previous version with no errors in its record is not taken as certainly perfect;
- every prefix of the new outcomes (from `min_outcomes` on) is evaluated: the verdict is what a test
  looked at after every single outcome would have said, and does not depend on how often it is called.
Not covered: losses without a finite variance (the central limit theorem fails; Pareto errors with
tail index <= 2), and what changed in the world at the moment of the promotion: the comparison is with
the previous version's past outcomes, not a concurrent split of traffic, which the tolerance absorbs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import log_ndtr

DEFAULT_HORIZON = 400  # outcomes: horizon_for(30, 5000), the default probation's


def horizon_for(min_outcomes: int, max_outcomes: int) -> float:
    """Where the boundary is made tightest: the geometric middle of the shortest and the longest probation
    (a large degradation shows within tens of outcomes, a small one needs thousands; the normal mixture
    loses little over a wide range around its horizon, Howard et al. 2021 section 3.5)."""
    return math.sqrt(max(min_outcomes, 1) * max(max_outcomes, min_outcomes, 1))


@dataclass(frozen=True)
class Sample:
    """The previous version's record as the test uses it: how many losses, their mean and variance
    (the variance already made safe for 0/1 losses, see `of`). Computable in SQL from count, sum and
    sum of squares, so a week of outcomes is never loaded row by row."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> Sample:
        y = _finite(values, "previous losses")
        return cls.from_sums(len(y), float(y.sum()), float(np.square(y).sum()), binary=_binary(y))

    @classmethod
    def from_sums(cls, n: int, total: float, squares: float, binary: bool = False) -> Sample:
        if n < 2:
            return cls(n, total / n if n else math.nan, math.nan)
        mean = total / n
        if binary:  # Agresti-Coull: two errors and two right answers added
            p = (total + 2) / (n + 4)
            return cls(n, mean, p * (1 - p))
        return cls(n, mean, max(squares - n * mean * mean, 0.0) / (n - 1))


@dataclass(frozen=True)
class Verdict:
    status: Literal["worse", "continue"]
    statistic: float  # log of the largest mixture likelihood ratio reached so far (the log e-value)
    threshold: float  # log(1 / alpha): "worse" once the statistic reaches it
    n_new: int
    n_prev: int
    mean_new: float | None
    mean_prev: float | None
    reason: str
    p_value: float = 1.0  # always valid: min(1, 1 / the largest ratio reached)
    crossed_at: int | None = None  # the outcome at which the evidence first reached the threshold

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _finite(values: Sequence[float] | np.ndarray, what: str, signed: bool = False) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: {int(np.sum(~np.isfinite(x)))} value(s) are not finite numbers")
    if not signed and np.any(x < 0):
        raise ValueError(f"{what}: a loss is never negative, got {float(x.min())}")
    return x


def _binary(x: np.ndarray) -> bool:
    return bool(x.size) and bool(np.all((x == 0) | (x == 1)))


def mixture_scale(alpha: float, horizon: float) -> float:
    """rho: the half-normal prior's scale for the excess, in standard deviations of one loss, that makes
    the boundary tightest after `horizon` outcomes (Waudby-Smith et al. 2024, eq. 13 there)."""
    log_a = math.log(1 / alpha)
    return math.sqrt((2 * log_a + math.log(2 * log_a + 1)) / horizon)


def evidence(new_losses: Sequence[float] | np.ndarray, prev: Sample, tolerance_pct: float, alpha: float,
             horizon: float = DEFAULT_HORIZON) -> np.ndarray:
    """The log mixture likelihood ratio after each new outcome (element k-1: after k outcomes). Signed
    values (paired differences) are allowed here; the tests check their inputs."""
    x = _finite(new_losses, "new losses", signed=True)
    n = np.arange(1, x.size + 1, dtype=float)
    c = 1 + tolerance_pct / 100
    # Running variance of the new losses, centred on the baseline mean for numerical stability.
    d = x - prev.mean
    s1, s2 = np.cumsum(d), np.cumsum(d * d)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_new = np.where(n > 1, (s2 - s1 * s1 / n) / np.maximum(n - 1, 1), 0.0)
    floor = 1e-12 * max(1.0, prev.mean * prev.mean)  # all losses equal: a tiny variance, not a zero division
    var = np.maximum(np.maximum(var_new, prev.var), floor)
    shift = c * c * var / prev.n  # the variance of c * mean_prev: the baseline's own uncertainty
    total = np.cumsum(x) - n * c * prev.mean  # S_k: the sum of X_i - c * mean_prev
    tau2 = mixture_scale(alpha, horizon) ** 2 * var  # the prior's variance for the excess, in loss units
    a = n * var + n * n * shift  # var(S_k) under the null boundary, V integrated out
    p = n * n / a + 1 / tau2
    b = total * n / a
    # log of: 2 / (tau sqrt(p)) * exp(b^2 / 2p) * Phi(b / sqrt(p))  (the half-normal mixture, closed form)
    return math.log(2) - 0.5 * np.log(tau2 * p) + b * b / (2 * p) + log_ndtr(b / np.sqrt(p))


def probation_test(new_losses: Sequence[float] | np.ndarray, prev_losses: Sequence[float] | np.ndarray | Sample,
                   tolerance_pct: float, alpha: float, min_outcomes: int,
                   horizon: float = DEFAULT_HORIZON) -> Verdict:
    """The verdict on the new version's losses so far (in the order they arrived) against the previous
    version's record: 'worse' once the evidence has reached 1/alpha at any outcome from `min_outcomes`
    on, else 'continue'. Valid whenever it is called, as often as wanted."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if tolerance_pct < 0:
        raise ValueError(f"tolerance_pct is a percentage >= 0, got {tolerance_pct}")
    prev = prev_losses if isinstance(prev_losses, Sample) else Sample.of(prev_losses)
    x = _finite(new_losses, "new losses")
    threshold = math.log(1 / alpha)
    mean_new = float(x.mean()) if x.size else None
    mean_prev = prev.mean if prev.n else None
    common = {"threshold": threshold, "n_new": int(x.size), "n_prev": prev.n, "mean_new": mean_new,
              "mean_prev": mean_prev}
    if prev.n < 2 or not math.isfinite(prev.var):
        return Verdict("continue", 0.0, reason=f"the previous version has {prev.n} outcome(s): nothing to compare",
                       **common)
    start = max(min_outcomes, 2)  # a variance needs two
    if x.size < start:
        return Verdict("continue", 0.0, reason=f"{x.size} of the {start} outcomes a verdict needs", **common)
    path = evidence(x, prev, tolerance_pct, alpha, horizon)[start - 1:]
    ratio = f"{mean_new / prev.mean:.3f}x" if prev.mean > 0 else "n/a"
    shown = (f"mean loss {mean_new:.4g} over {x.size} outcomes vs {prev.mean:.4g} over {prev.n} before "
             f"({ratio}; tolerance {tolerance_pct:g} %)")
    return _verdict(path, start, alpha, tolerance_pct, shown, common)


def _verdict(path: np.ndarray, start: int, alpha: float, tolerance_pct: float, shown: str,
             common: dict[str, Any]) -> Verdict:
    """The verdict from the evidence after each outcome from the `start`-th on."""
    best = float(path.max())
    crossed = np.flatnonzero(path >= math.log(1 / alpha))
    at = int(crossed[0]) + start if crossed.size else None
    p_value = float(min(1.0, math.exp(-best)))
    if at is not None:
        return Verdict("worse", best, reason=f"worse beyond the {tolerance_pct:g} % tolerance: {shown}; evidence "
                       f"reached 1/alpha = {1 / alpha:.0f} at outcome {at} (always-valid p = {p_value:.2g})",
                       p_value=p_value, crossed_at=at, **common)
    return Verdict("continue", best, reason=f"not shown worse: {shown}; evidence {math.exp(best):.3g} of "
                   f"{1 / alpha:.0f} needed", p_value=p_value, **common)


EXACT = 10**15  # a "record" so large its mean carries no uncertainty: the paired test's zero reference


def paired_test(new_losses: Sequence[float] | np.ndarray, prev_losses: Sequence[float] | np.ndarray,
                tolerance_pct: float, alpha: float, min_outcomes: int, horizon: float = DEFAULT_HORIZON) -> Verdict:
    """The verdict when the previous version was scored on the same outcomes as the new one (its artifact
    run on the features the new version served): the same mixture test on the paired differences
    d_i = new_i - (1 + tolerance) * prev_i against a mean of zero, H0: E[d] <= 0. What changed in the
    world at the promotion moves both losses alike and cancels, where the comparison with the previous
    version's past outcomes (probation_test) would blame a drift on the new version."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if tolerance_pct < 0:
        raise ValueError(f"tolerance_pct is a percentage >= 0, got {tolerance_pct}")
    new, prev = _finite(new_losses, "new losses"), _finite(prev_losses, "previous losses")
    if new.size != prev.size:
        raise ValueError(f"{new.size} new and {prev.size} previous losses: a paired test needs both on the same rows")
    threshold = math.log(1 / alpha)
    mean_new, mean_prev = (float(new.mean()), float(prev.mean())) if new.size else (None, None)
    common = {"threshold": threshold, "n_new": int(new.size), "n_prev": int(prev.size), "mean_new": mean_new,
              "mean_prev": mean_prev}
    start = max(min_outcomes, 2)
    if new.size < start:
        return Verdict("continue", 0.0, reason=f"{new.size} of the {start} outcomes a verdict needs", **common)
    c = 1 + tolerance_pct / 100
    path = evidence(new - c * prev, Sample(EXACT, 0.0, 0.0), 0.0, alpha, horizon)[start - 1:]
    ratio = f"{mean_new / mean_prev:.3f}x" if mean_prev else "n/a"
    shown = (f"on the same {new.size} outcomes, mean loss {mean_new:.4g} vs {mean_prev:.4g} by the previous "
             f"version ({ratio}; tolerance {tolerance_pct:g} %)")
    return _verdict(path, start, alpha, tolerance_pct, shown, common)
