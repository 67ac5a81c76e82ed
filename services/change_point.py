"""When did the production version get worse? A CUSUM test for one shift in the mean of its per-outcome
losses (0/1 errors of a classifier, absolute errors of a regressor), in the order they were served.

The statistic is the largest standardised deviation of the cumulative sum from its straight line,
max_k |S_k - k/n S_n| / (sd sqrt(n)). With no shift it tends to the supremum of a Brownian bridge, whose
distribution is Kolmogorov's (scipy.stats.kstwobign): the p-value below. The change is placed at the
maximum-likelihood split (Page 1954; Csörgő & Horváth, Limit Theorems in Change-Point Analysis, 1997). The sd is
that of all the losses, which a real shift inflates: the test errs on the side of no change.

The accuracy check uses it to train on the new world only: a candidate fitted on a window that is mostly
the old concept learns the old concept, and a threshold anchored on that candidate's holdout then no
longer sees that it is poor (benchmarks/README.md (j)). Its false alarm rate on stationary losses is
measured in tests/services/test_change_point.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kstwobign

ALPHA = 0.05  # the test's level, at one look
MIN_SIDE = 30  # a change needs this many losses on each side to be estimated at all


@dataclass(frozen=True)
class Shift:
    index: int  # the first loss of the new regime
    before: float  # mean loss before it
    after: float  # mean loss from it on
    statistic: float
    p_value: float

    @property
    def worse(self) -> bool:
        return self.after > self.before


def mean_shift(losses: np.ndarray, alpha: float = ALPHA) -> Shift | None:
    """The most likely single shift in the mean of `losses` (oldest first), if significant at `alpha`;
    None with fewer than 2 * MIN_SIDE losses, constant losses or no significant shift."""
    x = np.asarray(losses, dtype=float)
    n = len(x)
    if n < 2 * MIN_SIDE or not np.all(np.isfinite(x)):
        return None
    sd = float(x.std())
    if sd == 0:
        return None
    k = np.arange(1, n)
    bridge = np.cumsum(x)[:-1] - k / n * x.sum()  # S_k - k/n S_n for k = 1..n-1
    inside = (k >= MIN_SIDE) & (k <= n - MIN_SIDE)
    statistic = float(np.abs(bridge[inside]).max() / (sd * np.sqrt(n)))
    p_value = float(kstwobign.sf(statistic))
    if p_value >= alpha:
        return None
    # Where: the maximum-likelihood split (the bridge weighted by 1/sqrt(k(n-k))); the plain CUSUM's
    # argmax is pulled towards the middle, 140 outcomes early for a change 300 outcomes from the end.
    at = int(np.argmax(np.where(inside, bridge**2 / (k * (n - k)), -1.0)))
    index = at + 1  # bridge[at] sums the first at + 1 losses
    return Shift(index, float(x[:index].mean()), float(x[index:].mean()), statistic, p_value)
