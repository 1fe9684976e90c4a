"""The API docs page works with no internet: every asset it names is served by the controller
itself, and the page names no external URL."""

from __future__ import annotations

import re

import httpx

from .conftest import Bed


def test_the_docs_page_and_every_asset_come_from_the_controller(bed: Bed) -> None:
    bed.start_controller()
    with httpx.Client(base_url=bed.url, timeout=30.0) as http:
        page = http.get("/docs")
        assert page.status_code == 200, page.text
        html = page.text
        assert not re.search(r"https?://", html), "the page names an external URL"
        assets = set(re.findall(r"""(?:src|href)=["']([^"']+)["']""", html))
        assets |= set(re.findall(r"""url:\s*['"]([^'"]+)['"]""", html))  # the OpenAPI doc
        assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"} <= assets
        assert "/openapi.json" in assets
        for url in sorted(assets):
            resp = http.get(url)
            assert resp.status_code == 200, (url, resp.status_code)
            assert resp.content, url
        assert http.get("/docs/oauth2-redirect").status_code == 200
        # a path outside the bundle is not served
        assert http.get("/docs/static/../../../etc/passwd").status_code == 404
