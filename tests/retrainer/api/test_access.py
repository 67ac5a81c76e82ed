"""What the app holds at its edge: read tokens when configured, the body size limit, the OpenAPI page,
and a token that never reaches a log or a response."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrainer.db.migrate import upgrade
from tests.retrainer.api.conftest import AUTH, TOKEN, client_for
from tests.support import make_settings


@pytest.fixture
def url(sqlite_url: str) -> str:
    upgrade(sqlite_url)
    return sqlite_url


def test_reads_need_the_token_when_configured_and_healthz_never(tmp_path: Path, url: str) -> None:
    settings = make_settings(tmp_path, url, api_token=TOKEN, api_read_token_required=True)
    with client_for(settings) as client:
        for path in ("/models/production", "/models/versions", "/requests", "/retraining/status", "/runs/r1"):
            assert client.get(path).status_code == 401, path
        assert client.get("/models/production", headers=AUTH).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_a_body_over_the_limit_is_413_declared_or_streamed(tmp_path: Path, url: str) -> None:
    settings = make_settings(tmp_path, url, api_token=TOKEN)
    big = b'{"model": "ctr", "reason": "' + b"x" * 2048 + b'"}'
    with client_for(settings, max_body_bytes=1024) as client:
        declared = client.post("/models/retrain", content=big, headers=AUTH | {"Content-Type": "application/json"})
        assert (declared.status_code, declared.json()) == (413, {"detail": "request body larger than 1024 bytes"})

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield from (big[i:i + 512] for i in range(0, len(big), 512))

        streamed = client.post("/models/retrain", content=chunks(), headers=AUTH | {"Content-Type": "application/json"})
        assert (streamed.status_code, streamed.json()) == (413, {"detail": "request body larger than 1024 bytes"})
        small = client.post("/models/retrain", json={"model": "crt"}, headers=AUTH)
        assert small.status_code == 404  # under the limit: served


def test_the_token_is_never_logged_nor_echoed(tmp_path: Path, url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path, url, api_token=TOKEN)
    caplog.set_level(logging.DEBUG)
    with client_for(settings) as client:
        answers = [client.post("/models/retrain", json={"model": "ctr"}, headers=AUTH),
                   client.post("/models/retrain", json={"model": "ctr"}, headers={"Authorization": f"Bearer {TOKEN}x"}),
                   client.post("/models/promote/ctr-v1", json={"expected": "ctr-v0"}, headers=AUTH)]
        openapi = client.get("/openapi.json").json()
        docs = client.get("/docs")
    assert [a.status_code for a in answers] == [202, 401, 404]
    assert all(TOKEN not in a.text for a in answers)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(settings) and TOKEN not in settings.model_dump_json()
    assert openapi["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"/models/production", "/models/retrain", "/models/promote/{version_id}", "/healthz"} <= set(openapi["paths"])
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
