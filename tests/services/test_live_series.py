"""The live metric over time (services/live_series.py): one line per version, buckets of whole hours that
add up to what the accuracy check reads, never more than MAX_POINTS points a line."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from retrainer import clock
from retrainer.config import Settings
from retrainer.db import session_scope
from retrainer.models.base import Live
from retrainer.services import accuracy, live_series, predictions

NOW = datetime(2024, 6, 1, 12, 37, tzinfo=UTC)


@pytest.fixture(autouse=True)
def pinned_clock() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def served(settings: Settings, version: str | None, start: datetime, hours: int, error: float, per_hour: int = 2) -> None:
    with session_scope(settings.database_url) as session:
        for h in range(hours):
            for i in range(per_hour):
                at = start + timedelta(hours=h, minutes=10 * i)
                record = predictions.log_prediction(session, "ctr", {"x": 1.0}, 0.05 + error, version_id=version, at=at)
                session.flush()
                predictions.record_outcome(session, record.prediction_id, 0.05)


def test_one_line_per_version_whose_buckets_add_up_to_the_check(settings: Settings) -> None:
    served(settings, "ctr-v1", NOW - timedelta(hours=30), 20, error=0.03)
    served(settings, "ctr-v2", NOW - timedelta(hours=10), 10, error=-0.01)
    served(settings, None, NOW - timedelta(hours=5), 3, error=0.02)  # a team's serving path, no version
    cfg = settings.model("ctr")
    with session_scope(settings.database_url) as session:
        shown = live_series.series(session, "ctr", cfg, days=2)
        check = accuracy.live_accuracy(session, "ctr", 2, "ctr-v2", kind=Live.REGRESSION)

    assert (shown["metric"], shown["threshold"], shown["higher_is_better"], shown["bucket_hours"]) == ("mae", 0.02, False, 1)
    assert (shown["holdout_metric"], shown["holdout_higher_is_better"]) == ("mae", False)
    lines = {line["version_id"]: line["points"] for line in shown["series"]}
    assert set(lines) == {"ctr-v1", "ctr-v2", None}
    assert [len(points) for points in lines.values()] == [20, 10, 3]
    assert all(p["count"] == 2 and p["value"] == pytest.approx(0.03) for p in lines["ctr-v1"])
    assert lines["ctr-v1"][0]["at"] == (NOW - timedelta(hours=30)).replace(minute=0).isoformat()
    # The same sums as the check: the version's points add up to its live figure over the window
    assert sum(p["count"] for p in lines["ctr-v2"]) == check.count == 20
    assert sum(p["value"] * p["count"] for p in lines["ctr-v2"]) / check.count == pytest.approx(check["mae"])


def test_a_long_window_is_summed_into_wider_buckets(settings: Settings) -> None:
    served(settings, "ctr-v1", NOW - timedelta(days=29), 29 * 24, error=0.01, per_hour=1)
    with session_scope(settings.database_url) as session:
        shown = live_series.series(session, "ctr", settings.model("ctr"), days=30)
    (line,) = shown["series"]
    assert shown["bucket_hours"] == live_series.bucket_hours(30) == 6
    assert len(line["points"]) <= live_series.MAX_POINTS
    assert sum(p["count"] for p in line["points"]) == 29 * 24
    assert {p["count"] for p in line["points"][1:-1]} == {6}  # whole buckets of six hours, one outcome an hour
    assert shown["series"][0]["points"][0]["at"] >= shown["since"]


def test_nothing_served_is_no_line(settings: Settings) -> None:
    with session_scope(settings.database_url) as session:
        shown = live_series.series(session, "ctr", settings.model("ctr"), days=7)
    assert shown["series"] == [] and shown["until"] == NOW.isoformat()
