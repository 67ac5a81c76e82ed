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
