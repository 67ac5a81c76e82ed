"""The dashboard page (GET /dashboard) and every asset a page of this API loads, served from installed
packages, never a CDN: a machine without internet (or a locked-down network) gets a working dashboard
and a working /docs.

The page is static and holds no data: its script reads the JSON endpoints (with the token the user
gives it, when reads need one) and posts to the write endpoints with it. Charts are Plotly's own
bundle from the `plotly` package, /docs is Swagger UI 5 from `swagger-ui-py` (its static files only)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).with_name("static")
# An asset's bytes change only with an upgrade of the package that ships it: a browser may keep it a day.
CACHE = {"Cache-Control": "public, max-age=86400"}


def _vendor() -> dict[str, Path]:
    import importlib.resources

    import plotly

    swagger = Path(str(importlib.resources.files("swagger_ui") / "static"))
    return {"plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js",
            "swagger-ui-bundle.js": swagger / "swagger-ui-bundle.js", "swagger-ui.css": swagger / "swagger-ui.css"}


ASSETS = {"dashboard.js": STATIC / "dashboard.js", "dashboard.css": STATIC / "dashboard.css", **_vendor()}


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard", response_class=HTMLResponse)
def page() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/assets/{name}")
def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {name!r}")
    return FileResponse(path, headers=CACHE)


def install(app: FastAPI) -> None:
    """The dashboard's routes, and /docs on the packaged Swagger UI (FastAPI's default loads it from a CDN)."""
    app.include_router(router)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url="/assets/swagger-ui-bundle.js",
                                   swagger_css_url="/assets/swagger-ui.css", swagger_favicon_url="data:,")
