"""Reports: `status`, `history`, `versions` (JSON shapes in services/reports.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from retrainer.cli import JsonOpt, app, db, emit
from retrainer.config import get_settings

# --- reports ------------------------------------------------------------------------------------

@app.command()
def status(models: Annotated[list[str] | None, typer.Argument(help="Only these models.")] = None,
           as_json: JsonOpt = False) -> None:
    """Production version, live accuracy and last run of every configured model (or of MODELS)."""
    from rich.table import Table

    from retrainer.services import reports

    settings = get_settings()
    if models:
        settings = settings.model_copy(update={"models": {name: settings.model(name) for name in models}})
    with db() as session:
        data = reports.status(session, settings)
    if as_json:
        return emit(data)
    table = Table("model", "production", "live metric (n)", "threshold", "last run", "pending")
    notes = []
    for name, m in data["models"].items():
        live, last, budget = m["live_accuracy"], m["last_run"], m["budget"]
        metric = live["metric"]
        shown = "–" if live.get(metric) is None else f"{metric} {reports.fmt(live[metric])} ({live['count']})"
        production = m["production"] or {}
        on_trial = " (probation)" if production.get("probation") == "watching" else ""
        table.add_row(name + (" (paused)" if m["state"]["paused"] else ""), production.get("version_id", "–") + on_trial,
                      shown, str(live["threshold"]),
                      f"{last['outcome']} {last['started_at'][:16]}" if last else "–", str(m["pending_requests"]))
        notes.append(f"{name} budget: {budget['used']} of {budget['max_runs'] or 'unlimited'} automatic runs "
                     f"in {budget['per_hours']:g} h")
        notes += [f"{name} {check}: {c['status']} ({c['at'][:16]})" for check, c in m["triggers"].items() if c]
        if second := m["second_target"]:
            notes.append(f"{name} {second['target']}: {second['metric']} {reports.fmt(second['value'])} "
                         f"({second['count']}), threshold {second['threshold']}")
        for key, parts in m["live_segments"].items():
            notes.append(f"{name} by {key}: " + ", ".join(
                f"{value} {reports.fmt(part.get(metric))} ({part['count']})" for value, part in parts.items()))
        if (drift := m.get("drift")) and drift.get("drifted_share") is not None:
            notes.append(f"{name} drift: {drift['drifted_share']:.0%} of features drifted (dataset drift at "
                         f"{drift['share_threshold']:.0%}; `retrainer drift-report {drift['report_id']}`)")
        for key, label in (("alert", "ALERT"), ("notifications_failed", "notification failed"),
                           ("suppressed", "suppressed")):
            if m[key]:
                notes.append(f"{label} ({m[key]['count']}): {m[key]['message']}")
    console_out = Console()
    console_out.print(table)
    for note in notes:
        console_out.print(note, markup=False, highlight=False)


def _primary_metric(model: str) -> str:
    """The metric that decides promotion for MODEL (its configured one, else its family's): the tables' column."""
    from retrainer.models.base import primary_metric

    cfg = get_settings().model(model)
    return primary_metric(cfg.family, cfg.primary_metric)


@app.command()
def history(model: str, limit: int = 20, as_json: JsonOpt = False) -> None:
    """Recent training runs of MODEL."""
    from rich.table import Table

    from retrainer.services import reports

    primary = _primary_metric(model)
    with db() as session:
        data = reports.history(session, model, limit)
    if as_json:
        return emit(data)
    table = Table("run", "trigger", "outcome", "version", primary, f"old {primary}", "improvement", "decision")
    for r in data["training_runs"]:
        m, o = r["metrics"] or {}, r["old_metrics"] or {}
        table.add_row(r["run_id"], r["trigger"], r["outcome"] or r["status"], r["model_version_id"] or "–",
                      reports.fmt(m.get(primary)), reports.fmt(o.get(primary)), reports.fmt_pct(r["improvement_percentage"]),
                      _decision_text(r))
    Console(width=200).print(table)


def _decision_text(run: dict[str, object]) -> str:
    """The decision's summary (older runs: the reason, or why the run failed), short: `explain RUN_ID` has it all."""
    decision = run.get("decision")
    text = str((decision.get("summary") if isinstance(decision, dict) else None)
               or run.get("promotion_reason") or run.get("error_message") or "")
    return text if len(text) <= 120 else text[:119] + "…"


@app.command()
def versions(model: str, limit: int = 50, as_json: JsonOpt = False) -> None:
    """Versions of MODEL, newest first."""
    from rich.table import Table

    from retrainer.services import reports

    primary = _primary_metric(model)
    with db() as session:
        data = reports.versions(session, model, limit)
    if as_json:
        return emit(data)
    table = Table("version", "status", "production", "probation", "trained at", "samples", primary, "sha256")
    for v in data["versions"]:
        table.add_row(v["version_id"], v["status"] + (" (refit)" if v.get("refit") else ""),
                      "yes" if v["is_production"] else "", v.get("probation") or "", v["trained_at"][:19],
                      str(v["num_training_samples"]), reports.fmt(v["metrics"].get(primary)), v["artifact_sha256"][:12])
    Console().print(table)
