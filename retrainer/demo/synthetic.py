"""A documented, seeded synthetic click-through-rate dataset for the demo, tests and benchmarks.

Each row is one ad impression batch with five numeric features:
  hook_strength (0-1), thumbnail_score (0-1), video_length_s (5-60), hour_of_day (0-23),
  audience_size_log (3-7)
and two segments, hook_type (question/stat/story/shock) and template_id (t1-t5). The true CTR is

  ctr = 0.010 + 0.040·hook_strength + 0.015·thumbnail_score − 0.0003·(video_length_s − 20)
        + 0.005·sin(2π·hour_of_day/24) + 0.002·(audience_size_log − 5) + N(0, 0.002)

clipped to [0.001, 0.5]. Drift (from `drift_from` on) models a platform change: CTR rises by
0.030 + 0.030·thumbnail_score and the hook no longer matters as much (−0.020·hook_strength), so a
model trained before the drift is off by about 0.03 — above the 0.02 MAE threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

HOOK_TYPES = ("question", "stat", "story", "shock")
TEMPLATES = ("t1", "t2", "t3", "t4", "t5")


@dataclass(frozen=True)
class Row:
    features: dict[str, float]
    label: float
    event_time: datetime
    hook_type: str
    template_id: str


def true_ctr(f: dict[str, float], drifted: bool) -> float:
    ctr = (0.010 + 0.040 * f["hook_strength"] + 0.015 * f["thumbnail_score"] - 0.0003 * (f["video_length_s"] - 20)
           + 0.005 * np.sin(2 * np.pi * f["hour_of_day"] / 24) + 0.002 * (f["audience_size_log"] - 5))
    if drifted:
        ctr += 0.030 + 0.030 * f["thumbnail_score"] - 0.020 * f["hook_strength"]
    return float(ctr)


def generate(n: int, start: datetime, end: datetime, seed: int = 7, drift_from: datetime | None = None) -> list[Row]:
    """`n` rows with event times spread evenly over [start, end), in time order."""
    rng = np.random.default_rng(seed)
    span = (end - start).total_seconds()
    rows = []
    for i in range(n):
        at = start + timedelta(seconds=span * i / max(n, 1))
        features = {
            "hook_strength": round(float(rng.uniform(0, 1)), 4),
            "thumbnail_score": round(float(rng.uniform(0, 1)), 4),
            "video_length_s": round(float(rng.uniform(5, 60)), 1),
            "hour_of_day": float(at.hour),
            "audience_size_log": round(float(rng.uniform(3, 7)), 3),
        }
        drifted = drift_from is not None and at >= drift_from
        label = float(np.clip(true_ctr(features, drifted) + rng.normal(0, 0.002), 0.001, 0.5))
        rows.append(Row(features, round(label, 5), at, HOOK_TYPES[int(rng.integers(4))], TEMPLATES[int(rng.integers(5))]))
    return rows


def as_purchase_events(rows: list[Row], model: str, prefix: str) -> list[dict[str, Any]]:
    """The rows as producer events (the batch path's input)."""
    return [
        {"type": "purchase", "model": model, "event_id": f"{prefix}-{i}", "features": r.features,
         "value": r.label, "occurred_at": r.event_time.isoformat()}
        for i, r in enumerate(rows)
    ]


# --- a churn table, as a team would export it to CSV ---------------------------------------------
#
# One row per customer: customer_id, signed_up_at (ISO-8601), plan (basic/pro/team: text, a category),
# seats (1-50), monthly_spend (dollars), annual (true/false) and churned (0/1). Churn follows
#
#   logit = 0.8 − 1.2·[plan = pro] − 2.0·[plan = team] − 0.04·seats − 1.0·[annual] + 0.01·(monthly_spend − 50)
#
# so the plan, a text column, carries most of the signal: a model that ignores it is visibly worse.

PLANS = ("basic", "pro", "team")
_PLAN_EFFECT = {"basic": 0.0, "pro": -1.2, "team": -2.0}


def churn_rows(n: int, start: datetime, end: datetime, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    plan = rng.choice(PLANS, n, p=[0.5, 0.3, 0.2])
    seats = rng.integers(1, 51, n)
    spend = np.round(rng.gamma(4.0, 15.0, n), 2)
    annual = rng.random(n) < 0.35
    logit = (0.8 + np.array([_PLAN_EFFECT[p] for p in plan]) - 0.04 * seats - 1.0 * annual + 0.01 * (spend - 50))
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    times = [start + (end - start) * (i / n) for i in range(n)]
    return [{"customer_id": f"c{seed}-{i:05d}", "signed_up_at": t.isoformat(), "plan": str(p), "seats": int(s),
             "monthly_spend": float(m), "annual": "true" if a else "false", "churned": int(c)}
            for i, (t, p, s, m, a, c) in enumerate(zip(times, plan, seats, spend, annual, churned, strict=True))]


def write_csv(rows: list[dict[str, Any]], path: Any) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
