"""The API's documentation page (``/docs``), served with no internet: Swagger UI's files come
from the ``swagger-ui-bundle`` package and are served by the controller itself under
``/docs/static/`` (FastAPI's default page loads them from a CDN, so it is blank at an edge
site without internet). ReDoc (``/redoc``) is not served: it has no offline bundle here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

DOCS_URL = "/docs"
STATIC_URL = "/docs/static"


def swagger_ui_dir() -> Path | None:
    """The folder holding swagger-ui-bundle.js and swagger-ui.css, None if not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def mount_docs(app: FastAPI) -> bool:
    """Serve ``/docs`` from local files; False (and no ``/docs``) if the bundle is missing."""
    folder = swagger_ui_dir()
    if folder is None:
        log.warning("swagger-ui-bundle is not installed: the API docs page /docs is off")
        return False
    app.mount(STATIC_URL, StaticFiles(directory=folder), name="swagger-ui")
    redirect = f"{DOCS_URL}/oauth2-redirect"

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            swagger_ui_parameters={"validatorUrl": None},  # no call to an online validator
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    return True
