"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright), served by a real
`retrainer api` process on PostgreSQL and Redis, with a real worker: the page loads with the database's
figures, its charts render, and "Retrain now" creates a request that the worker runs to a promotion.
The test saves a screenshot (docs/dashboard.png when RETRAINER_SCREENSHOT is set: the README's)."""

from __future__ import annotations

import json
import os
import random
import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retrainer.db import session_scope
from retrainer.db.records import RetrainRequest
from retrainer.demo import synthetic
from retrainer.demo.processes import CeleryProcess, child_env, write_config
from retrainer.services import predictions
from tests.retrainer.api.conftest import TOKEN
from tests.retrainer.api.test_cli_api import _free_port
from tests.retrainer.test_cli import RETRAINER
from tests.support import make_settings, need, wait_until
from tests.tasks.helpers import rows, seed_observations

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.worker]
# What CI installs (`make browser`); elsewhere RETRAINER_CHROMIUM names another Chromium or Chrome.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]  # no call home: this machine's network is closed


def chromium() -> str:
    found = os.environ.get("RETRAINER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        need("chromium", "no chromium on PATH: `make browser` installs Debian's, or set RETRAINER_CHROMIUM")
    return str(found)


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def serve_api(settings: Any, workdir: Path) -> tuple[CeleryProcess, str]:
    port = _free_port()
    config = write_config(settings, workdir / "api.yaml")
    api = CeleryProcess(["api", "--port", str(port)], workdir / "api.log", child_env(config), cwd=workdir,
                        program=RETRAINER)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/models/production", timeout=2):
                return True
        except OSError:
            return not api.alive()

    wait_until(answers, timeout=30, what="`retrainer api` to listen")
    assert api.alive(), api.output()[-3000:]
    return api, base


def live_outcomes(url: str, version_id: str, hours: int = 48) -> None:
    """Two days of served predictions with their outcomes, three an hour, so the live chart has a line.
    Their outcomes become training rows too, so they carry the model's real features."""
    rng = random.Random(5)
    start = datetime.now(UTC) - timedelta(hours=hours)
    served = synthetic.generate(hours * 3, start, start + timedelta(hours=hours), seed=5)
    with session_scope(url) as session:
        for i, row in enumerate(served):
            record = predictions.log_prediction(session, "ctr", row.features, row.label + rng.gauss(0, 0.01),
                                                version_id=version_id, at=row.event_time, prediction_id=f"dash-{i}")
            session.flush()
            predictions.record_outcome(session, record.prediction_id, row.label, at=row.event_time + timedelta(minutes=5))


def test_the_dashboard_shows_a_model_and_retrain_now_runs_on_a_worker(tmp_path: Path, pg_url: str, redis_url: str,
                                                                      start_worker, browser) -> None:
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, api_token=TOKEN)
    seed_observations(pg_url, 400)
    start_worker(settings, concurrency=1)
    api, base = serve_api(settings, tmp_path)
    try:
        # A first version, asked for over HTTP as a script would, and a live record for it
        ask = urllib.request.Request(f"{base}/models/retrain", method="POST",
                                     data=json.dumps({"model": "ctr", "reason": "first"}).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(ask, timeout=10) as answer:
            first = json.loads(answer.read())["request_id"]
        done = wait_until(lambda: [r for r in rows(pg_url, RetrainRequest, RetrainRequest.id == first)
                                   if r.status.value in ("completed", "failed")], timeout=60, what="the first retrain")
        assert done[0].status.value == "completed", done[0].error_message
        live_outcomes(pg_url, "ctr-v1")

        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        offsite: list[str] = []
        page.on("request", lambda r: offsite.append(r.url) if not r.url.startswith((base, "data:")) else None)
        # The token travels in the fragment, as `retrainer up` prints it: never sent to the server
        page.goto(f"{base}/dashboard#token={TOKEN}")

        production = page.locator('[data-card="Production"] .value')
        production.wait_for()
        wait_until(lambda: production.inner_text() == "ctr-v1", timeout=20, what="the production card")
        assert page.url == f"{base}/dashboard"  # the fragment with the token is gone from the address bar
        assert page.locator('[data-card="Status"] .value').inner_text() == "active"
        assert page.locator('[data-card="Last run"] .value').inner_text() == "promoted"
        # The live card: production's MAE over the last 7 days, from the same rollup the check reads
        assert "ctr-v1: 144 outcomes in 7 d" in page.locator('[data-card="Live mae"] .detail').inner_text()
        assert page.locator("#history tbody tr").count() == 1
        # Charts: Plotly drew SVG, the live line has the version's points and the threshold is marked
        page.locator("#chart-live .main-svg").first.wait_for()
        assert page.locator("#chart-live .scatterlayer .trace").count() == 1
        assert page.locator("#chart-live .legendtext, #chart-live .annotation-text").filter(has_text="threshold").count() >= 1
        assert page.locator("#chart-holdout .bars .point").count() == 1
        assert page.locator("#chart-frequency .bars .point").count() == 1

        # "Retrain now" with a reason: a request the real worker runs; the page follows it to the end
        page.fill("#retrain-reason", "from the dashboard test")
        page.select_option("#retrain-priority", "high")
        page.click("#retrain-now")
        page.locator("#action-result.ok").wait_for(timeout=15000)
        assert "retrain of ctr requested" in page.locator("#action-result").inner_text()
        asked = rows(pg_url, RetrainRequest, RetrainRequest.reason == "from the dashboard test")
        assert [(r.requested_by, r.priority.value) for r in asked] == [("dashboard", "high")]
        row = page.locator(f'#requests tr[data-request="{asked[0].id}"]')
        wait_until(lambda: row.get_attribute("data-status") in ("completed", "failed"), timeout=60, interval=1,
                   what="the page to show the dashboard's request finished")
        assert row.get_attribute("data-status") == "completed", row.inner_text()
        ran = rows(pg_url, RetrainRequest, RetrainRequest.id == asked[0].id)[0]
        assert ran.run_id and ran.run_id in row.inner_text()
        wait_until(lambda: page.locator("#history tbody tr").count() == 2, timeout=15, what="the run in the history")

        shot = Path(os.environ.get("RETRAINER_SCREENSHOT") or tmp_path / "dashboard.png")
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # Pause from the page: the model's control says so, and the button offers Resume
        page.click("#pause-toggle")
        wait_until(lambda: page.locator('[data-card="Status"] .value').inner_text() == "paused", timeout=15,
                   what="the status card to say paused")
        assert page.locator("#pause-toggle").inner_text() == "Resume"

        assert problems == [] and offsite == [], (problems, offsite)
    finally:
        api.stop()
    assert TOKEN not in api.output()  # the fragment never reached the server's log


def test_no_page_of_the_api_loads_anything_from_another_host(tmp_path: Path, sqlite_url: str, browser) -> None:
    """The dashboard and /docs (Swagger UI) from installed packages only: a closed network loses nothing."""
    from retrainer.db.migrate import upgrade

    upgrade(sqlite_url)
    api, base = serve_api(make_settings(tmp_path, sqlite_url, api_token=TOKEN), tmp_path)
    try:
        page = browser.new_page()
        offsite: list[str] = []
        page.on("request", lambda r: offsite.append(r.url) if not r.url.startswith((base, "data:")) else None)
        page.goto(f"{base}/docs")
        page.locator(".swagger-ui .opblock").first.wait_for(timeout=20000)
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=5) as answer:
            spec = json.loads(answer.read())
        operations = sum(len(methods) for methods in spec["paths"].values())
        assert page.locator(".swagger-ui .opblock").count() == operations > 20  # the OpenAPI 3.1 document, read
        page.goto(f"{base}/")
        assert page.url == f"{base}/dashboard"
        page.locator("#chart-live .main-svg").first.wait_for(timeout=20000)  # no version yet: an empty chart
        assert page.locator('[data-card="Production"] .value').inner_text() == "none yet"
        assert offsite == []
    finally:
        api.stop()
