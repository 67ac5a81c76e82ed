"""The FastAPI app: routers by resource, the services' errors as HTTP answers, a body size limit.
OpenAPI at /openapi.json, its page at /docs, the dashboard at /dashboard (assets served from installed
packages, no CDN)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import retrainer
from retrainer.api import controls, dashboard, errors, health, metrics, models, producers, retraining, runs, trends
from retrainer.api.context import Context
from retrainer.api.limits import MAX_BODY_BYTES, BodySizeLimit
from retrainer.config import Settings

DESCRIPTION = """Keeps production ML models accurate on its own: versions, training runs and their decisions,
promotion (a compare-and-swap) and rollback, retrain requests. Writes need `Authorization: Bearer <token>`
(RETRAINER_API_TOKEN). Responses are the shapes of the CLI's `--json` output."""


def create_app(settings: Settings, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """An API over `settings`' database and broker (nothing is read from the process environment here)."""
    ctx = Context(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()

    app = FastAPI(title="retrainer", version=retrainer.__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # dashboard.install serves /docs from swagger-ui-py's files
    app.state.context = ctx
    errors.install(app, settings.database_url, settings.broker_url)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    for module in (models, trends, retraining, runs, producers, controls, health, metrics):
        app.include_router(module.router)
    dashboard.install(app)
    return app
