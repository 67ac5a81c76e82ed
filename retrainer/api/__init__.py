"""The HTTP API: a thin FastAPI layer over the same services the CLI uses (`retrainer api` serves it).

`create_app(settings)` builds the app; each router module covers one resource."""

from retrainer.api.app import create_app

__all__ = ["create_app"]
