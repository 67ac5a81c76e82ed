"""`retrainer replay`: a labelled, time-ordered CSV through the real loop, in simulated time.

The first `warmup` rows are stored as labelled observations and a real worker trains the first version
(a manual retrain). Then, row by row in time order, the production version predicts the row (its
artifact loaded here, as a serving process would), the prediction is logged and its outcome recorded
(which also stores the row as a training observation): test, then train. At the simulated times the
model's schedules name, beat's checks run in this process and a retrain they ask for is sent to the
worker, which decides and promotes as it would in production; rollbacks come from the probation check.

Simplifications, so that a replay is deterministic and its figures comparable:
- while a retrain runs, simulated time stands still: the replay waits for it (and for any follow-up)
  before the next row or check; in production the old version keeps serving while the new one trains;
- checks that fall due at the same time run one after the other, each waiting for the retrain it asked
  for; a round of checks with no new row since the last one is skipped (an idle stretch of the stream);
- a row's outcome is known at the row's own time (the label arrives with the next row, at the latest).

Simulated time reaches the worker through the clock file (retrainer/clock.py), written at each round.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from retrainer import clock
from retrainer.config import ConfigError, ModelConfig, Settings, mask_url
from retrainer.demo.processes import CeleryProcess
from retrainer.models.base import Family, Live, Prediction, check_models, family_class
from retrainer.replay import baselines, environment
from retrainer.replay.beat import CHECK_OF, SimulatedBeat
from retrainer.replay.stream import ReplayInputError, Stream, read


class ReplayError(RuntimeError):
    """The loop itself failed during a replay (a worker died, a retrain timed out, no first version)."""


@dataclass(frozen=True)
class Options:
    csv: Path
    label: str
    family: str | None = None
    time: str | None = None
    model: str = "replay"
    warmup: int = 1000
    every: timedelta = timedelta(minutes=1)  # between rows, when there is no time column
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)  # the first row's time, when there is no time column
    every_rows: int = 1000  # the periodic baseline's refit interval
    config: Path | None = None
    var_dir: Path | None = None


@dataclass(frozen=True)
class Progress:
    rows: int  # replayed so far (after the warm-up)
    total: int
    at: datetime
    production: str | None
    retrains: int


@dataclass
class _Loop:
    """What the walk keeps: the settings, the worker, the production version serving now."""

    settings: Settings
    cfg: ModelConfig
    model: str
    kind: Live
    worker: CeleryProcess
    clock_file: Path
    app: Any
    version_id: str | None = None
    estimator: Family | None = None
    # The production version's predictions of every row from `served_from` on, made once when it took
    # production: a row's prediction depends only on the version and the row, and one call for the rest of
    # the stream costs less than XGBoost's ~10 ms per call on the few rows between two rounds.
    served: Prediction | None = None
    served_from: int = 0
    retrains: int = 0
    checks: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    # Each accuracy check's verdict and figures, in order (the report's `accuracy_checks`)
    accuracy: list[dict[str, Any]] = field(default_factory=list)


def run(options: Options, progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
    """Replay the file; the report (the `--json` shape). Bad input raises ReplayInputError, a bad
    configuration ConfigError, a failure of the loop ReplayError."""
    started = time.perf_counter()
    if options.warmup < 2 or options.every_rows < 1 or options.every <= timedelta(0):
        raise ReplayInputError("--warmup must be at least 2, --every-rows at least 1 and --every positive")
    var_dir = (options.var_dir or Path(tempfile.mkdtemp(prefix="retrainer-replay-"))).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _run(options, var_dir, started, progress)
    finally:
        from retrainer.db import dispose_engines

        dispose_engines()
        clock.set_now(None)
        if options.var_dir is None:
            shutil.rmtree(var_dir, ignore_errors=True)


def _run(options: Options, var_dir: Path, started: float, progress: Callable[[Progress], None] | None) -> dict[str, Any]:
    data, models = environment.from_config(options.config, var_dir) if options.config else (
        environment.embedded(var_dir), {})
    configured = models.get(options.model)
    family = options.family or (configured or {}).get("family")
    if family is None:
        raise ReplayInputError(f"give --family NAME (or define model {options.model!r} in --config)")
    if configured is not None and configured["family"] != family:
        raise ReplayInputError(f"--family {family}: model {options.model!r} in --config is of family "
                               f"{configured['family']!r}")
    try:
        cls = family_class(family)
    except LookupError:
        from retrainer.config import available_families

        raise ReplayInputError(f"unknown model family {family!r}; installed families: "
                               f"{', '.join(sorted(available_families()))}") from None
    kind = cls.metric_spec.live
    if kind not in baselines.METRICS:
        raise ReplayInputError(f"family {family!r} is a {kind.value} family; replay scores classifiers and regressors")
    stream = read(options.csv, options.label, options.time, kind, options.start, options.every)
    if len(stream) <= options.warmup:
        raise ReplayInputError(f"{options.csv}: {len(stream)} rows; --warmup {options.warmup} needs more "
                               f"(at least {options.warmup + 1})")
    classes = len(np.unique(stream.labels)) if kind == Live.CLASSIFICATION else 0
    cfg = configured or environment.model_config(family, kind, classes, options.warmup)
    if cfg.get("training", {}).get("source") is not None:
        raise ReplayInputError(f"model {options.model!r} trains from its own SQL query; replay feeds observations")
    settings, config_file = environment.settle(data | {"models": {options.model: cfg}}, var_dir)
    if problems := check_models(settings.models):
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    records = stream.records()
    loop = _start(settings, options, kind, var_dir, config_file, stream, records)
    try:
        predicted = _walk(loop, stream, records, options.warmup, progress)
        never = baselines.never(stream, family, loop.cfg.params, options.warmup)
        periodic = baselines.periodic(stream, family, loop.cfg.params, options.warmup, options.every_rows,
                                      loop.cfg.training.max_rows)
        return _report(loop, stream, options, predicted, never, periodic, time.perf_counter() - started)
    finally:
        loop.worker.stop()
        loop.app.close()


# --- start: schema, worker, the first version -----------------------------------------------------

def _start(settings: Settings, options: Options, kind: Live, var_dir: Path, config_file: Path, stream: Stream,
           records: list[dict[str, Any]]) -> _Loop:
    from retrainer.db import session_scope
    from retrainer.db.migrate import upgrade
    from retrainer.db.records import ModelVersion, Observation, PredictionRecord
    from retrainer.tasks.app import make_app
    from retrainer.tasks.enqueue import send_retrain
    from retrainer.tasks.health import check_broker

    url, model = settings.database_url, options.model
    upgrade(url)
    with session_scope(url) as s:
        for table in (ModelVersion, Observation, PredictionRecord):
            if s.scalar(sa.select(sa.func.count()).select_from(table).where(table.model == model)):
                raise ReplayInputError(f"the database at {mask_url(url)} already holds rows "
                                       f"of model {model!r}: give another --model, or a fresh database")
    warm_end = stream.times[options.warmup - 1].to_pydatetime()
    clock.set_now(warm_end)
    clock_file = var_dir / "clock"
    clock.write_file(clock_file, warm_end)
    with session_scope(url) as s:
        s.add_all([Observation(model=model, features=records[i], label=float(stream.labels[i]),
                               event_time=stream.times[i].to_pydatetime(), created_at=stream.times[i].to_pydatetime(),
                               source="replay", event_id=f"replay-{uuid.uuid4().hex}")
                   for i in range(options.warmup)])
    app = make_app(settings)
    try:
        check_broker(app)  # a dead broker in seconds, not after the worker's start-up timeout
        loop = _Loop(settings, settings.model(model), model, kind,
                     environment.worker(var_dir, config_file, clock_file), clock_file, app)
    except BaseException:
        app.close()
        raise
    try:
        send_retrain(model, "manual", settings=settings, via=loop.app)
        _wait_idle(loop)
        _refresh(loop)
        if loop.estimator is None:
            raise ReplayError(f"warm-up: the worker promoted no first version of {model!r}: {_last_reason(loop)}")
    except BaseException:
        loop.worker.stop()
        loop.app.close()
        raise
    loop.retrains = 0
    return loop


def _last_reason(loop: _Loop) -> str:
    from retrainer.db import session_scope
    from retrainer.db.records import TrainingRun

    with session_scope(loop.settings.database_url) as s:
        run = s.scalars(sa.select(TrainingRun).where(TrainingRun.model == loop.model)
                        .order_by(TrainingRun.started_at.desc()).limit(1)).first()
        return "no run" if run is None else f"{run.outcome}: {run.promotion_reason or run.error_message}"


# --- the walk -------------------------------------------------------------------------------------

def _walk(loop: _Loop, stream: Stream, records: list[dict[str, Any]], warmup: int,
          progress: Callable[[Progress], None] | None) -> np.ndarray:
    """Every row after the warm-up, predicted by the version in production at its time; the checks at
    their simulated times between rows. Returns the loop's predictions."""
    predicted = np.empty(len(stream) - warmup)
    beat = SimulatedBeat(loop.cfg, stream.times[warmup - 1].to_pydatetime())
    i, fresh = warmup, False
    while i < len(stream):
        due = beat.next_due()
        j = len(stream) if due is None else int(np.searchsorted(stream.times.asi8, _ns(due), side="left"))
        if j > i:
            predicted[i - warmup:j - warmup] = _serve(loop, stream, records, i, j)
            i, fresh = j, True
        if i >= len(stream) or due is None:
            break
        keys = beat.pop_due(due)
        if fresh:  # a round with no new row since the last one changes nothing: skipped
            _round(loop, due, keys)
            fresh = False
            if progress is not None:
                progress(Progress(i - warmup, len(stream) - warmup, due, loop.version_id, loop.retrains))
    return predicted


def _ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, as the stream's times (asi8) hold them."""
    return int(pd.Timestamp(moment).value)


def _serve(loop: _Loop, stream: Stream, records: list[dict[str, Any]], i: int, j: int) -> np.ndarray:
    """Rows i..j-1 predicted by the production version (one version serves between two rounds), each
    prediction logged and its outcome recorded (the outcome is also the row's training observation)."""
    from retrainer.db import session_scope
    from retrainer.services import live_rollup, predictions

    assert loop.estimator is not None
    if loop.served is None:
        loop.served, loop.served_from = loop.estimator.predict(stream.features.iloc[i:]), i
    served, first = loop.served, i - loop.served_from
    values = np.asarray(served.value[first:first + j - i], dtype=float)
    proba = None if served.proba is None else served.proba[first:first + j - i]
    confidence = None if proba is None else proba.max(axis=1)
    classes = [str(int(c)) for c in served.classes] if proba is not None and served.classes else None
    with session_scope(loop.settings.database_url) as s:
        batch = live_rollup.Batch()
        for k in range(i, j):
            at = stream.times[k].to_pydatetime()
            clock.set_now(at)
            n = k - i
            record = predictions.log_prediction(
                s, loop.model, records[k], values[n], version_id=loop.version_id,
                confidence=None if confidence is None else float(confidence[n]),
                proba=None if classes is None else dict(zip(classes, map(float, proba[n]), strict=True)),
                prediction_id=uuid.uuid4().hex, at=at, kind=loop.kind)
            predictions.record_outcome(s, record.prediction_id, float(stream.labels[k]), at=at, rollup=batch)
            batch.keep()
        batch.write(s)
    return values


def _round(loop: _Loop, at: datetime, keys: list[str]) -> None:
    """Beat's checks due at `at`, in this process; a retrain one asks for runs on the worker, waited for."""
    from retrainer.db import session_scope
    from retrainer.db.records import Trigger
    from retrainer.services import retrain_requests, triggers
    from retrainer.services.retrain_requests import Enqueue
    from retrainer.tasks.checks import TASKS
    from retrainer.tasks.enqueue import send_jobs

    clock.set_now(at)
    clock.write_file(loop.clock_file, at)
    for key in keys:
        name = CHECK_OF[key]
        check = triggers.CHECKS.get(name) if name else None
        if name is not None and check is None:
            continue  # a schedule whose check this version of retrainer does not have
        job, trigger = None, check.trigger if check else Trigger.SCHEDULE  # no check: the scheduled retrain
        with session_scope(loop.settings.database_url) as s:
            result = check.decide(s, loop.model, loop.cfg) if check else {"status": "scheduled"}
            if result["status"] in ("retrain_needed", "scheduled") and trigger is not None:
                job = retrain_requests.for_check(
                    s, loop.settings, loop.model, trigger,
                    TASKS.get(name, f"checks.{name}").split(".")[1] if name else "beat", result)
        if name == "accuracy":
            loop.accuracy.append(_accuracy_entry(at, result))
        suppressed = job is not None and not isinstance(job, Enqueue)  # paused, or the budget spent
        loop.checks[name or "retrain"]["suppressed" if suppressed else result["status"]] += 1
        if isinstance(job, Enqueue):  # sent after its request committed, as beat's task does
            send_jobs([job], trigger=trigger.value, settings=loop.settings, via=loop.app)
            _wait_idle(loop)
        _refresh(loop)  # a retrain may have promoted, probation may have rolled back


def _accuracy_entry(at: datetime, result: dict[str, Any]) -> dict[str, Any]:
    """What an accuracy check saw: its metric's value over how many outcomes, the threshold in force (and
    the production version's holdout figure a relative one derives from), and whether it was breached,
    a breach the kept-candidate cooldown silenced included."""
    metric, current = result.get("metric"), result.get("current_accuracy") or {}
    cooled = "alert_event_id" in result
    return {"at": at, "status": result["status"], "version_id": result.get("production_version"),
            "value": current.get(metric), "count": current.get("count"), "threshold": result.get("threshold"),
            "holdout_value": (result.get("relative") or {}).get("holdout_value"),
            "breached": result["status"] in ("retrain_needed", "waiting_for_data") or cooled, "cooldown": cooled,
            "change": result.get("change")}


def _wait_idle(loop: _Loop) -> None:
    """Until the model has no pending or running retrain request (a follow-up included)."""
    from retrainer.db import session_scope
    from retrainer.db.records import RequestStatus, RetrainRequest

    deadline = time.monotonic() + loop.cfg.training.time_limit_seconds + 120
    while True:
        with session_scope(loop.settings.database_url) as s:
            waiting = s.scalar(sa.select(sa.func.count()).select_from(RetrainRequest).where(
                RetrainRequest.model == loop.model,
                RetrainRequest.status.in_([RequestStatus.PENDING, RequestStatus.PROCESSING])))
        if not waiting:
            break
        if not loop.worker.alive():
            raise ReplayError(f"the worker exited ({loop.worker.proc.returncode}); its log: {loop.worker.log}")
        if time.monotonic() > deadline:
            raise ReplayError(f"a retrain of {loop.model!r} did not finish in time; the worker's log: {loop.worker.log}")
        time.sleep(0.05)
    loop.retrains = _fitted(loop)


def _fitted(loop: _Loop) -> int:
    """Runs that fitted a candidate (kept or promoted), the warm-up's first version not counted."""
    from retrainer.db import session_scope
    from retrainer.db.records import TrainingRun

    with session_scope(loop.settings.database_url) as s:
        count = s.scalar(sa.select(sa.func.count()).select_from(TrainingRun).where(
            TrainingRun.model == loop.model, TrainingRun.version_id.is_not(None)))
    return max(0, (count or 0) - 1)


def _refresh(loop: _Loop) -> None:
    """Load the production version's artifact when production changed (a promotion or a rollback)."""
    from retrainer.db import session_scope
    from retrainer.services import registry

    with session_scope(loop.settings.database_url) as s:
        version = registry.production(s, loop.model)
        if version is not None and version.version_id != loop.version_id:
            loop.estimator, loop.version_id = registry.load_estimator(version), version.version_id
            loop.served = None


# --- the report -----------------------------------------------------------------------------------

def _report(loop: _Loop, stream: Stream, options: Options, predicted: np.ndarray, never: baselines.Baseline,
            periodic: baselines.Baseline, seconds: float) -> dict[str, Any]:
    from retrainer.db import session_scope
    from retrainer.db.records import LedgerEntry, TrainingRun

    metric = baselines.METRICS[loop.kind]
    labels = stream.labels[options.warmup:]
    with session_scope(loop.settings.database_url) as s:
        runs = list(s.scalars(sa.select(TrainingRun).where(TrainingRun.model == loop.model)
                              .order_by(TrainingRun.started_at, TrainingRun.run_id)))
        ledger = list(s.scalars(sa.select(LedgerEntry).where(LedgerEntry.model == loop.model).order_by(LedgerEntry.id)))
        first = next((r.run_id for r in runs if r.version_id is not None), None)
        later = [r for r in runs if r.run_id != first]

        def row_of(moment: datetime) -> int:
            # how many replayed rows were served before it (rows at a round's time are served after it)
            return int(np.searchsorted(stream.times.asi8, _ns(moment))) - options.warmup

        events = [{"row": row_of(clock.as_utc(e.created_at)),
                   "at": clock.as_utc(e.created_at).isoformat(), "action": e.action, "version_id": e.version_id,
                   "trigger": next((r.trigger.value for r in runs if r.run_id == e.run_id), None)}
                  for e in ledger if e.run_id != first or e.action != "promote"]
        return {
            "rows": len(labels),
            "warmup": options.warmup,
            "family": loop.cfg.family,
            "metric": metric,
            "score": baselines.score(metric, labels, predicted),
            "retrains": loop.retrains,
            "promotions": sum(e.action == "promote" and e.run_id != first for e in ledger),
            "rollbacks": sum(e.action in ("rollback", "auto_rollback") for e in ledger),
            "baselines": {
                "never": {"score": baselines.score(metric, labels, never.predicted), "retrains": never.retrains},
                "periodic": {"score": baselines.score(metric, labels, periodic.predicted),
                             "retrains": periodic.retrains, "every_rows": options.every_rows},
            },
            "seconds": round(seconds, 1),
            "production": loop.version_id,
            # how the loop got there: runs after the warm-up by trigger and outcome, check verdicts, the ledger
            "runs": {f"{trigger}:{outcome}": n for (trigger, outcome), n in sorted(Counter(
                (r.trigger.value, r.outcome or r.status.value) for r in later).items())},
            "checks": {name: dict(sorted(c.items())) for name, c in sorted(loop.checks.items())},
            "events": events,
            # each accuracy check ("row": replayed rows served before it) and each run's decision, in order
            "accuracy_checks": [e | {"row": row_of(e["at"]), "at": e["at"].isoformat()} for e in loop.accuracy],
            "decisions": [{"row": row_of(clock.as_utc(r.started_at)), "at": clock.as_utc(r.started_at).isoformat(),
                           "trigger": r.trigger.value, "outcome": r.outcome or r.status.value,
                           "version_id": r.version_id, "reason": r.promotion_reason or r.error_message}
                          for r in later],
        }
