"""Commands that explain a decision: `ledger`, `explain`, `logs`, `compare` (JSON shapes in services/reports.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from retrainer.cli import JsonOpt, app, db, emit
from retrainer.config import get_settings


def _out() -> Console:
    return Console(width=200, highlight=False)


def _when(iso: str | None) -> str:
    return (iso or "–")[:19].replace("T", " ")


def _value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_value(x) for x in v)
    return str(v)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:+.1f}%"


def _test_line(test: dict[str, Any] | None) -> str:
    """One line for a paired test (model_evaluations.test)."""
    if not test:
        return "no paired test recorded"
    conf = test.get("confidence")
    interval = f"{conf:.0%} CI {_pct(test.get('lower_pct'))} .. {_pct(test.get('upper_pct'))}" if conf else "CI –"
    p = test.get("p_value")
    return (f"{test.get('method', '?')} on {test.get('metric', '?')}: improvement {_pct(test.get('point_pct'))} "
            f"({interval}), {test.get('resamples', '–')} resamples of {test.get('rows', '–')} rows"
            + (f", p = {p:.3g}" if isinstance(p, (int, float)) else ""))


@app.command()
def ledger(model: str, limit: Annotated[int, typer.Option(help="Newest entries shown.")] = 50,
           as_json: JsonOpt = False) -> None:
    """MODEL's production pointer over time: each promotion and rollback, who or which rule, why, which run."""
    from rich.table import Table

    from retrainer.services import reports

    get_settings().model(model)
    with db() as session:
        data = reports.ledger_history(session, model, limit)
    if as_json:
        return emit(data)
    table = Table("when (UTC)", "action", "from -> to", "actor", "reason", "run")
    for e in data["ledger"]:
        table.add_row(_when(e["created_at"]), e["action"], f"{e['from_version_id'] or 'none'} -> {e['version_id']}",
                      e["actor"], e["reason"] or "–", e["run_id"] or "–")
    out = _out()
    out.print(table)
    if not data["ledger"]:
        out.print(f"{model}: no change of production recorded yet")


@app.command()
def explain(run_id: str, as_json: JsonOpt = False) -> None:
    """Why RUN_ID ended as it did: each rule of its decision, what asked for it, the holdout, both
    evaluations with the paired test, and the ledger entry it caused."""
    from rich.table import Table

    from retrainer.services import reports

    with db() as session:
        data = reports.explain(session, run_id)
    if as_json:
        return emit(data)
    run, out = data["run"], _out()
    out.print(f"run {run['run_id']} of {run['model']}: {run['outcome'] or run['status']} "
              f"(started {_when(run['started_at'])}, {_value(run['duration_seconds'])} s)")
    out.print(f"trigger: {data['trigger']}", markup=False)
    if request := data["request"]:
        out.print(f"request {request['id']}: by {request['requested_by']}, {request['priority']} priority"
                  + (f", {request['event_count']} event(s)" if request["event_count"] else "")
                  + (f": {request['reason']}" if request["reason"] else ""), markup=False)
    if holdout := data["holdout"]:
        out.print(f"holdout: {_when(holdout['start'])} -> {_when(holdout['end'])}, {holdout['rows']} rows, "
                  f"hash {holdout['hash']}")
    evals = data["evaluations"]
    if evals:
        table = Table("metric", *(f"{e['model_version_id']} ({e['role']})" for e in evals))
        for k in evals[0]["metrics"]:
            mark = " (primary)" if k == evals[0]["primary_metric"] else ""
            table.add_row(k + mark, *(_value(e["metrics"].get(k)) for e in evals))
        out.print(table)
        for e in evals:
            if e["test"]:
                out.print(f"paired test of {e['model_version_id']}: {_test_line(e['test'])}", markup=False)
    decision = data["decision"]
    if decision is None:  # a run from before decision records, or one that ended before deciding
        out.print(f"decision: {data['reason'] or '–'}", markup=False)
    else:
        verdict = "PROMOTE" if decision.get("promote") else "KEEP"
        out.print(f"decision: {verdict} — {decision.get('summary', '')}", markup=False)
        rules = Table("rule", "threshold", "value", "passed", "note")
        for r in decision.get("rules", []):
            passed = {True: "pass", False: "FAIL", None: "n/a"}.get(r.get("passed"), str(r.get("passed")))
            rules.add_row(str(r.get("rule")), _value(r.get("threshold")), _value(r.get("value")), passed,
                          r.get("note") or "")
        out.print(rules)
    if entry := data["ledger"]:
        out.print(f"ledger: {_when(entry['created_at'])} {entry['action']} {entry['from_version_id'] or 'none'} -> "
                  f"{entry['version_id']} by {entry['actor']}", markup=False)
    else:
        out.print("ledger: production unchanged by this run")


@app.command()
def logs(run_id: str) -> None:
    """RUN_ID's own log lines, as its worker recorded them."""
    from retrainer.services import reports

    with db() as session:
        data = reports.logs(session, run_id)
    if not data["logs"]:
        typer.echo(f"run {run_id}: no log lines recorded (a run from before run logs, or one run in-process "
                   "with --local)", err=True)
        return
    typer.echo(data["logs"])


@app.command()
def compare(a: str, b: str, as_json: JsonOpt = False) -> None:
    """Versions A and B scored on the same holdout rows: metrics side by side and the paired test.
    Versions only ever scored on different holdouts are not comparable (exit 1)."""
    from rich.table import Table

    from retrainer.services import reports

    with db() as session:
        data = reports.compare(session, a, b)
    if as_json:
        return emit(data)
    out, holdout = _out(), data["holdout"]
    where = f"run {data['a']['run_id']}" if data["same_run"] else f"runs {data['a']['run_id']} and {data['b']['run_id']}"
    out.print(f"{data['model']}: {a} and {b} on the same holdout ({where}): {_when(holdout['start'])} -> "
              f"{_when(holdout['end'])}, {holdout['rows']} rows, hash {holdout['hash']}")
    table = Table("metric", f"{a} ({data['a']['role']})", f"{b} ({data['b']['role']})", "better")
    for k, m in data["metrics"].items():
        table.add_row(k + (" (primary)" if k == data["primary_metric"] else ""), _value(m["a"]), _value(m["b"]),
                      m["better"] or "same")
    out.print(table)
    if data["test"]:
        out.print(f"paired test of {data['test']['candidate']} against {data['test']['reference']}: "
                  f"{_test_line(data['test'])}", markup=False)
    else:
        out.print("paired test: none recorded for this pair", markup=False)
