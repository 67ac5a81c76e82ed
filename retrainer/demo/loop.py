"""`retrainer demo`: the whole loop on the embedded default, with real Celery processes.

SQLite + kombu's filesystem:// broker (no server to install), a real worker and a real beat as
child processes. Story: train v1 on two months of history; replay a week of live traffic in which
the market drifts; beat's accuracy check sees live MAE cross 0.02 and a worker retrains, scoring
the candidate and v1 on the same holdout; then a storm of purchase events coalesces into one
retrain; then a team's own data: a churn CSV with a text column, ingested with `retrainer ingest`,
a classifier trained by the same worker, a second file's bad lines refused against the version's
schema, live accuracy per plan. Everything printed is read back from the database the workers wrote.

It runs on its own settings only, whatever the shell exports: RETRAINER_* variables (a production
database, broker, Slack webhook or RETRAINER_CONFIG), Celery's URL variables and a retrainer.yaml in
the working directory are all ignored, by this process and by its children. Its settings, database,
broker folders, artifacts and logs live under var/demo.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from retrainer.config import Settings, get_settings, mask_url, reset_settings
from retrainer.demo.processes import child_env, foreign_settings, start_beat, start_worker, stop_all, write_config

DEMO_DIR = Path("var/demo")  # under the working directory
MODEL = "ctr"
CHURN = "churn"  # the second model: a classifier on a CSV, as a team brings its own
HISTORY_ROWS, DAYS, PER_DAY, STORM_BATCH, STORM_SINGLE = 3000, 7, 300, 500, 40
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def demo_config(var_dir: Path) -> dict[str, Any]:
    var_dir = var_dir.resolve()
    return {  # every location spelled out: nothing falls back to a default read from elsewhere
        "var_dir": str(var_dir),
        "database_url": f"sqlite:///{var_dir / 'retrainer.db'}",
        "broker_url": "filesystem://",
        "result_backend": f"db+sqlite:///{var_dir / 'celery-results.db'}",
        "artifact_dir": str(var_dir / "artifacts"),
        "slack_webhook_url": None,  # decisions are logged, never posted
        "models": {MODEL: {
            "family": "ctr",
            "params": {"n_estimators": 150, "max_depth": 4},
            # beat checks every 5 s here instead of daily at 02:00, so the demo takes a minute
            "schedules": {"check": "@every 5s", "retrain": None, "monitor": None},
            "training": {"max_rows": 2500},
            # the demo plays weeks in a minute: no wait between two promotions (default 6 h)
            "promotion": {"cooldown_hours": 0},
            "debounce_seconds": 5,  # every storm event lands inside one window (all stored within a second or two)
        }, CHURN: {
            # The user's own data: a classifier on a CSV with a text column. No `features` key: the
            # types are inferred from the rows (plan categorical, annual boolean) and recorded.
            "family": "classifier",
            "params": {"n_estimators": 80, "max_depth": 3},
            "schedules": {"check": None, "retrain": None, "monitor": None},
            "debounce_seconds": 1,
        }},
    }


def isolate(config: Path, expected: dict[str, Any]) -> Settings:
    """From here on this process reads only `config`: RETRAINER_* and Celery's URL variables are
    dropped from its environment (which its children inherit) and RETRAINER_CONFIG names `config`, so
    a retrainer.yaml in the working directory is not read either."""
    for name in [name for name in os.environ if foreign_settings(name)]:
        del os.environ[name]
    os.environ["RETRAINER_CONFIG"] = str(config.resolve())
    reset_settings()
    settings = get_settings()
    for key in ("database_url", "broker_url", "result_backend"):  # a new settings source must not leak in
        if getattr(settings, key) != expected[key]:
            raise RuntimeError(f"demo: refusing to run with {key} {mask_url(getattr(settings, key))}")
    return settings


class Processes:
    """The worker and beat children; always stopped, even on Ctrl-C or an error."""

    def __init__(self, var_dir: Path, config: Path):
        self.var_dir, self.env, self.children = var_dir, child_env(config), []

    def worker(self) -> None:  # run inside var/demo: whatever a child writes by a relative path lands there
        self.children.append(start_worker(self.var_dir / "worker.log", name="demo", env=self.env, cwd=self.var_dir))

    def beat(self) -> None:
        self.children.append(start_beat(self.var_dir / "beat.log", self.var_dir / "celerybeat-schedule", self.env,
                                        cwd=self.var_dir))

    def stop(self) -> None:  # as `retrainer up` stops its children: SIGTERM to each main process, then SIGKILL
        stop_all(list(reversed(self.children)))


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for {what} …"):
        while time.monotonic() < deadline:
            if value := predicate():
                return value
            time.sleep(0.3)
    raise TimeoutError(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def run(keep: bool = True) -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    config = DEMO_DIR / "retrainer.yaml"
    expected = demo_config(DEMO_DIR)
    write_config(expected, config)
    settings = isolate(config, expected)
    from retrainer.tasks.app import make_app

    celery_app = make_app(settings)  # its own, whatever configured the module-level app before
    procs = Processes(DEMO_DIR.resolve(), config)
    t0 = time.monotonic()
    try:
        _story(procs, settings, celery_app)
    finally:
        procs.stop()
        celery_app.close()
        from retrainer.db import dispose_engines

        dispose_engines()
        if not keep:
            shutil.rmtree(DEMO_DIR, ignore_errors=True)
    console.print(f"\n[bold green]demo finished in {time.monotonic() - t0:.0f}s[/]; worker and beat stopped. "
                  f"Logs and the SQLite database are in {DEMO_DIR}/")
    return 0


def _story(procs: Processes, settings: Settings, celery_app: Any) -> None:
    import pandas as pd

    from retrainer import clock
    from retrainer.db import session_scope
    from retrainer.db.migrate import upgrade
    from retrainer.db.records import Observation, RetrainRequest, TrainingRun
    from retrainer.demo import synthetic
    from retrainer.models.base import Live
    from retrainer.services import accuracy, predictions, registry
    from retrainer.tasks.enqueue import send_retrain
    from retrainer.tasks.producer import publish_events, send_event

    url = settings.database_url
    step = _stepper()
    step("Embedded default: SQLite + filesystem broker; starting a real Celery worker")
    upgrade(url)
    with console.status("waiting for the worker …"):
        procs.worker()

    now = clock.now()
    drift_at = now - timedelta(days=DAYS)
    step(f"Seeding {HISTORY_ROWS} labelled rows of history (seeded synthetic CTR data, 60 to 7 days ago)")
    history = synthetic.generate(HISTORY_ROWS, now - timedelta(days=60), drift_at, seed=1)
    with session_scope(url) as s:
        s.add_all([Observation(model=MODEL, features=r.features, label=r.label, event_time=r.event_time,
                               source="history", event_id=f"history-{i}") for i, r in enumerate(history)])
    result = send_retrain(MODEL, "manual", settings=settings, via=celery_app).get(timeout=120)
    console.print(f"  worker trained [bold]{result['version_id']}[/]: {result['status']} — {result['reason']}; "
                  f"holdout MAE {result['metrics']['test_mae']:.4f}")

    step(f"Replaying {DAYS} days of live traffic ({PER_DAY} predictions/day); the market drifts")
    with session_scope(url) as s:
        champion = registry.production(s, MODEL)
        estimator = registry.load_estimator(champion)
    traffic = synthetic.generate(DAYS * PER_DAY, drift_at, now - timedelta(minutes=5), seed=2, drift_from=drift_at)
    for day in range(DAYS):
        rows = traffic[day * PER_DAY:(day + 1) * PER_DAY]
        predicted = estimator.predict(pd.DataFrame([r.features for r in rows])).value
        with session_scope(url) as s:
            for r, p in zip(rows, predicted, strict=True):
                rec = predictions.log_prediction(s, MODEL, r.features, float(p), version_id=champion.version_id,
                                                 segments={"hook_type": r.hook_type, "template_id": r.template_id},
                                                 at=r.event_time)
                s.flush()
                predictions.record_outcome(s, rec.prediction_id, r.label, at=r.event_time + timedelta(hours=1))
        with session_scope(url) as s:
            live = accuracy.live_accuracy(s, MODEL, 7, champion.version_id, kind=Live.REGRESSION)
        flag = "[red]above threshold[/]" if live["mae"] > 0.02 else "ok"
        console.print(f"  day {day + 1}: {live.count:4d} outcomes in the 7-day window, live MAE {live['mae']:.4f} {flag}")

    step("Starting Celery beat: accuracy check every 5 s (daily 02:00 in production)")
    procs.beat()

    def run_done(trigger: str) -> TrainingRun | None:
        with session_scope(url) as s:
            return s.query(TrainingRun).filter_by(model=MODEL, trigger=trigger).filter(
                TrainingRun.completed_at.is_not(None)).order_by(TrainingRun.completed_at).first()

    drift_run = wait_for(lambda: run_done("accuracy"), 90, "beat's accuracy check to trigger a retrain")
    _show_run(url, drift_run.run_id)

    step(f"A storm of {STORM_BATCH + STORM_SINGLE} purchase events ({STORM_SINGLE} as single Celery messages, "
         f"{STORM_BATCH} on the batch path)")
    storm = synthetic.generate(STORM_BATCH + STORM_SINGLE, now - timedelta(minutes=4), clock.now(), seed=3,
                               drift_from=drift_at)
    events = synthetic.as_purchase_events(storm, MODEL, prefix="storm")
    for payload in events[:STORM_SINGLE]:
        send_event(payload, via=celery_app)
    published = publish_events(events[STORM_SINGLE:], settings=settings, via=celery_app)
    console.print(f"  batch path: stored {published.stored} in one round trip per 5,000, "
                  f"retrains enqueued {published.retrains_enqueued}")

    def stored() -> int:
        with session_scope(url) as s:
            return s.query(Observation).filter(Observation.event_id.like("storm-%")).count()

    wait_for(lambda: stored() == len(events), 60, "every storm event to be stored")

    def settled() -> list[RetrainRequest] | None:
        with session_scope(url) as s:
            requests = s.query(RetrainRequest).filter_by(model=MODEL, trigger="event").order_by(RetrainRequest.id).all()
        return requests if requests and all(r.status.value in ("completed", "failed") for r in requests) else None

    requests = wait_for(settled, 120, "the coalesced retrain")
    console.print(f"  {stored()}/{len(events)} events stored, 0 lost")
    for n, r in enumerate(requests):
        how = "inside the debounce window" if n == 0 else "while that retrain ran: one follow-up"
        console.print(f"  retrain request {r.id}: {r.event_count} events {how} -> 1 retrain ({r.run_id})")
    storm_run = run_done("event")
    _show_run(url, storm_run.run_id)
    wait_for(lambda: _notified(url) >= 2 + len(requests), 30, "the Slack notifications")
    _churn(step, procs, settings)
    _summary(settings)


def _churn(step: Any, procs: Processes, settings: Settings) -> None:
    """Bring your own data and model family: a churn CSV through `retrainer ingest`, a classifier retrained
    by the same worker, a second file checked against the version's schema, live accuracy by plan."""
    from retrainer import clock
    from retrainer.db import session_scope
    from retrainer.db.records import TrainingRun
    from retrainer.demo import synthetic
    from retrainer.models.base import Live
    from retrainer.services import accuracy, predictions, registry

    url, now = settings.database_url, clock.now()
    step("Your own data: a churn classifier (family classifier) from a CSV whose `plan` column is text")
    first = DEMO_DIR / "churn.csv"
    synthetic.write_csv(synthetic.churn_rows(1500, now - timedelta(days=90), now - timedelta(days=30), seed=4), first)
    _ingest(procs, first)

    def runs() -> list[TrainingRun]:
        with session_scope(url) as s:
            return (s.query(TrainingRun).filter_by(model=CHURN).filter(TrainingRun.completed_at.is_not(None))
                    .order_by(TrainingRun.completed_at).all())

    wait_for(lambda: len(runs()) >= 1, 90, "the worker to train churn-v1")
    with session_scope(url) as s:
        v1 = registry.production(s, CHURN)
        kinds = ", ".join(f"{f['name']} {f['type']}" for f in v1.feature_schema["features"])
        console.print(f"  worker trained [bold]{v1.version_id}[/] on {v1.num_training_samples} rows; schema recorded: "
                      f"{kinds}")
        console.print("  holdout: " + ", ".join(f"{k} {v:.3f}" for k, v in v1.metrics.items() if v is not None))

    second = DEMO_DIR / "churn-new.csv"
    rows = synthetic.churn_rows(400, now - timedelta(days=30), now - timedelta(hours=1), seed=5)
    rows[6]["seats"], rows[120]["annual"] = "many", "maybe"  # two bad lines a real export might carry
    synthetic.write_csv(rows, second)
    console.print("  a second export with two bad lines, checked against churn-v1's schema:")
    _ingest(procs, second)
    run = wait_for(lambda: len(r := runs()) >= 2 and r[-1], 90, "the retrain on the new rows")
    console.print(f"  {run.run_id} ({run.trigger.value}): {run.outcome} — {run.promotion_reason}")

    with session_scope(url) as s:  # serve fresh customers from production, then learn what happened
        served = synthetic.churn_rows(600, now - timedelta(hours=1), now, seed=6)
        for plan in synthetic.PLANS:
            group = [r for r in served if r["plan"] == plan]
            features = [{k: (v == "true" if k == "annual" else v) for k, v in r.items()
                         if k not in ("customer_id", "signed_up_at", "churned")} for r in group]
            for record, row in zip(predictions.predict(s, CHURN, features, segments={"plan": plan}), group,
                                   strict=True):
                s.flush()
                predictions.record_outcome(s, record.prediction_id, row["churned"])
    with session_scope(url) as s:
        live = accuracy.live_accuracy(s, CHURN, 1, kind=Live.CLASSIFICATION)
        by_plan = accuracy.breakdown(s, CHURN, "plan", 1, kind=Live.CLASSIFICATION)
    console.print(f"  served {live.count} predictions with class probabilities, outcomes recorded: live accuracy "
                  f"{live['accuracy']:.3f}, precision {live['precision']:.3f}, recall {live['recall']:.3f}")
    console.print("  by plan (segment): " + ", ".join(f"{k} {a['accuracy']:.3f} (n={a.count})" for k, a in by_plan.items()))


def _ingest(procs: Processes, path: Path) -> None:
    """`retrainer ingest` as a user types it, in a child process reading the demo's settings."""
    import subprocess

    args = ["ingest", CHURN, "--file", str(path.resolve()), "--label", "churned", "--time", "signed_up_at", "--id", "customer_id"]
    console.print(f"  $ retrainer {' '.join(args).replace(str(DEMO_DIR.resolve()), str(DEMO_DIR))}")
    done = subprocess.run([sys.executable, "-m", "retrainer.cli", *args], env=procs.env, cwd=procs.var_dir,
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stderr.splitlines() if line.startswith("line ")] + done.stdout.splitlines()[-1:]
    for line in lines:
        console.print(f"    {line}")
    if done.returncode not in (0, 1):  # 1: some rows rejected, as the second file means to show
        raise RuntimeError(f"demo: retrainer ingest failed: {done.stderr.strip()[-500:]}")


def _stepper() -> Any:
    n = 0

    def step(text: str) -> None:
        nonlocal n
        n += 1
        console.print(f"\n[bold cyan]{n}. {text}[/]")

    return step


def _notified(url: str) -> int:
    from retrainer.db import session_scope
    from retrainer.db.records import SystemEvent

    with session_scope(url) as s:
        return s.query(SystemEvent).filter_by(kind="notification").count()


def _show_run(url: str, run_id: str) -> None:
    from retrainer.db import session_scope
    from retrainer.services import reports

    with session_scope(url) as s:
        evals = reports.evaluations(s, run_id)
        run = next(r for r in reports.history(s, MODEL, 50)["training_runs"] if r["run_id"] == run_id)
    table = Table("model version", "role", "holdout rows", "holdout hash", "MAE", "RMSE", "R²", "within ±20%",
                  title=f"run {run_id} (trigger: {run['trigger']})")
    for e in evals:
        m = e["metrics"]
        table.add_row(e["model_version_id"], e["role"], str(e["holdout"]["rows"]), e["holdout"]["hash"][:12],
                      f"{m['mae']:.4f}", f"{m['rmse']:.4f}", f"{m['r2']:.3f}", f"{100 * m['accuracy']:.1f}%")
    console.print(table)
    same = len({e["holdout"]["hash"] for e in evals}) == 1
    if len(evals) > 1:
        console.print(f"  same holdout rows for both: {'yes' if same else 'NO'}")
    verdict = "PROMOTED" if run["promoted_to_production"] else "KEPT production"
    console.print(f"  decision: [bold]{verdict}[/] — {run['promotion_reason']}")


def _summary(settings: Settings) -> None:
    from retrainer.db import session_scope
    from retrainer.services import reports

    with session_scope(settings.database_url) as s:
        runs = reports.history(s, MODEL, 50)["training_runs"][::-1]
        decisions = reports.events(s, MODEL, ("decision", "promotion", "rollback", "notification"), 50)
        prod = reports.status(s, settings)["models"][MODEL]["production"]
    console.print("\n[bold cyan]Summary[/]")
    table = Table("run", "trigger", "outcome", "version", "train rows", "holdout", "MAE", "prod MAE", "improvement")
    for r in runs:
        m, o = r["metrics"] or {}, r["old_metrics"] or {}
        table.add_row(r["run_id"], r["trigger"], r["outcome"], r["model_version_id"] or "–", str(r["train_size"]),
                      str(r["holdout_size"]), reports.fmt(m.get("mae")), reports.fmt(o.get("mae")),
                      reports.fmt_pct(r["improvement_percentage"]))
    console.print(table)
    console.print("[bold]Decisions and notifications (system_events):[/]")
    for e in decisions:
        console.print(f"  {e['created_at'][11:19]} {e['kind']:<12} {e['message']}")
    console.print(f"Production now: [bold]{prod['version_id']}[/] (trained {prod['trained_at'][:19]})")


if __name__ == "__main__":
    sys.exit(run())
