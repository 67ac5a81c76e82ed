"""(i) Promotion gate: how often each promotion rule replaces a champion with a candidate that is not
better (A/A), and how often it promotes one that truly is (power), by holdout size. Real fitted
models, pure computation, no servers, one core.

Data: the demo's synthetic CTR (retrainer/demo/synthetic.py, no drift): five numeric features and
ctr = true_ctr(features) + N(0, 0.002), clipped and rounded as the demo does, drawn here in
vectorised form (checked against `synthetic.true_ctr` at start). Models: the `ctr` family (XGBoost,
40 trees of depth 3, one thread), each fitted on its own `--train-rows` (2,000) fresh rows.

Per seed, two models A (the candidate) and B (the champion) are fitted on independent samples, and a
fresh holdout of 2,000 rows is drawn; each holdout size n scores the first n of its rows.
  A/A          A against B as fitted: trained the same way, equally good in expectation. Any
               promotion is one that brings nothing on average (though on the population a given A
               may be a little better or worse than its B: that spread is reported too).
  exact x %    the candidate truly better by x % in MAE on the population: 100 (MAE_B - MAE_A) /
               MAE_B = x exactly, for x = -2 (truly worse), 0 (exactly equal), 2, 5, 10.
How "truly" is made exact: one of the pair is degraded by adding Gaussian noise N(0, s²) to its
predictions, with s solved so that its expected MAE on a large independent population sample
(`--population`, 100,000 rows, fixed for the run) is exactly the target: the champion degraded to
MAE_A / (1 - x/100) when it is better than that, otherwise the candidate degraded to
MAE_B (1 - x/100). The expectation over the noise is exact (E|e + sZ| is the folded normal mean,
increasing in s), so "truly x %" holds for each pair up to the population sample's own error
(reported: the standard error of the paired relative difference on it), and both models keep the
independent errors of separately trained models. On the holdout each degraded prediction gets fresh
noise.

Rules, each applied to the same paired test (services.significance.paired_bootstrap with the
configured defaults: 1,000 resamples, 95 %, seed 0) on MAE, the ctr family's primary metric:
  plain         point estimate >= min_improvement_pct (2 %): the rule before the gate
  gate          point >= 2 % and the interval's lower bound > min_lower_bound_pct (0): the default
  strict        point >= 2 % and lower bound >= 2 %
  interval      lower bound > 0 alone: the test's own size (at exactly 0 %: 2.5 % nominal)
Every rate carries a Wilson 95 % interval. The recommended min_holdout_rows is the smallest size at
which the gate promotes a truly 10 % better candidate at least half the time. Exit 1 when the test is
miscalibrated where the gate decides: at exactly 0 % its lower bound exceeds 0 in more than (1-c)/2 =
2.5 % of seeds (the rate's whole Wilson interval above it) at a holdout >= min_holdout_rows; below it,
the same finding is printed as a note.

    python -m benchmarks.promotion_gate [--seeds 1000] [--seed 5]  # ~10 min on one core
    python -m benchmarks.promotion_gate --quick                    # 50 seeds, a ~15 s smoke test
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr
from threadpoolctl import threadpool_limits

from benchmarks import _support
from retrainer.config import Promotion
from retrainer.demo import synthetic
from retrainer.models.base import Prediction
from retrainer.models.ctr import CTRFamily
from retrainer.services.significance import paired_bootstrap

NAME = "promotion_gate"
SIZES = (50, 100, 200, 500, 1_000, 2_000)
EFFECTS = (-2.0, 0.0, 2.0, 5.0, 10.0)
PARAMS = {"n_estimators": 40, "max_depth": 3, "n_jobs": 1}
RULES = ("plain", "gate", "strict", "interval")
POWER_TARGET = 0.5  # "useful power" at +10 %


def draw(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """n rows of the demo's CTR data set before its drift (retrainer/demo/synthetic.py), vectorised."""
    f = {"hook_strength": np.round(rng.uniform(0, 1, n), 4), "thumbnail_score": np.round(rng.uniform(0, 1, n), 4),
         "video_length_s": np.round(rng.uniform(5, 60, n), 1), "hour_of_day": rng.integers(0, 24, n).astype(float),
         "audience_size_log": np.round(rng.uniform(3, 7, n), 3)}
    ctr = (0.010 + 0.040 * f["hook_strength"] + 0.015 * f["thumbnail_score"] - 0.0003 * (f["video_length_s"] - 20)
           + 0.005 * np.sin(2 * np.pi * f["hour_of_day"] / 24) + 0.002 * (f["audience_size_log"] - 5))
    y = np.round(np.clip(ctr + rng.normal(0, 0.002, n), 0.001, 0.5), 5)
    return pd.DataFrame(f), y


def check_generator() -> None:
    """The vectorised formula is the demo's: equal row by row to synthetic.true_ctr."""
    X, _ = draw(np.random.default_rng(0), 50)
    ours = (0.010 + 0.040 * X["hook_strength"] + 0.015 * X["thumbnail_score"] - 0.0003 * (X["video_length_s"] - 20)
            + 0.005 * np.sin(2 * np.pi * X["hour_of_day"] / 24) + 0.002 * (X["audience_size_log"] - 5))
    theirs = [synthetic.true_ctr(row, drifted=False) for row in X.to_dict("records")]
    if not np.allclose(ours.to_numpy(), theirs, rtol=0, atol=1e-15):
        raise SystemExit("benchmarks.promotion_gate: the vectorised generator no longer matches synthetic.true_ctr")


def noisy_mae(err: np.ndarray, s: float) -> tuple[float, float]:
    """E|e + sZ| averaged over the rows, Z standard normal (the folded normal mean, exact), and its
    derivative in s, mean 2 phi(e/s): increasing and convex in s."""
    if s == 0:
        return float(np.mean(np.abs(err))), float("nan")
    u = err / s
    density = math.sqrt(2 / math.pi) * np.exp(-0.5 * u * u)
    return float(np.mean(s * density + err * (1 - 2 * ndtr(-u)))), float(np.mean(density))


def noise_for(err: np.ndarray, target: float) -> float:
    """The noise s >= 0 that makes the expected MAE of predictions with these errors `target`. Newton's
    method from above (M(s) >= s sqrt(2/pi), so s = target sqrt(pi/2) is above the root) on an increasing
    convex function: it falls to the root without overshooting, to a relative 1e-12."""
    if target <= noisy_mae(err, 0.0)[0]:
        return 0.0
    s = target * math.sqrt(math.pi / 2)
    for _ in range(100):
        value, slope = noisy_mae(err, s)
        if value - target <= 1e-12 * target:
            break
        s -= (value - target) / slope
    return s


def plan(err_a: np.ndarray, err_b: np.ndarray, effect: float) -> tuple[float, float, float]:
    """(noise on A, noise on B, achieved improvement %) so that A is truly `effect` % better than B."""
    a, b = noisy_mae(err_a, 0.0)[0], noisy_mae(err_b, 0.0)[0]
    if b < a / (1 - effect / 100):
        sa, sb = 0.0, noise_for(err_b, a / (1 - effect / 100))
    else:
        sa, sb = noise_for(err_a, b * (1 - effect / 100)), 0.0
    ma, mb = noisy_mae(err_a, sa)[0], noisy_mae(err_b, sb)[0]
    return sa, sb, 100 * (mb - ma) / mb


def rules(point: float, lower: float, policy: Promotion) -> dict[str, bool]:
    """Each rule's verdict on one paired test (NaN bounds promote nothing)."""
    enough = point >= policy.min_improvement_pct
    return {"plain": enough, "gate": enough and lower > policy.significance.min_lower_bound_pct,
            "strict": enough and lower >= policy.min_improvement_pct, "interval": lower > 0}




def rate(hits: int, n: int) -> dict[str, Any]:
    return {"rate": hits / n, "hits": hits, "trials": n, "wilson95": list(_support.wilson(hits, n))}


def cell(r: dict[str, Any]) -> str:
    low, high = r["wilson95"]
    return f"{100 * r['rate']:.1f}% ({100 * low:.1f}–{100 * high:.1f})"


def scenario_name(effect: float | None) -> str:
    return "A/A" if effect is None else f"exact {effect:+g}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1000, help="model pairs (each with a fresh holdout)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--train-rows", type=int, default=2_000, help="training rows of each model")
    parser.add_argument("--population", type=int, default=100_000, help="rows that define 'truly' x %% better")
    parser.add_argument("--quick", action="store_true", help="50 seeds, a 50,000-row population: a smoke test")
    args = parser.parse_args()
    from benchmarks import _support as S

    seeds, population = (50, 50_000) if args.quick else (args.seeds, args.population)
    policy = Promotion()
    sig = policy.significance
    check_generator()
    family = CTRFamily(**PARAMS)
    scenarios: list[float | None] = [None, *EFFECTS]
    # verdicts[scenario][size][rule] -> hits; points/lowers kept for quantiles
    hits = {scenario_name(e): {n: dict.fromkeys(RULES, 0) for n in SIZES} for e in scenarios}
    points = {scenario_name(e): {n: [] for n in SIZES} for e in scenarios}
    aa_truth, achieved, noise_used = [], {e: [] for e in EFFECTS}, {e: [] for e in EFFECTS}
    population_mae, paired_se, paired_cv = [], [], []
    holdout_gain = {scenario_name(e): [] for e in scenarios}
    Xpop, ypop = draw(np.random.default_rng([args.seed, 0]), population)
    threadpool_limits(1)  # one core: BLAS (the resampled sums) and XGBoost (n_jobs 1) alike
    t0 = time.perf_counter()
    seconds = {"fit": 0.0, "calibrate": 0.0, "test": 0.0}
    for seed in range(seeds):
        rng = np.random.default_rng([args.seed, 1, seed])
        t = time.perf_counter()
        a = CTRFamily(**PARAMS, random_state=2 * seed).fit(*draw(rng, args.train_rows))
        b = CTRFamily(**PARAMS, random_state=2 * seed + 1).fit(*draw(rng, args.train_rows))
        err_a, err_b = a.predict(Xpop).value - ypop, b.predict(Xpop).value - ypop
        Xh, yh = draw(rng, max(SIZES))
        pa, pb = a.predict(Xh).value, b.predict(Xh).value
        seconds["fit"] += time.perf_counter() - t
        t = time.perf_counter()
        mae_a, mae_b = float(np.mean(np.abs(err_a))), float(np.mean(np.abs(err_b)))
        aa_truth.append(100 * (mae_b - mae_a) / mae_b)
        d = np.abs(err_b) - np.abs(err_a)  # the per-row difference the paired test averages
        population_mae.append(mae_a)
        paired_cv.append(float(d.std()) / mae_b)
        paired_se.append(100 * paired_cv[-1] / math.sqrt(population))
        z = rng.standard_normal((2, max(SIZES)))  # fresh noise for a degraded prediction on the holdout
        cases: dict[str, tuple[np.ndarray, np.ndarray]] = {"A/A": (pa, pb)}
        for effect in EFFECTS:
            sa, sb, got = plan(err_a, err_b, effect)
            achieved[effect].append(got)
            noise_used[effect].append(max(sa, sb))
            cases[scenario_name(effect)] = (pa + sa * z[0], pb + sb * z[1])
        seconds["calibrate"] += time.perf_counter() - t
        t = time.perf_counter()
        for name, (cand, ref) in cases.items():
            for n in SIZES:
                test = paired_bootstrap(family, yh[:n], Prediction(cand[:n]), Prediction(ref[:n]), "mae",
                                        resamples=sig.resamples, confidence=sig.confidence, seed=sig.seed)
                points[name][n].append(test.point_pct)
                for rule, verdict in rules(test.point_pct, test.lower_pct, policy).items():
                    hits[name][n][rule] += verdict
            holdout_gain[name].append(points[name][max(SIZES)][-1])
        seconds["test"] += time.perf_counter() - t
        if (seed + 1) % 25 == 0 or seed + 1 == seeds:
            S.log(f"{seed + 1}/{seeds} seeds, {time.perf_counter() - t0:.0f} s")

    results: dict[str, Any] = {
        "machine": S.machine(), "seeds": seeds, "seed": args.seed, "quick": args.quick, "train_rows": args.train_rows,
        "population": population, "params": PARAMS, "sizes": list(SIZES), "effects_pct": list(EFFECTS),
        "policy": {"min_improvement_pct": policy.min_improvement_pct, "significance": sig.model_dump(),
                   "min_holdout_rows": policy.min_holdout_rows},
        "seconds": time.perf_counter() - t0, "seconds_by_step": seconds, "rates": {}, "construction": {}}
    for name in hits:
        results["rates"][name] = {str(n): {rule: rate(hits[name][n][rule], seeds) for rule in RULES} for n in SIZES}
    truth = np.array(aa_truth)
    results["construction"] = {
        "aa_true_improvement_pct": {"mean": float(truth.mean()), "sd": float(truth.std()),
                                    "quantiles_5_50_95": np.quantile(truth, [0.05, 0.5, 0.95]).tolist(),
                                    "share_at_least_2pct": float((truth >= 2).mean())},
        "population_mae_mean": float(np.mean(population_mae)),
        # sd of |e_B| - |e_A| per row over MAE_B: what sets the paired test's noise (another data set with
        # the same ratio has the same power at the same holdout size)
        "paired_difference_sd_over_mae": float(np.mean(paired_cv)),
        "population_paired_se_pct": float(np.mean(paired_se)),
        "achieved_max_abs_error_pct": max(float(np.max(np.abs(np.array(v) - e))) for e, v in achieved.items()),
        "noise_sd_median": {str(e): float(np.median(v)) for e, v in noise_used.items()},
        "holdout_2000_mean_point_pct": {k: float(np.mean(v)) for k, v in holdout_gain.items()},
    }
    # the recommendation: the smallest measured size where the gate finds a true +10 % at least half the time
    power10 = results["rates"][scenario_name(10.0)]
    useful = [n for n in SIZES if power10[str(n)]["gate"]["rate"] >= POWER_TARGET]
    results["recommended_min_holdout_rows"] = useful[0] if useful else None
    # The test's calibration: at exactly 0 % the interval alone should exceed 0 at most (1-c)/2 of the time.
    # Where the gate decides (holdout >= min_holdout_rows) a miss fails the run; below, it is a note (the
    # first model's baseline test may still run there).
    nominal = (1 - sig.confidence) / 2
    problems, notes = [], []
    for n in SIZES:
        r = results["rates"][scenario_name(0.0)][str(n)]["interval"]
        if r["wilson95"][0] > nominal:
            (problems if n >= policy.min_holdout_rows else notes).append(
                f"holdout {n}: lower bound > 0 for an exactly equal candidate in {100 * r['rate']:.1f} % of seeds, "
                f"Wilson interval above the nominal {100 * nominal:g} %")
    results["problems"], results["notes"] = problems, notes

    columns = [scenario_name(e) for e in scenarios]
    # The gate is the interval AND the point rule, so equal counts mean the very same promotions.
    same = all(hits[c][n]["gate"] == hits[c][n]["interval"] for c in hits for n in SIZES)
    results["interval_alone_equals_gate"] = same
    for rule, title in (("plain", "plain rule: point estimate >= 2 %"),
                        ("gate", "default gate: point >= 2 % and 95 % lower bound > 0"),
                        ("strict", "strict gate: point >= 2 % and lower bound >= 2 %"),
                        ("interval", "interval alone: lower bound > 0 (the test's size at exact +0 %)")):
        if rule == "interval" and same:
            print("\nInterval alone (lower bound > 0): the default gate's table, cell for cell: wherever the lower "
                  "bound cleared 0, the point estimate was >= 2 % too.")
            continue
        S.print_table(f"Promotion rate, {title} ({seeds} seeds, Wilson 95 %)", ["holdout rows", *columns],
                      [[f"{n:,}", *(cell(results["rates"][c][str(n)][rule]) for c in columns)] for n in SIZES])
    c = results["construction"]
    q = c["aa_true_improvement_pct"]["quantiles_5_50_95"]
    print(f"\nA/A pairs on the population: true improvement of A over B 5/50/95 % quantiles {q[0]:+.2f} / "
          f"{q[1]:+.2f} / {q[2]:+.2f} %, A truly >= 2 % better in {100 * c['aa_true_improvement_pct']['share_at_least_2pct']:.1f} %"
          f" of pairs; 'exact' effects met to {c['achieved_max_abs_error_pct']:.1e} pp (population paired SE "
          f"{c['population_paired_se_pct']:.3f} pp)")
    print(f"recommended min_holdout_rows (gate finds a true +10 % >= {100 * POWER_TARGET:.0f} % of the time): "
          f"{results['recommended_min_holdout_rows']}")
    path = S.write_result(NAME + ("_quick" if args.quick else ""), results)
    print(f"\n{seeds} seeds in {results['seconds']:.0f} s (fit {seconds['fit']:.0f}, calibrate "
          f"{seconds['calibrate']:.0f}, tests {seconds['test']:.0f}); results in {path}")
    for note in notes:
        print(f"note (below min_holdout_rows {policy.min_holdout_rows}): {note}")
    for problem in problems:
        S.banner(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
