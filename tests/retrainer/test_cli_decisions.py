"""`retrainer ledger / rollback --to / explain / logs / compare / history` as a user runs them (the console
script on a SQLite file): the decision behind a run, the production pointer's history, and one line
for every refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from retrainer.db import session_scope
from retrainer.db.records import ModelEvaluation, TrainingRun
from retrainer.services import run_logs
from tests.retrainer.test_cli import cli, seed  # noqa: F401  (the fixture)
from tests.services.builders import make_version
from tests.support import make_settings


def problem(done, code: int = 1) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Independent read-only commands run at once, results in order: each is a process start (mostly
    imports), so the test need not wait for them one by one."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_explain_ledger_rollback_to_logs_and_compare(cli, tmp_path) -> None:  # noqa: F811
    cli("init")
    seed(cli.url)
    first = json.loads(cli("retrain", "ctr", "--local", "--reason", "weekly look", "--by", "carol", "--json").stdout)
    assert first["status"] == "retrained" and first["version_id"] == "ctr-v1"
    run1 = first["run_id"]

    # explain: the decision record, the trigger and request, the holdout, the evaluation, the ledger entry
    shown, text, history, history_table = together(
        lambda: json.loads(cli("explain", run1, "--json").stdout), lambda: cli("explain", run1).stdout,
        lambda: json.loads(cli("history", "ctr", "--json").stdout)["training_runs"], lambda: cli("history", "ctr").stdout)
    assert shown["run"]["run_id"] == run1 and shown["trigger"] == "manual by carol: weekly look"
    assert (shown["request"]["requested_by"], shown["request"]["reason"]) == ("carol", "weekly look")
    assert shown["decision"]["promote"] is True and shown["decision"]["rules"]
    assert {"rule", "threshold", "value", "passed", "note"} <= set(shown["decision"]["rules"][0])
    assert shown["holdout"]["rows"] == first["holdout"]["rows"] and shown["holdout"]["hash"] == first["holdout"]["hash"]
    assert [e["role"] for e in shown["evaluations"]] == ["candidate"]
    assert (shown["ledger"]["action"], shown["ledger"]["version_id"], shown["ledger"]["actor"]) == (
        "promote", "ctr-v1", "policy")
    assert "decision: PROMOTE" in text and f"hash {first['holdout']['hash']}" in text
    assert "ledger:" in text and "none -> ctr-v1 by policy" in text
    assert history[0]["decision"]["summary"] == shown["decision"]["summary"]
    assert shown["decision"]["summary"][:40] in history_table.replace("\n", " ") or "decision" in history_table

    # two more versions; a person promotes one, then rolls back to the first by name
    settings = make_settings(tmp_path, cli.url)
    with session_scope(cli.url) as s:
        make_version(s, settings, 2)
        make_version(s, settings, 3)
    cli("promote", "ctr-v2", "--reason", "new campaign", "--by", "alice")
    rolled = json.loads(cli("rollback", "ctr", "--to", "ctr-v1", "--reason", "v2 reads a stale feed", "--by", "bob").stdout)
    assert rolled == {"status": "success", "message": "ctr rolled back to ctr-v1", "version_id": "ctr-v1"}
    # the ledger, refusals and `logs` read only: all at once
    entries, table, never, already, unknown, no_logs, no_run_logs, no_run_explain = together(
        lambda: json.loads(cli("ledger", "ctr", "--json").stdout)["ledger"],
        lambda: cli("ledger", "ctr", "--limit", "2").stdout,
        lambda: problem(cli("rollback", "ctr", "--to", "ctr-v3", ok=False)),
        lambda: problem(cli("rollback", "ctr", "--to", "ctr-v1", ok=False)),
        lambda: problem(cli("ledger", "crt", ok=False)),
        lambda: cli("logs", run1).stderr,
        lambda: problem(cli("logs", "run_nope", ok=False)),
        lambda: problem(cli("explain", "run_nope", ok=False)))
    assert [(e["action"], e["from_version_id"], e["version_id"], e["actor"], e["reason"]) for e in entries] == [
        ("rollback", "ctr-v2", "ctr-v1", "bob", "v2 reads a stale feed"),
        ("promote", "ctr-v1", "ctr-v2", "alice", "new campaign"),
        ("promote", None, "ctr-v1", "policy", shown["decision"]["summary"]),
    ]
    assert "ctr-v2 -> ctr-v1" in table and "bob" in table and "none -> ctr-v1" not in table
    assert never.startswith("error: cannot roll back 'ctr' to ctr-v3: it never held production")
    assert already == "error: cannot roll back 'ctr' to ctr-v1: it is production already"
    assert unknown == "error: unknown model 'crt'; configured models: ctr"

    # logs: the worker stores them; a run made in-process has none, and says so
    assert "no log lines recorded" in no_logs
    with session_scope(cli.url) as s:
        run_logs.store(s, run1, "2026-11-24T10:00:00.000Z INFO retrainer.tasks.training: retrain ctr: retrained")
    assert cli("logs", run1).stdout.strip().endswith("retrain ctr: retrained")
    assert no_run_logs == "error: training run 'run_nope' not found"
    assert no_run_explain == "error: training run 'run_nope' not found"

    # compare: a run that scored both on one holdout, side by side with its paired test
    seed(cli.url, drift=True)
    second = json.loads(cli("retrain", "ctr", "--local", "--json").stdout)
    new = second["version_id"]
    assert new == "ctr-v4" and second["champion_version"] == "ctr-v1"
    both, text, never_scored = together(
        lambda: json.loads(cli("compare", new, "ctr-v1", "--json").stdout), lambda: cli("compare", new, "ctr-v1").stdout,
        lambda: problem(cli("compare", "ctr-v2", new, ok=False)))
    assert both["same_run"] is True and both["holdout"]["hash"] == second["holdout"]["hash"]
    assert (both["a"]["role"], both["b"]["role"]) == ("candidate", "champion")
    assert set(both["metrics"]) >= {"mae", "rmse"} and both["metrics"]["mae"]["better"] in (new, "ctr-v1")
    if both["test"] is not None:  # the paired test stored with the candidate's evaluation
        assert both["test"]["candidate"] == new and both["test"]["reference"] == "ctr-v1"
    assert f"run {second['run_id']}" in text and "mae (primary)" in text
    assert never_scored == "error: ctr-v2 was never scored on a holdout: not comparable"
    with session_scope(cli.url) as s:  # ctr-v2 scored once, on other rows
        s.add(ModelEvaluation(version_id="ctr-v2", run_id=run1, role="champion", holdout_start=datetime.now(UTC),
                              holdout_end=datetime.now(UTC), holdout_rows=80, holdout_hash="f" * 64,
                              metrics={"mae": 0.01}, primary_metric="mae", predictions_sample={}))
    different, missing = together(lambda: problem(cli("compare", "ctr-v2", new, ok=False)),
                                  lambda: problem(cli("compare", "ctr-v2", "ctr-v99", ok=False)))
    assert different == (
        f"error: ctr-v2 and {new} were scored on different holdouts (ffffffffffff vs "
        f"{second['holdout']['hash'][:12]}): not comparable")
    assert missing == "error: model version 'ctr-v99' not found"

    # a run from before decision records: its reason stands in
    with session_scope(cli.url) as s:
        s.get(TrainingRun, run1).decision = None
    assert f"decision: {first['reason']}" in cli("explain", run1).stdout.replace("\n", " ")
