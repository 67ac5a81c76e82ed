"""`retrainer request / requests / cancel / pause / resume` and `retrain --reason --priority`, as a user
runs them (the console script, the embedded broker; no worker needed to queue a request)."""

from __future__ import annotations

import json

from tests.retrainer.test_cli import cli, seed  # noqa: F401  (the fixture)


def test_a_person_pauses_asks_lists_and_cancels(cli) -> None:  # noqa: F811
    cli("init")
    paused = cli("pause", "ctr", "--reason", "holiday freeze", "--by", "ops")
    assert paused.stdout.startswith("ctr paused: scheduled and event triggers are recorded as suppressed")
    assert "ctr (paused)" in cli("status").stdout

    asked = cli("request", "ctr", "--reason", "new campaign", "--priority", "high", "--by", "alice", "--json")
    shown = json.loads(asked.stdout)
    assert (shown["status"], shown["priority"], shown["requested_by"], shown["reason"], shown["trigger"]) == (
        "pending", "high", "alice", "new campaign", "manual")
    assert "no worker consumes the 'training' queue" in asked.stderr  # queued all the same, and said so

    listed = json.loads(cli("requests", "--json").stdout)["requests"]
    assert [(r["id"], r["status"]) for r in listed] == [(shown["id"], "pending")]
    assert cli("cancel", str(shown["id"]), "--by", "alice").stdout.strip() == f"request {shown['id']} cancelled"
    again = cli("cancel", str(shown["id"]), ok=False)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: request {shown['id']} is cancelled: only a pending request can be cancelled"
    (done,) = json.loads(cli("requests", "ctr", "--status", "cancelled", "--json").stdout)["requests"]
    assert (done["error_message"], done["priority"]) == ("cancelled by alice", "high")
    assert "alice" in cli("requests", "ctr").stdout

    assert cli("resume", "ctr").stdout.strip() == "ctr active"
    assert "(paused)" not in cli("status").stdout


def test_bad_input_is_one_line(cli) -> None:  # noqa: F811
    cli("init")
    typo = cli("request", "ctr", "--priority", "urgent", ok=False)
    assert (typo.returncode, typo.stderr.strip()) == (2, "error: --priority 'urgent': use one of low, normal, high")
    unknown = cli("pause", "crt", ok=False)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "error: unknown model 'crt'; configured models: ctr")
    assert cli("cancel", "999", ok=False).stderr.strip() == "error: no retrain request 999"
    assert cli("requests", "--status", "done", ok=False).stderr.startswith("error: --status 'done': use one of pending")


def test_local_retrain_records_who_asked_and_why(cli) -> None:  # noqa: F811
    cli("init")
    seed(cli.url)
    result = json.loads(cli("retrain", "ctr", "--local", "--reason", "after the fix", "--by", "bob", "--json").stdout)
    assert result["status"] == "retrained"
    (request,) = json.loads(cli("requests", "--json").stdout)["requests"]
    assert (request["requested_by"], request["reason"], request["status"], request["run_id"], request["run_outcome"]) == (
        "bob", "after the fix", "completed", result["run_id"], "retrained")


def test_every_trigger_can_be_checked_now(cli) -> None:  # noqa: F811
    cli("init")
    seed(cli.url, n=150)
    new = json.loads(cli("check", "ctr", "--trigger", "new_data", "--local", "--json").stdout)
    assert new["status"] == "retrain_needed" and new["new_samples"] == 150
    assert cli("check", "ctr", "--trigger", "accept_rate", "--local").stdout.startswith("no_cycles: ")
    assert "errors.tolerance" in cli("check", "ctr", "--trigger", "errors", "--local").stdout
    assert cli("check", "ctr", "--trigger", "drift", "--local").stdout.startswith("no_reference: ")
    bad = cli("check", "ctr", "--trigger", "drfit", "--local", ok=False)
    assert (bad.returncode, bad.stderr.strip()) == (
        2, "error: --trigger 'drfit': use one of accuracy, accept_rate, errors, new_data, drift, probation")
    triggers = json.loads(cli("status", "--json").stdout)["models"]["ctr"]["triggers"]
    assert {k: v["status"] for k, v in triggers.items() if v} == {
        "new_data": "retrain_needed", "accept_rate": "no_cycles", "errors": "not_configured", "drift": "no_reference"}
