"""/runs after real retrains (the pipeline run in this process): the decision record, the evaluations on
one holdout, the log lines; and the history and comparison those runs leave."""

from __future__ import annotations

from fastapi.testclient import TestClient

from retrainer.config import Settings
from retrainer.db.records import Trigger
from retrainer.services import retrain, run_logs
from tests.retrainer.api.conftest import db
from tests.services.builders import seed


def test_a_run_with_its_decision_logs_history_and_comparison(client: TestClient, api_settings: Settings) -> None:
    with db(api_settings) as s:
        seed(s, n=300)
    with db(api_settings) as s:
        first = retrain.retrain(s, api_settings, "ctr", Trigger.SCHEDULE)
    with db(api_settings) as s:
        second = retrain.retrain(s, api_settings, "ctr", Trigger.MANUAL)  # candidate and champion on one holdout
    assert (first["status"], second["champion_version"]) == ("retrained", "ctr-v1"), (first, second)

    shown = client.get(f"/runs/{second['run_id']}").json()
    assert shown["run"]["run_id"] == second["run_id"] and shown["run"]["model_version_id"] == "ctr-v2"
    assert {"promote", "rules", "summary"} <= set(shown["decision"])
    assert {"rule", "threshold", "value", "passed", "note"} <= set(shown["decision"]["rules"][0])
    assert [e["role"] for e in shown["evaluations"]] == ["candidate", "champion"]
    assert shown["holdout"]["hash"] == second["holdout"]["hash"]
    assert client.get(f"/runs/{first['run_id']}").json()["ledger"]["version_id"] == "ctr-v1"

    assert client.get(f"/runs/{first['run_id']}/logs").json()["logs"] is None  # run in-process: no worker log
    with db(api_settings) as s:
        run_logs.store(s, first["run_id"], "INFO retrainer.tasks.training: retrain ctr: retrained")
    logs = client.get(f"/runs/{first['run_id']}/logs").json()
    assert logs == {"run_id": first["run_id"], "model": "ctr", "status": "completed",
                    "logs": "INFO retrainer.tasks.training: retrain ctr: retrained"}
    for path in ("/runs/run_nope", "/runs/run_nope/logs"):
        assert client.get(path).json() == {"detail": "training run 'run_nope' not found"}
        assert client.get(path).status_code == 404

    history = client.get("/models/training-history", params={"model": "ctr", "limit": 5}).json()
    assert history["count"] == 2 and [r["run_id"] for r in history["training_runs"]] == [
        second["run_id"], first["run_id"]]
    assert history["training_runs"][0]["decision"] == shown["decision"]

    both = client.get("/models/compare/ctr-v2/ctr-v1").json()
    assert both["same_run"] is True and (both["a"]["role"], both["b"]["role"]) == ("candidate", "champion")
    assert both["holdout"]["hash"] == second["holdout"]["hash"]
