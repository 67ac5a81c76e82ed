"""Drift commands: run a model's drift check now, and show a stored drift report, per feature."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from retrainer.cli import INSUFFICIENT_DATA, JsonOpt, _broker_answers, _fail, _wait, _worker_problem, app, db, emit
from retrainer.config import get_settings

NO_VERDICT = ("insufficient_data", "no_reference")  # exit 3: nothing to decide on


@app.command("drift")
def drift_command(model: str, local: Annotated[bool, typer.Option(help="Compute here; enqueue nothing.")] = False,
                  timeout: Annotated[float, typer.Option(help="Seconds to wait for the worker's result.")] = 300,
                  as_json: JsonOpt = False) -> None:
    """Run the drift check of MODEL now (through a worker unless --local): recent inputs against the
    production version's reference profile, per feature. Exit 3: no verdict (too few recent inputs, or
    no reference profile)."""
    settings = get_settings()
    cfg = settings.model(model)
    if local:
        from retrainer.services import drift_check

        with db() as session:
            result = drift_check.check(session, model, cfg) | {"retrain_enqueued": False}
    else:
        from retrainer.tasks.app import app as celery_app

        _broker_answers()
        if problem := _worker_problem("checks"):
            _fail(problem, 1)
        sent = celery_app.send_task("checks.check_drift", kwargs={"model": model}, queue="checks")
        result = _wait(sent, f"checking {model} for drift", timeout)
    if as_json:
        emit(result)
    else:
        _table(result["features"])
        enqueued = " (retrain enqueued)" if result.get("retrain_enqueued") else ""
        typer.echo(f"{result['status']}: {result['message']}{enqueued} [drift report {result['drift_report_id']}]")
    if result["status"] in NO_VERDICT:
        raise typer.Exit(INSUFFICIENT_DATA)


@app.command("drift-report")
def drift_report(ref: Annotated[str, typer.Argument(help="A drift report's id, or a model (its latest report).")],
                 as_json: JsonOpt = False) -> None:
    """Show a stored drift report: per feature the method, statistic, threshold and verdict."""
    from retrainer.services import drift_check

    settings = get_settings()
    with db() as session:
        if ref in settings.models:
            report = drift_check.latest(session, ref)
            if report is None:
                _fail(f"no drift report for {ref!r} yet; run one: retrainer drift {ref}", 1)
        elif ref.isdigit():
            report = drift_check.get(session, int(ref))
        else:
            settings.model(ref)  # an unknown model: one line naming the configured ones
        data = drift_check.report_dict(report)
    if as_json:
        return emit(data)
    window = f"{(data['window_start'] or '–')[:16]} .. {(data['window_end'] or '–')[:16]}"
    typer.echo(f"drift report {data['id']}: {data['model']} against {data['version_id'] or '–'}, {data['rows']} "
               f"recent inputs ({window}), checked {data['checked_at'][:19]}")
    _table(data["features"])
    typer.echo(f"{data['status']}: {data['message']}")


def _table(features: dict[str, Any]) -> None:
    """Per feature: how it was compared and the verdict; PSI beside a numeric feature's own statistic."""
    from rich.console import Console
    from rich.table import Table

    if not features:
        return
    table = Table("feature", "type", "method", "statistic", "threshold", "drifted", "psi", "rows", "note")
    for name, f in features.items():
        drifted = "–" if f.get("drifted") is None else ("DRIFT" if f["drifted"] else "no")
        table.add_row(name, f.get("type", ""), f.get("method", ""), _num(f.get("statistic")), _num(f.get("threshold")),
                      drifted, _num(f.get("psi")), str(f.get("rows", "")), f.get("note", ""))
    Console().print(table)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
