"""`retrainer replay`: a labelled, time-ordered CSV through the real loop in simulated time, beside a
model never retrained and blind periodic retraining (retrainer/replay/)."""

from __future__ import annotations

import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from retrainer.cli import JsonOpt, _fail, app, console, emit
from retrainer.config import available_families, parse_schedule


@app.command()
def replay(
    csv: Annotated[Path, typer.Option("--csv", help="A labelled CSV: a header line, one row per observation.")],
    label: Annotated[str, typer.Option("--label", help="The column holding the label.")],
    family: Annotated[str | None, typer.Option(
        "--family", help="The model family (classifier, regressor, ctr); optional when --config defines the model.")] = None,
    time: Annotated[str | None, typer.Option(
        "--time", help="The column of ISO-8601 times (default: one row per --every from --start).")] = None,
    warmup: Annotated[int, typer.Option(help="The first rows: training data of the first version.")] = 1000,
    every_rows: Annotated[int, typer.Option(
        "--every-rows", help="The periodic baseline refits every this many rows.")] = 1000,
    every: Annotated[str, typer.Option(help="Simulated time between rows without --time: 30s, 1m, 2h, 1d.")] = "1m",
    start: Annotated[str, typer.Option(help="The first row's time without --time (ISO-8601).")] = "2024-01-01T00:00:00+00:00",
    model: Annotated[str, typer.Option(help="The model's name (a --config model, or a new one).")] = "replay",
    config: Annotated[Path | None, typer.Option(
        "--config", help="Settings file: the database and broker (PostgreSQL, Redis), optionally the model.")] = None,
    var_dir: Annotated[Path | None, typer.Option(
        "--var-dir", help="Keep the replay's database, artifacts and logs here (default: a temporary folder).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Replay a labelled, time-ordered CSV through the real loop (a real worker, checks in simulated time)
    and score it prequentially beside a model never retrained and periodic retraining.

    Exit 1: the file cannot be replayed (named, with the line) or the loop failed; 2: a bad option."""
    from retrainer.replay.driver import Options, ReplayError, run
    from retrainer.replay.stream import ReplayInputError

    if family is not None and family not in available_families():
        _fail(f"unknown model family {family!r}; installed families: {', '.join(sorted(available_families()))}", 2)
    if warmup < 2 or every_rows < 1:
        _fail("--warmup must be at least 2 and --every-rows at least 1", 2)
    try:
        step = parse_schedule(f"@every {every}")
        first = datetime.fromisoformat(start)
    except ValueError:
        _fail(f"--every {every!r} / --start {start!r}: write e.g. --every 1m (s, m, h, d) and an ISO-8601 --start", 2)
    # SIGTERM unwinds like Ctrl-C, so the worker this starts is stopped and its temporary folder removed
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    options = Options(csv=csv, label=label, family=family, time=time, model=model, warmup=warmup, every=step,
                      start=first, every_rows=every_rows, config=config, var_dir=var_dir)
    try:
        with _progress() as show:
            report = run(options, show)
    except (ReplayInputError, ReplayError) as exc:
        _fail(exc, 1)
    emit(report) if as_json else _table(report, csv)


class _progress:
    """Progress on stderr: a live line on a terminal, else a line at every tenth of the rows."""

    def __enter__(self) -> Any:
        self.tty, self.shown, self.status = sys.stderr.isatty(), -1, None
        if self.tty:
            self.status = console.status("starting a worker, training the first version …")
            self.status.__enter__()
        return self.show

    def show(self, p: Any) -> None:
        line = (f"replay: {p.rows:,}/{p.total:,} rows, {p.at:%Y-%m-%d %H:%M}, production {p.production}, "
                f"{p.retrains} retrain(s)")
        if self.status is not None:
            self.status.update(line)
        elif (tenth := 10 * p.rows // max(p.total, 1)) > self.shown:
            self.shown = tenth
            print(line, file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)


def _table(report: dict[str, Any], csv: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    metric, base = report["metric"], report["baselines"]
    table = Table("", metric, "retrains", "promotions", "rollbacks",
                  title=f"{csv}: {report['rows']:,} rows replayed after a {report['warmup']:,}-row warm-up "
                        f"({report['family']}, {report['seconds']:.0f} s)")
    table.add_row("retrainer loop", f"{report['score']:.4f}", str(report["retrains"]), str(report["promotions"]),
                  str(report["rollbacks"]))
    table.add_row("never retrained", f"{base['never']['score']:.4f}", "0", "", "")
    table.add_row(f"periodic, every {base['periodic']['every_rows']:,} rows", f"{base['periodic']['score']:.4f}",
                  str(base["periodic"]["retrains"]), "", "")
    Console(highlight=False).print(table)
    runs = ", ".join(f"{k} {v}" for k, v in report["runs"].items()) or "none"
    typer.echo(f"runs after the warm-up (trigger:outcome): {runs}; production now {report['production']}")
