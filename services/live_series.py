"""A model's live metric over time, one line per version: what the dashboard charts.

Read from the hourly rollup (live_accuracy_hours), never from the prediction records: a 30-day window is
~720 rows per version whatever the traffic. Hours are summed into buckets of whole hours so that a line
has at most MAX_POINTS points, and each bucket's figure comes from the same additive sums, by the same
formulas, as the accuracy check's (accuracy.from_sums). A point is the outcomes of the predictions
made in its bucket, so a late outcome moves the point of the hour its prediction was served in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from retrainer import clock
from retrainer.config import ModelConfig
from retrainer.db.records import NO_VERSION, LiveAccuracyHour, PredictionKind
from retrainer.models.base import LIVE_METRICS, family_class, live_check
from retrainer.services import accuracy, live_rollup

MAX_POINTS = 120  # per version: enough to see a decay, few enough to draw at once
H = LiveAccuracyHour


def bucket_hours(days: float) -> int:
    return max(1, math.ceil(days * 24 / MAX_POINTS))


def series(session: Session, model: str, cfg: ModelConfig, days: float = 30, until: datetime | None = None,
           ) -> dict[str, Any]:
    """The configured live metric (the accuracy check's) per version and bucket over the last `days`."""
    spec = family_class(cfg.family).metric_spec
    kind = spec.live
    holdout_metric = cfg.primary_metric or spec.primary
    metric, threshold = live_check(cfg.family, cfg.accuracy.metric, cfg.accuracy.threshold)
    until = clock.as_utc(until or clock.now())
    width = bucket_hours(days)
    first = live_rollup.hour_of(until - timedelta(days=days))
    columns = [H.version_id, H.hour, *(getattr(H, name) for name in live_rollup.SUMS)]
    rows = session.execute(sa.select(*columns).where(
        H.model == model, H.kind == PredictionKind(kind.value), H.hour >= first, H.hour <= until))
    buckets: dict[tuple[str, datetime], list[Any]] = defaultdict(list)
    for row in rows:
        offset = (clock.as_utc(row.hour) - first) // timedelta(hours=width)
        buckets[(row.version_id, first + offset * timedelta(hours=width))].append(row)
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (version, start), parts in sorted(buckets.items(), key=lambda item: (item[0][1], item[0][0])):
        figures = accuracy.from_sums(kind, accuracy.add_sums(*parts))
        lines[version].append({"at": start.isoformat(), "value": figures[metric], "count": figures.count})
    return {
        "model": model, "metric": metric, "threshold": threshold,
        "higher_is_better": LIVE_METRICS[kind][metric], "days": days, "bucket_hours": width,
        "since": first.isoformat(), "until": until.isoformat(),
        # What promotion decides on: each version's holdout figure is `metrics[holdout_metric]` (/models/versions).
        "holdout_metric": holdout_metric, "holdout_higher_is_better": spec.better_is_higher(holdout_metric),
        # A prediction logged without a version (a team's own serving path) is its own line, version null.
        "series": [{"version_id": version if version != NO_VERSION else None, "points": points}
                   for version, points in lines.items()],
    }
