"""GET /models/live-metric and /models/schedule, which the dashboard draws; the dashboard page and its
assets, served from installed packages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from retrainer import clock
from retrainer.api.trends import next_fire
from retrainer.services import audit, predictions
from tests.retrainer.api.conftest import TOKEN, client_for, db
from tests.support import make_settings, model_config
from tests.tasks.helpers import seed_observations

NOW = datetime(2026, 11, 24, 9, 30, 20, tzinfo=UTC)  # a Tuesday


@pytest.fixture
def pinned() -> Iterator[None]:
    with clock.frozen(NOW):
        yield


def test_next_fire_follows_celery_s_cron_and_intervals() -> None:
    assert next_fire("0 2 * * *", None, NOW) == datetime(2026, 11, 25, 2, tzinfo=UTC)
    assert next_fire("15 * * * *", None, NOW) == datetime(2026, 11, 24, 10, 15, tzinfo=UTC)
    assert next_fire("45 * * * *", None, NOW) == datetime(2026, 11, 24, 9, 45, tzinfo=UTC)
    assert next_fire("0 3 * * 0", None, NOW) == datetime(2026, 11, 29, 3, tzinfo=UTC)  # the next Sunday
    assert next_fire("@every 10m", NOW - timedelta(minutes=4), NOW) == NOW + timedelta(minutes=6)
    assert next_fire("@every 10m", None, NOW) == NOW + timedelta(minutes=10)
    assert next_fire("@every 10m", NOW - timedelta(hours=1), NOW) == NOW  # overdue: due now


def test_schedule_says_when_each_check_ran_and_runs_next(tmp_path: Path, db_url: str, pinned: None) -> None:
    settings = make_settings(tmp_path, db_url, api_token=TOKEN, models={"ctr": model_config(
        schedules={"check": "0 2 * * *", "probation": "@every 10m"}, new_data={"min_samples": 50})})
    seed_observations(db_url, 30)
    with db(settings) as session:
        audit.record(session, "check", "ctr: probation: nothing to watch", model="ctr", check="probation",
                     status="not_applicable")
    with client_for(settings) as client:
        shown = client.get("/models/schedule?model=ctr").json()
    assert set(shown["schedules"]) == {"check", "probation"}  # the ones configured
    check, probation = shown["schedules"]["check"], shown["schedules"]["probation"]
    assert (check["expression"], check["check"], check["last"], check["next_at"]) == (
        "0 2 * * *", "accuracy", None, "2026-11-25T02:00:00+00:00")
    assert probation["last"]["status"] == "not_applicable"
    assert probation["next_at"] == (NOW + timedelta(minutes=10)).isoformat()
    assert shown["new_samples"] == {"count": 30, "at_least": False, "min_samples": 50, "min_hours": 24.0, "since": None}


def test_live_metric_and_its_refusals(client: TestClient, api_settings) -> None:
    with db(api_settings) as session:
        for i in range(4):
            record = predictions.log_prediction(session, "ctr", {"x": 1.0}, 0.06, version_id="ctr-v1",
                                                at=clock.now() - timedelta(hours=i))
            session.flush()
            predictions.record_outcome(session, record.prediction_id, 0.05)
    shown = client.get("/models/live-metric?model=ctr&days=1").json()
    (line,) = shown["series"]
    assert line["version_id"] == "ctr-v1" and sum(p["count"] for p in line["points"]) == 4
    assert line["points"][0]["value"] == pytest.approx(0.01)
    assert client.get("/models/live-metric").json()["model"] == "ctr"  # the only model: may be left out
    assert client.get("/models/live-metric?model=crt").status_code == 404
    assert client.get("/models/live-metric?model=ctr&days=0").status_code == 422
    assert client.get("/models/schedule?model=crt").status_code == 404


def test_the_dashboard_and_its_assets_come_from_installed_packages(client: TestClient) -> None:
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = [line for line in page.text.splitlines() if "src=" in line or "href=" in line]
    assert all("http" not in line for line in sources), sources  # nothing from another host
    for name, kind in (("plotly.min.js", "javascript"), ("dashboard.js", "javascript"), ("dashboard.css", "css"),
                       ("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
        asset = client.get(f"/assets/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"], name
        assert "max-age" in asset.headers["cache-control"]
    assert client.get("/assets/../app.py").status_code == 404
    assert client.get("/assets/secrets.yaml").status_code == 404
    docs = client.get("/docs").text
    assert "/assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN: not served
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"
    assert "/dashboard" not in client.get("/openapi.json").json()["paths"]
