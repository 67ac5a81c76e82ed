"""/models: production, versions, history, ledger, compare (reads); promote and rollback (writes)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from retrainer.config import Settings
from retrainer.db.records import ModelEvaluation, RunStatus, TrainingRun, Trigger
from retrainer.services import registry
from tests.retrainer.api.conftest import AUTH, db
from tests.services.builders import corrupt, make_version


def versions(settings: Settings, *numbers: int, production: int | None = None) -> None:
    with db(settings) as s:
        for n in numbers:
            make_version(s, settings, n, production=n == production)


def production_id(settings: Settings) -> str | None:
    with db(settings) as s:
        current = registry.production(s, "ctr")
        return current.version_id if current else None


def test_production_versions_and_history_in_the_reference_shapes(client: TestClient, api_settings: Settings) -> None:
    assert client.get("/models/production").json() == {"ctr": None}
    versions(api_settings, 1, 2, production=1)

    shown = client.get("/models/production").json()
    assert list(shown) == ["ctr"] and shown["ctr"]["version_id"] == "ctr-v1"
    assert {"version_id", "algorithm", "trained_at", "promoted_at", "num_training_samples", "status",
            "is_production"} <= set(shown["ctr"])
    assert client.get("/models/production", params={"model": "ctr"}).json() == shown

    listed = client.get("/models/versions", params={"model": "ctr", "limit": 1}).json()
    assert listed["count"] == 1 and listed["versions"][0]["version_id"] == "ctr-v2"  # newest first
    assert [v["version_id"] for v in client.get("/models/versions").json()["versions"]] == ["ctr-v2", "ctr-v1"]
    assert client.get("/models/training-history", params={"model": "ctr"}).json() == {"training_runs": [], "count": 0}


def test_unknown_model_is_404_and_a_bad_parameter_422_naming_it(client: TestClient) -> None:
    for path in ("/models/versions", "/models/training-history", "/models/ledger", "/models/production"):
        answer = client.get(path, params={"model": "crt"})
        assert answer.status_code == 404, path
        assert answer.json() == {"detail": "unknown model 'crt'; configured models: ctr"}
    answer = client.get("/models/versions", params={"limit": 0})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", "limit"]
    assert answer.json()["message"].startswith("query.limit: Input should be greater than or equal to 1")


def test_model_is_required_when_several_are_configured(tmp_path, db_url: str) -> None:
    from tests.retrainer.api.conftest import client_for
    from tests.support import make_settings, model_config

    settings = make_settings(tmp_path, db_url, models={"ctr": model_config(), "roas": model_config()})
    with client_for(settings) as client:
        answer = client.get("/models/versions")
        assert answer.status_code == 422
        assert answer.json()["message"] == "query.model: Field required: configured models are ctr, roas"
        assert client.get("/models/production").json() == {"ctr": None, "roas": None}


def test_promote_is_a_compare_and_swap(client: TestClient, api_settings: Settings) -> None:
    versions(api_settings, 1, 2, 3, production=1)

    done = client.post("/models/promote/ctr-v2", json={"expected": "ctr-v1", "reason": "new campaign", "by": "alice"},
                       headers=AUTH)
    assert done.status_code == 200, done.text
    body = done.json()
    assert {k: body[k] for k in ("status", "message", "version_id", "model")} == {
        "status": "success", "message": "Model ctr-v2 promoted to production", "version_id": "ctr-v2", "model": "ctr"}
    assert body["version"]["is_production"] is True and body["version"]["previous_production_id"] == "ctr-v1"

    # A decision taken while ctr-v1 was production loses: production stays ctr-v2
    stale = client.post("/models/promote/ctr-v3", json={"expected": "ctr-v1"}, headers=AUTH)
    assert stale.status_code == 409
    assert stale.json() == {"detail": "production of 'ctr' changed under us: expected ctr-v1, found ctr-v2",
                            "model": "ctr", "expected": "ctr-v1", "actual": "ctr-v2"}
    assert production_id(api_settings) == "ctr-v2"

    nothing = client.post("/models/promote/ctr-v3", json={"expected": "ctr-v99"}, headers=AUTH)
    assert (nothing.status_code, nothing.json()) == (409, {"detail": "cannot promote ctr-v3: the expected production "
                                                                     "version 'ctr-v99' does not exist (production of "
                                                                     "'ctr' is ctr-v2)"})
    typo = client.post("/models/promote/ctr-v3", json={"expect": "ctr-v2"}, headers=AUTH)  # not `expected`
    assert typo.status_code == 422 and typo.json()["detail"][0]["loc"] == ["body", "expect"]
    assert client.post("/models/promote/ctr-v9", headers=AUTH).json() == {"detail": "model version 'ctr-v9' not found"}
    assert client.post("/models/promote/ctr-v9", headers=AUTH).status_code == 404
    assert client.post("/models/promote/ctr-v3", json={"expected": "ctr-v2"}).status_code == 401  # no token
    with db(api_settings) as s:
        corrupt(registry.get(s, "ctr-v3").artifact_uri)
    broken = client.post("/models/promote/ctr-v3", json={"expected": "ctr-v2"}, headers=AUTH)
    assert broken.status_code == 409 and "checksum" in broken.json()["detail"]
    assert production_id(api_settings) == "ctr-v2"

    entries = client.get("/models/ledger", params={"model": "ctr"}).json()
    assert entries["count"] == 1
    assert {k: entries["ledger"][0][k] for k in ("action", "from_version_id", "version_id", "actor", "reason")} == {
        "action": "promote", "from_version_id": "ctr-v1", "version_id": "ctr-v2", "actor": "alice",
        "reason": "new campaign"}


def test_rollback_returns_to_an_earlier_production_version(client: TestClient, api_settings: Settings) -> None:
    versions(api_settings, 1, 2, 3, production=1)
    assert client.post("/models/rollback/ctr", headers=AUTH).status_code == 409  # ctr-v1 replaced nothing
    client.post("/models/promote/ctr-v2", json={"expected": "ctr-v1"}, headers=AUTH).raise_for_status()

    never = client.post("/models/rollback/ctr", json={"to": "ctr-v3"}, headers=AUTH)
    assert never.status_code == 409 and never.json()["detail"].startswith(
        "cannot roll back 'ctr' to ctr-v3: it never held production")
    assert client.post("/models/rollback/ctr", json={"to": "ctr-v99"}, headers=AUTH).status_code == 404
    assert client.post("/models/rollback/crt", headers=AUTH).status_code == 404

    done = client.post("/models/rollback/ctr", json={"reason": "v2 reads a stale feed", "by": "bob"}, headers=AUTH)
    assert done.status_code == 200, done.text
    assert {k: done.json()[k] for k in ("status", "message", "version_id")} == {
        "status": "success", "message": "ctr rolled back to ctr-v1", "version_id": "ctr-v1"}
    assert production_id(api_settings) == "ctr-v1"
    newest = client.get("/models/ledger").json()["ledger"][0]
    assert (newest["action"], newest["actor"], newest["reason"]) == ("rollback", "bob", "v2 reads a stale feed")


def _scored(settings: Settings, version: str, run_id: str, role: str, digest: str, mae: float) -> None:
    now = datetime.now(UTC)
    with db(settings) as s:
        if s.get(TrainingRun, run_id) is None:
            s.add(TrainingRun(run_id=run_id, model="ctr", trigger=Trigger.MANUAL, status=RunStatus.COMPLETED,
                              started_at=now))
            s.flush()
        s.add(ModelEvaluation(version_id=version, run_id=run_id, role=role, holdout_start=now, holdout_end=now,
                              holdout_rows=300, holdout_hash=digest, metrics={"mae": mae}, primary_metric="mae",
                              predictions_sample={}))


def test_compare_needs_the_same_holdout(client: TestClient, api_settings: Settings) -> None:
    versions(api_settings, 1, 2, 3)
    _scored(api_settings, "ctr-v2", "run_2", "candidate", "b" * 64, 0.0176)
    _scored(api_settings, "ctr-v1", "run_2", "champion", "b" * 64, 0.020)
    _scored(api_settings, "ctr-v3", "run_3", "candidate", "c" * 64, 0.018)

    both = client.get("/models/compare/ctr-v1/ctr-v2").json()
    assert both["same_run"] is True and both["holdout"]["hash"] == "b" * 64
    assert both["metrics"] == {"mae": {"a": 0.020, "b": 0.0176, "better": "ctr-v2"}}
    refused = client.get("/models/compare/ctr-v2/ctr-v3")
    assert refused.status_code == 409
    assert refused.json() == {"detail": "ctr-v2 and ctr-v3 were scored on different holdouts (bbbbbbbbbbbb vs "
                                        "cccccccccccc): not comparable"}
    assert client.get("/models/compare/ctr-v2/ctr-v99").json() == {"detail": "model version 'ctr-v99' not found"}
