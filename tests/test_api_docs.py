"""The API's documentation pages (``/docs``, ``/redoc``) work offline: every script and
stylesheet they use comes from the app itself, and a real headless Chromium that can
resolve no host renders every operation without asking anything of another origin."""

import json
import re
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from apikit import build_region, running_api
from browser import chromium, rendered
from test_overview import Server, server

__all__ = ["server"]  # test_overview's fixture: a real `kyoso api` on uvicorn

PAGES = ("/docs", "/redoc")
_URL = re.compile(r"""(?:https?:)?//[^\s"'<>()]+""")
# Every host name fails to resolve but the loopback, where the server is: no network.
_OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def _references(page: str, base: str) -> tuple[list[str], list[str]]:
    """The scripts and the stylesheets ``page`` (served at ``base``) loads, as URLs."""
    elements = rendered(page)
    scripts = [urljoin(base, e["src"]) for e in elements if e["tag"] == "script" and e.get("src")]
    styles = [
        urljoin(base, e["href"])
        for e in elements
        if e["tag"] == "link" and "stylesheet" in e.get("rel", "").split()
    ]
    return scripts, styles


@pytest.mark.parametrize("path", PAGES)
def test_the_page_loads_its_scripts_and_styles_from_the_app(tmp_path: Path, path: str) -> None:
    region = build_region(tmp_path / "store.sqlite3", 1)
    with running_api(region, tmp_path) as api:
        response = api.client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        base = str(response.url)
        origin = urlsplit(base).netloc
        page = response.text
        # No absolute URL in the page (a link, an icon, fonts) leaves the app's origin.
        outside = [u for u in _URL.findall(page) if urlsplit(urljoin(base, u)).netloc != origin]
        assert outside == []
        scripts, styles = _references(page, base)
        assert scripts
        if path == "/docs":
            assert styles
        for urls, kinds in (
            (scripts, ("text/javascript", "application/javascript")),
            (styles, ("text/css",)),
        ):
            for url in urls:
                assert urlsplit(url).netloc == origin, url
                asset = api.client.get(url)
                assert asset.status_code == 200, url
                assert asset.headers["content-type"].startswith(kinds), url
                assert len(asset.content) > 10_000, url  # the real bundle, not a stub
        redirect = api.client.get("/docs/oauth2-redirect")  # Swagger UI's OAuth2 return
        assert redirect.status_code == 200
        assert _URL.findall(redirect.text) == []
        schema = api.client.get("/openapi.json").json()
    assert not set(PAGES) & set(schema["paths"])  # the pages are not part of the API


# --- in headless Chromium against the real server -----------------------------------------


def _operations(server: Server) -> dict[str, str]:
    """Path by operation id, from the server's own OpenAPI document."""
    with urllib.request.urlopen(f"{server.base}/openapi.json", timeout=10) as response:  # noqa: S310 (loopback)
        schema = json.load(response)
    return {
        operation["operationId"]: path
        for path, item in schema["paths"].items()
        for operation in item.values()
    }


def _render(server: Server, workdir: Path, path: str) -> tuple[str, set[str]]:
    """The DOM of ``path`` after Chromium ran its scripts, and every URL the page itself
    asked for (scripts, styles, images, fonts, fetches), from Chromium's network log;
    Chromium's own background requests carry no initiator and are left out."""
    netlog = workdir / f"netlog-{path.strip('/')}.json"
    dom = chromium(workdir, _OFFLINE, f"--log-net-log={netlog}", "--dump-dom", server.base + path)
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    started = (e.get("params", {}) for e in log["events"] if e["type"] == start)
    asked = {params["url"] for params in started if params.get("initiator") == server.base}
    return dom, asked


def _class(element: dict[str, str]) -> list[str]:
    return element.get("class", "").split()


def test_chromium_renders_every_operation_in_swagger_ui(server: Server, tmp_path: Path) -> None:
    operations = _operations(server)
    dom, asked = _render(server, tmp_path, "/docs")
    elements = rendered(dom)
    blocks = [e["id"] for e in elements if "opblock" in _class(e)]
    paths = {e["data-path"] for e in elements if "opblock-summary-path" in _class(e)}
    assert "/v1/capacity" in paths, dom[:2000]
    assert paths == set(operations.values())
    assert len(blocks) == len(operations)
    assert all(any(b.endswith(f"-{op}") for b in blocks) for op in operations)
    assert f"{server.base}/openapi.json" in asked
    assert [url for url in asked if not url.startswith(f"{server.base}/")] == []


def test_chromium_renders_every_operation_in_redoc(server: Server, tmp_path: Path) -> None:
    operations = _operations(server)
    dom, asked = _render(server, tmp_path, "/redoc")
    sections = {
        e["data-section-id"].rsplit("operation/", 1)[1]
        for e in rendered(dom)
        if "operation/" in e.get("data-section-id", "")
    }
    assert sections == set(operations), dom[:2000]
    assert "/v1/capacity" in dom
    assert f"{server.base}/openapi.json" in asked
    assert [url for url in asked if not url.startswith(f"{server.base}/")] == []
