"""Scripting the data in: predictions, outcomes, producer events, and ingesting your own file."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from retrainer.cli import JsonOpt, _broker_answers, _fail, app, console, db, emit, event_app
from retrainer.config import get_settings

# --- scripting: predictions, outcomes, events ---------------------------------------------------

def _features(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the decoder's limit
        raise typer.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("expected a JSON object of name -> value")
    return value


@app.command()
def predict(model: str, features: Annotated[str, typer.Option(help='JSON object, e.g. {"hook_strength": 0.7}')],
            segment: Annotated[list[str] | None, typer.Option(
                help="A segment of the prediction, KEY=VALUE (repeat it), e.g. --segment region=eu")] = None) -> None:
    """Predict with the production version and log the prediction."""
    from retrainer.services import predictions

    get_settings().model(model)
    segments = {}
    for item in segment or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--segment {item!r}: write KEY=VALUE")
        segments[key] = value
    with db() as session:
        record = predictions.predict(session, model, [_features(features)], segments=segments)[0]
    emit(predictions.served(record))


@app.command()
def outcome(prediction_id: str, value: float,
            target: Annotated[list[str] | None, typer.Option(
                help="A second target's outcome, NAME=VALUE (repeat it), e.g. --target roas=1.8")] = None) -> None:
    """Record the real outcome of a logged prediction (and of second targets it was served with)."""
    from retrainer.services import predictions

    targets = {}
    for item in target or []:
        name, sep, number = item.partition("=")
        try:
            targets[name] = float(number) if sep else None
        except ValueError:
            targets[name] = None
        if targets[name] is None:
            _fail(f"--target {item!r}: write NAME=NUMBER", 2)
    with db() as session:
        record = predictions.record_outcome(session, prediction_id, value, targets=targets or None)
    emit(predictions.outcome_shown(record))


@event_app.callback(invoke_without_command=True)
def event(ctx: typer.Context, file: Annotated[Path | None, typer.Option("--file", exists=True, dir_okay=False, help="JSON lines, one event each.")] = None) -> None:
    """With --file: the batch path (many events per round trip, one retrain per model per window)."""
    if ctx.invoked_subcommand is not None:
        return
    if file is None:
        raise typer.BadParameter("give a subcommand (purchase, outcome) or --file events.jsonl")
    from retrainer.tasks.producer import publish_events

    def lines() -> Iterator[Any]:
        with file.open(encoding="utf-8", errors="surrogateescape") as fh:  # bad bytes: rejected by index
            for line in fh:
                if line.strip():
                    yield line  # text: the event parser checks size and depth before decoding it

    _broker_answers()  # before anything is stored: stored events whose retrain cannot be sent would wait
    with console.status(f"publishing {file} …"):
        result = publish_events(lines())
    emit(result.as_dict())
    if result.rejected:
        raise typer.Exit(1)


@event_app.command("purchase")
def event_purchase(model: str, features: Annotated[str, typer.Option()], value: Annotated[float, typer.Option()],
                   event_id: str | None = None) -> None:
    """Send one purchase event (features + observed value) through the events queue."""
    get_settings().model(model)
    _send({"type": "purchase", "model": model, "features": _features(features), "value": value, "event_id": event_id})


@event_app.command("outcome")
def event_outcome(prediction_id: str, value: float, event_id: str | None = None) -> None:
    """Send one outcome event for a logged prediction through the events queue."""
    _send({"type": "outcome", "prediction_id": prediction_id, "value": value, "event_id": event_id})


@event_app.command("feedback")
def event_feedback(model: str, cycle: Annotated[str, typer.Option(help="The learning cycle's id.")],
                   accepted: Annotated[int, typer.Option()] = 0, rejected: Annotated[int, typer.Option()] = 0,
                   event_id: str | None = None) -> None:
    """Send accepts and rejects of MODEL's output in a learning cycle (the hourly accept-rate check)."""
    get_settings().model(model)
    _send({"type": "feedback", "model": model, "cycle_id": cycle, "accepted": accepted, "rejected": rejected,
           "event_id": event_id})


def _send(payload: dict[str, Any]) -> None:
    from retrainer.services.events import parse
    from retrainer.tasks.producer import send_event

    payload = {k: v for k, v in payload.items() if v is not None}
    parse(payload)  # bad input is named before a dead broker is
    _broker_answers()
    sent = send_event(payload)
    emit({"status": "enqueued", "event_id": sent.event_id, "task_id": sent.task_id})


@app.command()
def ingest(
    model: str,
    file: Annotated[Path, typer.Option("--file", help="A .csv (header line first) or .parquet file.")],
    label: Annotated[str, typer.Option("--label", help="The column that holds the label (target).")],
    time: Annotated[str | None, typer.Option("--time", help="The column of ISO-8601 event times (default: now).")] = None,
    id_column: Annotated[str | None, typer.Option("--id", help="A column of unique row ids (default: a hash of the row).")] = None,
    no_retrain: Annotated[bool, typer.Option("--no-retrain", help="Store only; ask for no retrain.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Load labelled rows from your own file: every other column is a feature (numbers numeric,
    true/false boolean, text categorical), checked against the production schema.

    Idempotent (a re-run stores nothing twice); one retrain request for the whole file. Exit 0: every
    row stored or already there; 1: some rows rejected (listed by line), or the file cannot be read."""
    from retrainer.services import ingest as service

    settings = get_settings()
    settings.model(model)
    if not no_retrain:
        _broker_answers()  # before anything is stored: stored rows whose retrain cannot be sent would wait

    with db() as session, _progress(file, service.count_rows(file)) as progress:
        report = service.ingest(session, settings, model, file, label, time, id_column, retrain=not no_retrain,
                                progress=progress)
    if report.enqueue is not None:  # after the commit: the worker must see the request
        from retrainer.tasks.enqueue import send_jobs

        send_jobs([report.enqueue], "new_samples", settings=settings)
    if as_json:
        emit(report.as_dict())
    else:
        for line, why in report.rejected:
            print(f"line {line}: {why}", file=sys.stderr)
        more = report.rejected_count - len(report.rejected)
        if more:
            print(f"... and {more} more rejected rows", file=sys.stderr)
        typer.echo(f"{report.stored} stored, {report.duplicates} already there, {report.rejected_count} rejected "
                   f"of {report.rows} rows" + (f"; retrain request {report.enqueue.request_id}" if report.enqueue else ""))
    if report.rejected_count:
        raise typer.Exit(1)


@contextmanager
def _progress(file: Path, total: int | None) -> Iterator[Any]:
    """A progress bar on a terminal; elsewhere (a log, CI) one plain line per chunk."""
    def line(report: Any) -> None:
        print(f"{file.name}: {report.rows} rows read, {report.stored} stored, {report.duplicates} already there, "
              f"{report.rejected_count} rejected", file=sys.stderr)

    if not console.is_terminal:
        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[note]}"), console=console) as bar:
        task = bar.add_task(file.name, total=total, note="")

        def advance(report: Any) -> None:
            bar.update(task, completed=report.rows,
                       note=f"{report.stored} stored, {report.duplicates} already there, {report.rejected_count} rejected")

        yield advance
