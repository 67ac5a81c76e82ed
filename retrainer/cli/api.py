"""`retrainer api`: serve the HTTP API (retrainer/api) with uvicorn."""

from __future__ import annotations

import errno
import socket
import sys
from typing import Annotated

import typer

from retrainer.cli import _check_models, _fail, app
from retrainer.config import get_settings


def _port_problem(host: str, port: int) -> str | None:
    """Why uvicorn could not bind host:port (in use, no such address), found before it starts: uvicorn
    would log its own error lines and exit; this says it in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot serve on {host}:{port}: {exc.strerror or exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            probe.bind(address)
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
            return f"cannot serve on {host}:{port}: {why}" + ("; pick another --port" if exc.errno == errno.EADDRINUSE
                                                               else "")
    return None


@app.command("api")
def serve_api(host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 only inside a container.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
              loglevel: Annotated[str, typer.Option("--loglevel", "-l")] = "info") -> None:
    """Serve the HTTP API (OpenAPI page at /docs). Writes need RETRAINER_API_TOKEN, sent as a bearer token."""
    import uvicorn

    from retrainer.api import create_app

    settings = get_settings()
    _check_models(settings)  # a promotion loads a model: name a bad hyper-parameter now, as a worker does
    if problem := _port_problem(host, port):
        _fail(problem, 1)
    if settings.api_token is None or not settings.api_token.get_secret_value().strip():
        print("note: no RETRAINER_API_TOKEN set: the API serves reads and refuses every write (403)", file=sys.stderr)
    # The token is a SecretStr: uvicorn's access log shows method, path and status, never headers.
    uvicorn.run(create_app(settings), host=host, port=port, log_level=loglevel.lower())
