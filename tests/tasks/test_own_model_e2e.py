"""The README's "Bring your own model" path, end to end, as a team walks it: its own classifier
(examples/churn_logreg.py, registered by its own distribution's entry point), its own CSV with a text
column ingested with `retrainer ingest`, a real worker on Redis and PostgreSQL retraining it, predictions
from the team's serving path logged as events, outcomes recorded, live accuracy per segment."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retrainer import clock
from retrainer.db import session_scope
from retrainer.db.records import TrainingRun
from retrainer.demo import synthetic
from retrainer.demo.processes import child_env, write_config
from retrainer.models.base import Live
from retrainer.services import accuracy, registry
from retrainer.tasks.producer import publish_events, send_event
from tests.support import make_settings, model_config, wait_until
from tests.tasks.helpers import rows

pytestmark = [pytest.mark.worker, pytest.mark.redis, pytest.mark.postgres]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn_logreg.py"
FEATURES = {"plan": "categorical", "seats": "numeric", "monthly_spend": "numeric", "annual": "boolean"}


def install_plugin(site: Path) -> None:
    """What `pip install` of the team's package leaves behind: the module and an entry point."""
    site.mkdir()
    shutil.copy(EXAMPLE, site / "churn_logreg.py")
    meta = site / "churn_logreg-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: churn-logreg\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text("[retrainer.models]\nchurn_logreg = churn_logreg:ChurnLogReg\n")


def ingest(config: Path, csv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrainer.cli", "ingest", "churn", "--file", str(csv), "--label", "churned",
         "--time", "signed_up_at", "--id", "customer_id"],
        env=child_env(config), capture_output=True, text=True, timeout=120, check=False)


def test_own_classifier_on_own_csv_with_logged_predictions(tmp_path: Path, pg_url: str, redis_url: str, start_worker,
                                                           make_celery, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # this process, and (below) the worker and the CLI
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    # The paired bootstrap scores a plugin without a vectorised `resampled` by calling its evaluate() per
    # resample (about 2 ms each): 200 resamples, not 1,000; the first model beats a constant by far either way.
    settings = make_settings(tmp_path, pg_url, broker_url=redis_url, models={
        "churn": model_config(family="churn_logreg", params={"C": 0.5}, features=FEATURES,
                              promotion={"significance": {"resamples": 200}})})
    config = write_config(settings, tmp_path / "retrainer.yaml")
    start_worker(settings)
    app = make_celery(settings)
    now = clock.now()

    # 1. the team's export: 1,200 customers, `plan` is text
    csv = tmp_path / "churn.csv"
    synthetic.write_csv(synthetic.churn_rows(1200, now - timedelta(days=60), now - timedelta(days=2), seed=11), csv)
    done = ingest(config, csv)
    assert done.returncode == 0, done.stderr
    assert "1200 stored, 0 already there, 0 rejected" in done.stdout

    def completed() -> list[TrainingRun]:
        return rows(pg_url, TrainingRun, TrainingRun.model == "churn", TrainingRun.completed_at.is_not(None),
                    order_by=TrainingRun.completed_at)

    run = wait_until(lambda: completed(), 120, what="the worker's retrain of churn")[0]
    assert (run.trigger.value, run.outcome) == ("new_samples", "retrained"), run.error_message
    with session_scope(pg_url) as s:
        v1 = registry.production(s, "churn")
        assert (v1.version_id, v1.family, v1.algorithm) == ("churn-v1", "churn_logreg", "logistic_regression")
        schema = {f["name"]: f for f in v1.feature_schema["features"]}
        assert {n: f["type"] for n, f in schema.items()} == FEATURES
        assert schema["plan"]["categories"] == ["basic", "pro", "team"]
        assert v1.metrics["roc_auc"] > 0.7  # the plan carries most of the signal (synthetic.churn_rows)
        estimator = registry.load_estimator(v1)

    # 2. a re-run of the same file stores nothing twice; a bad line is refused by its line number
    assert "0 stored, 1200 already there" in ingest(config, csv).stdout
    fresh = synthetic.churn_rows(50, now - timedelta(days=2), now - timedelta(days=1), seed=12)
    fresh[3]["plan"] = ""  # line 5: a required feature missing
    synthetic.write_csv(fresh, tmp_path / "more.csv")
    more = ingest(config, tmp_path / "more.csv")
    assert more.returncode == 1 and "line 5: features.plan: missing" in more.stderr, more.stderr
    assert "49 stored" in more.stdout

    # 3. the team serves from its own process and logs each prediction as an event (batch path); the
    # outcomes arrive later, one Celery message each (per-event path)
    served = synthetic.churn_rows(300, now - timedelta(hours=3), now - timedelta(hours=1), seed=13)
    X = pd.DataFrame([{k: (r[k] == "true" if k == "annual" else r[k]) for k in FEATURES} for r in served])
    predicted = estimator.predict(X)
    published = publish_events([
        {"type": "prediction", "model": "churn", "prediction_id": r["customer_id"], "version_id": "churn-v1",
         "features": X.iloc[i].to_dict() | {"seats": int(r["seats"])}, "predicted": int(predicted.value[i]),
         "proba": {"0": float(predicted.proba[i, 0]), "1": float(predicted.proba[i, 1])},
         "segments": {"plan": r["plan"]}, "occurred_at": r["signed_up_at"]}
        for i, r in enumerate(served)], settings=settings, via=app)
    assert (published.stored, published.rejected) == (300, [])
    for r in served:
        send_event({"type": "outcome", "prediction_id": r["customer_id"], "value": r["churned"]}, via=app)

    def live() -> accuracy.Accuracy | None:
        with session_scope(pg_url) as s:
            acc = accuracy.live_accuracy(s, "churn", 1, kind=Live.CLASSIFICATION)
        return acc if acc.count == 300 else None

    overall = wait_until(live, 60, what="300 outcomes recorded by the worker")
    truth = np.array([r["churned"] for r in served])
    assert overall["accuracy"] == pytest.approx(float(np.mean(predicted.value == truth)))
    with session_scope(pg_url) as s:
        by_plan = accuracy.breakdown(s, "churn", "plan", 1, kind=Live.CLASSIFICATION)
    plans = np.array([r["plan"] for r in served])
    assert set(by_plan) == {"basic", "pro", "team"}
    for plan, acc in by_plan.items():
        mine = plans == plan
        assert acc.count == int(mine.sum())
        assert acc["accuracy"] == pytest.approx(float(np.mean(predicted.value[mine] == truth[mine])))
