"""(g) Drift check calibration: how often the default thresholds cry drift on data that has none, and how
often they see a shift that is there. Pure computation (services/drift.py), no servers.

Each repetition draws a fresh reference of 10,000 training rows of 15 features of different shapes and
builds its profile (as a retrain does), then draws recent-input windows of 500, 1,000, 2,000 and 10,000
rows from:
  no drift         the same distributions: every flag is a false alarm
  mean shift d     d = 0.1, 0.25, 0.5 standard deviations added to 9 of the 10 numeric features (60 % of
                   all features, above the default share 0.5): the dataset should drift
  categories       the 3-category feature (0.5, 0.3, 0.2) and the 30 % boolean moved: small (0.4, 0.35,
                   0.25; 40 %), medium (0.3, 0.4, 0.3; 50 %), large (0.2, 0.4, 0.4; 60 %)
One compare() gives every method's statistic (wasserstein, ks and psi of a number; psi and chi2's w of
a category), so each method is scored at its default threshold on the same windows. Dataset-level
rates use the default share (0.5) of the 15 features; "worst 1-/2-feature model" is the worst single
feature and the worst pair (share 0.5 of two features: one flag is enough), the small models a
threshold must also hold for.

    python -m benchmarks.drift_calibration [--reps 500] [--seed 7]   # ~4 min
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from retrainer.services import drift

NAME = "drift_calibration"
REFERENCE_ROWS = 10_000
WINDOWS = (500, 1_000, 2_000, 10_000)
SHIFTS = (0.1, 0.25, 0.5)
PLANS = ("basic", "pro", "team")
CATEGORY_MOVES = {"small": ((0.4, 0.35, 0.25), 0.4), "medium": ((0.3, 0.4, 0.3), 0.5), "large": ((0.2, 0.4, 0.4), 0.6)}
ZIPF10 = np.arange(1, 11) ** -1.0 / np.sum(np.arange(1, 11) ** -1.0)
ZIPF30 = np.arange(1, 31) ** -0.8 / np.sum(np.arange(1, 31) ** -0.8)


def numeric_features() -> dict[str, tuple[Callable[[np.random.Generator, int], np.ndarray], float]]:
    """name -> (sampler, its standard deviation): ten shapes a production feature takes."""
    return {
        "normal": (lambda r, n: r.normal(0, 1, n), 1.0),
        "uniform": (lambda r, n: r.uniform(0, 1, n), 12 ** -0.5),
        "lognormal": (lambda r, n: r.lognormal(0, 1, n), float(np.sqrt((np.e - 1) * np.e))),
        "exponential": (lambda r, n: r.exponential(1, n), 1.0),
        "hour_of_day": (lambda r, n: r.integers(0, 24, n).astype(float), float(np.sqrt((24 ** 2 - 1) / 12))),
        "bimodal": (lambda r, n: np.where(r.random(n) < 0.3, r.normal(-2, 0.5, n), r.normal(1, 1, n)), float(np.sqrt(0.3 * 4.25 + 0.7 * 2 - 0.1 ** 2))),
        "age": (lambda r, n: np.round(r.normal(40, 12, n)), 12.0),
        "heavy_tail": (lambda r, n: r.lognormal(0, 1.5, n), float(np.sqrt((np.exp(2.25) - 1) * np.exp(2.25)))),
        "student_t3": (lambda r, n: r.standard_t(3, n), float(np.sqrt(3))),
        "zero_one": (lambda r, n: (r.random(n) < 0.2).astype(float), 0.4),  # a 0/1 flag kept as a number
    }


NUMERIC = numeric_features()
SHIFTED = list(NUMERIC)[:9]  # 9 of 15 features: 60 %
TYPES = {name: "numeric" for name in NUMERIC} | {"plan": "categorical", "channel": "categorical",
                                                  "country": "categorical", "trial": "boolean", "premium": "boolean"}


def draw(r: np.random.Generator, n: int, shift: float = 0.0, plans: tuple[float, ...] = (0.5, 0.3, 0.2),
         trial: float = 0.3) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for name, (sample, std) in NUMERIC.items():
        columns[name] = sample(r, n) + (shift * std if name in SHIFTED else 0.0)
    columns["plan"] = pd.Categorical.from_codes(r.choice(3, n, p=list(plans)), PLANS)
    columns["channel"] = pd.Categorical.from_codes(r.choice(10, n, p=ZIPF10), [f"ch{i}" for i in range(10)])
    columns["country"] = pd.Categorical.from_codes(r.choice(30, n, p=ZIPF30), [f"c{i:02d}" for i in range(30)])
    columns["trial"] = r.random(n) < trial
    columns["premium"] = r.random(n) < 0.05
    return pd.DataFrame(columns)


STATS = ("wasserstein", "ks", "psi", "chi2_w")
METHOD_OF = {"wasserstein": "wasserstein", "ks": "ks", "psi": "psi", "chi2_w": "chi2"}
SWEEP = {"wasserstein": (0.08, 0.1, 0.12, 0.15), "psi": (0.1, 0.2), "chi2_w": (0.2, 0.3)}


def statistics(result: drift.Comparison, names: list[str]) -> dict[str, np.ndarray]:
    """statistic -> its value per feature (NaN where it does not apply: ks of a category)."""
    return {s: np.array([result.features[n].get(s, np.nan) for n in names], dtype=float) for s in STATS}


class Tally:
    """Per window and scenario, a (repetition x feature) matrix of every statistic."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, str], dict[str, list[np.ndarray]]] = {}

    def add(self, window: int, scenario: str, stats: dict[str, np.ndarray]) -> None:
        slot = self.rows.setdefault((window, scenario), {s: [] for s in STATS})
        for s, v in stats.items():
            slot[s].append(v)

    def matrix(self, window: int, scenario: str, stat: str) -> np.ndarray:
        return np.vstack(self.rows[(window, scenario)][stat])


def default_flags(t: Tally, window: int, scenario: str, numeric: np.ndarray) -> np.ndarray:
    """The default test per feature: wasserstein for numbers, psi for categories and booleans."""
    th = drift.DEFAULT_THRESHOLDS
    w, p = t.matrix(window, scenario, "wasserstein"), t.matrix(window, scenario, "psi")
    return np.where(numeric, w >= th["wasserstein"], p >= th["psi"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=500, help="repetitions (fresh reference each) per window size")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    # Imported here: benchmarks/drift.py's children import this module for its shapes alone, and must
    # not carry the servers' libraries into their measured memory.
    from benchmarks import _support as S
    from retrainer.config import DriftCheck

    share, min_samples = DriftCheck().share, DriftCheck().min_samples
    rng = np.random.default_rng(args.seed)
    names = list(TYPES)
    numeric = np.array([TYPES[n] == "numeric" for n in names])
    shifted = np.array([n in SHIFTED for n in names])
    tally = Tally()
    t0 = time.perf_counter()
    for rep in range(args.reps):
        profile = drift.build_profile(draw(rng, REFERENCE_ROWS), TYPES)
        for w in WINDOWS:
            tally.add(w, "none", statistics(drift.compare(profile, draw(rng, w), min_samples=1), names))
            for d in SHIFTS:
                tally.add(w, f"shift {d}", statistics(drift.compare(profile, draw(rng, w, shift=d), min_samples=1), names))
            for key, (plans, trial) in CATEGORY_MOVES.items():
                moved = draw(rng, w, plans=plans, trial=trial)
                tally.add(w, key, statistics(drift.compare(profile, moved, min_samples=1), names))
        if (rep + 1) % 50 == 0:
            S.log(f"{rep + 1}/{args.reps} repetitions, {time.perf_counter() - t0:.0f} s")
    reps, th = args.reps, drift.DEFAULT_THRESHOLDS
    results: dict[str, Any] = {"machine": S.machine(), "reps": reps, "reference_rows": REFERENCE_ROWS,
                               "share": share, "min_samples": min_samples, "thresholds": th, "features": TYPES,
                               "seconds": time.perf_counter() - t0, "windows": {}}
    far_rows, method_rows, sweep_rows, quantile_rows, detect_rows, cat_rows, problems = [], [], [], [], [], [], []
    pairs = list(itertools.combinations(range(len(names)), 2))
    for w in WINDOWS:
        flags = default_flags(tally, w, "none", numeric)
        per_feature = flags.mean(axis=0)
        dataset = float((flags.mean(axis=1) >= share).mean())
        pair_rates = [float((flags[:, i] | flags[:, j]).mean()) for i, j in pairs]
        worst_f, worst_p = int(per_feature.argmax()), int(np.argmax(pair_rates))
        by_method = {}
        for stat in STATS:
            applies = numeric if stat in ("wasserstein", "ks") else ~numeric if stat == "chi2_w" else np.ones_like(numeric)
            rate = (tally.matrix(w, "none", stat)[:, applies] >= th[METHOD_OF[stat]]).mean(axis=0)
            by_method[METHOD_OF[stat]] = {"mean": float(rate.mean()), "worst": float(rate.max()),
                                          "worst_feature": [n for n, a in zip(names, applies, strict=True) if a][int(rate.argmax())]}
        sweep = {}
        for stat, values in SWEEP.items():
            m = tally.matrix(w, "none", stat)[:, numeric if stat == "wasserstein" else ~numeric]
            sweep[stat] = {str(v): float((m >= v).mean(axis=0).max()) for v in values}
        quant = {label: np.quantile(tally.matrix(w, "none", stat)[:, cols], [0.5, 0.95, 0.99]).tolist()
                 for label, stat, cols in (("wasserstein", "wasserstein", numeric), ("psi_numeric", "psi", numeric),
                                           ("psi_categories", "psi", ~numeric), ("chi2_w", "chi2_w", ~numeric))}
        detection = {}
        for d in SHIFTS:
            got = default_flags(tally, w, f"shift {d}", numeric)
            detection[str(d)] = {
                "dataset": float((got.mean(axis=1) >= share).mean()),
                "shifted_features": float(got[:, shifted].mean()),
                "shifted_features_ks": float((tally.matrix(w, f"shift {d}", "ks")[:, shifted] >= th["ks"]).mean()),
                "shifted_features_psi": float((tally.matrix(w, f"shift {d}", "psi")[:, shifted] >= th["psi"]).mean())}
        plan, trial = names.index("plan"), names.index("trial")
        categories = {k: {f"{feature}_{method}": float((tally.matrix(w, k, stat)[:, col] >= th[method]).mean())
                          for feature, col in (("plan", plan), ("trial", trial))
                          for method, stat in (("psi", "psi"), ("chi2", "chi2_w"))} for k in CATEGORY_MOVES}
        results["windows"][str(w)] = {
            "false_alarm": {"dataset": dataset, "per_feature": dict(zip(names, per_feature.tolist(), strict=True)),
                            "mean_per_feature": float(per_feature.mean()),
                            "worst_feature": [names[worst_f], float(per_feature[worst_f])],
                            "worst_pair": [[names[i] for i in pairs[worst_p]], pair_rates[worst_p]],
                            "by_method": by_method, "worst_feature_by_threshold": sweep, "no_drift_quantiles": quant},
            "detection": detection, "categories": categories}
        far_rows.append([f"{w:,}", _pct(dataset), _pct(per_feature.mean()), f"{_pct(per_feature[worst_f])} ({names[worst_f]})",
                         f"{_pct(pair_rates[worst_p])} ({'+'.join(names[i] for i in pairs[worst_p])})"])
        method_rows.append([f"{w:,}"] + [f"{_pct(by_method[m]['mean'])} / {_pct(by_method[m]['worst'])}"
                                         for m in ("wasserstein", "ks", "psi", "chi2")])
        sweep_rows.append([f"{w:,}"] + [_pct(sweep[stat][str(v)]) for stat, values in SWEEP.items() for v in values])
        quantile_rows.append([f"{w:,}"] + [" / ".join(f"{x:.3f}" for x in q) for q in quant.values()])
        detect_rows.append([f"{w:,}"] + [f"{_pct(x['dataset'])} ({_pct(x['shifted_features'])} · {_pct(x['shifted_features_ks'])}"
                                         f" · {_pct(x['shifted_features_psi'])})" for x in detection.values()])
        cat_rows.append([f"{w:,}"] + [f"{_pct(c['plan_psi'])} / {_pct(c['plan_chi2'])} · {_pct(c['trial_psi'])} / "
                                      f"{_pct(c['trial_chi2'])}" for c in categories.values()])
        if w >= min_samples and (dataset > 0.05 or pair_rates[worst_p] > 0.05):
            problems.append(f"window {w}: false alarms above 5 % at or above the default min_samples ({min_samples})")

    S.print_table(f"False alarms, no drift ({reps} checks per window; default test: wasserstein >= {th['wasserstein']}, "
                  f"psi >= {th['psi']}, share {share})",
                  ["window", "dataset (15 features)", "per feature, mean", "worst feature", "worst 2-feature model"], far_rows)
    S.print_table("False alarms per feature by method at its default threshold (mean / worst feature)",
                  ["window", f"wasserstein {th['wasserstein']}", f"ks {th['ks']}", f"psi {th['psi']}", f"chi2 w {th['chi2']}"],
                  method_rows)
    S.print_table("Worst feature's false-alarm rate by threshold",
                  ["window"] + [f"{'w' if s == 'chi2_w' else s} {v}" for s, values in SWEEP.items() for v in values], sweep_rows)
    S.print_table("No-drift statistics: median / 95th / 99th percentile",
                  ["window", "wasserstein (numbers)", "psi (numbers)", "psi (categories)", "chi2 w (categories)"], quantile_rows)
    S.print_table("Detection of a mean shift in 9 of 15 features: dataset drift (shifted features flagged by "
                  "wasserstein · ks · psi)",
                  ["window"] + [f"{d} std" for d in SHIFTS], detect_rows)
    S.print_table("Detection of a category change (flagged, psi / chi2): plan · trial",
                  ["window"] + list(CATEGORY_MOVES), cat_rows)
    results["problems"] = problems
    path = S.write_result(NAME, results)
    print(f"\n{reps} repetitions in {results['seconds']:.0f} s; results in {path}")
    for problem in problems:
        S.banner(problem)
    return 1 if problems else 0


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


if __name__ == "__main__":
    sys.exit(main())
