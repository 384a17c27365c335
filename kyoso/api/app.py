"""The capacity API's application: :func:`create_app` puts together the routes under
``/v1`` (:mod:`kyoso.api.routes`, one router per resource, with what they share in
:mod:`kyoso.api.deps`), the overview page at ``/``, ``/healthz`` and ``/readyz``, and the
OpenAPI pages served from the package (``/docs``, ``/redoc``), and Prometheus ``/metrics``.

Every route under ``/v1`` needs an API key (``Authorization: Bearer kyo_...``); answers
carry an ``ETag`` (a ``If-None-Match`` that matches gets 304) and ``Cache-Control``;
``/v1/events`` pushes the regional capacity as server-sent events.
"""

import base64
import contextlib
import hashlib
import importlib.resources
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline

from kyoso import __version__, i18n

from . import problems
from .aged import AgedBodies
from .keys import ApiKeyStore
from .limits import LIMITED, Limiter, RequestLimits
from .metrics import CONTENT_TYPE_LATEST, ApiMetrics, MetricsMiddleware
from .openapi import (
    TAGS,
    HeadAsGet,
    WeakEtagWhenEncoded,
    document,
    known_query,
    operation_id,
)
from .routes import ROUTERS, capacity, factories, holds, phased, timeline, webhooks
from .service import CapacityService
from .webhook_config import WebhookSettings
from .webhooks import WebhookHub

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_DESCRIPTION = """
Live available capacity of a regional network's machines, derived from their telemetry.

**Definitions.** Time elements and KPIs follow ISO 22400-2:2014 (APT running, AUST setup,
ADET down, ADOT idle, PDOT planned stop; PBT from the shift calendar; availability =
APT/PBT, effectiveness = PRI x PQ/APT, quality ratio = GQ/PQ, OEE = A x E x QR,
utilization efficiency = APT/AUBT). Capacity over a horizon follows the ISA-95
capability model: total (planned busy time), committed (the expected load, consumed by
bookings), unattainable (down now until the repair learnt per machine, expected losses)
and available = total - committed - unattainable. Every figure carries `as_of`, the data
age at the response, a confidence (1 - the backtest's error for that much history), the
history coverage and its reasons; capacity without evidence is withdrawn with the reason
(`offline`, `unreadable`, `insufficient_history`).

**Access.** `Authorization: Bearer <key>`; scopes `platform` (aggregated capacity of every
factory), `factory:<id>` (its own factory only), `admin`.
"""

_DOCS_ASSETS: Final = "/static-offline-docs"
"""Where fastapi-offline mounts the Swagger UI and ReDoc files of its wheel."""
_REDOC_POLICY: Final = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""ReDoc asks for its logo from its CDN (and hides it when that fails): nothing but the
app itself may load."""
_EXPENSIVE: Final = (
    factories.get_kpis,
    timeline.get_timeline,
    timeline.get_shift_utilization,
    capacity.get_factory_capacity,
    capacity.get_region_capacity,
    capacity.search_capacity,
    capacity.find_cover,
    phased.get_factory_phased_capacity,
    phased.get_region_phased_capacity,
    holds.create_hold,
    webhooks.create_webhook,
)
"""The routes that compute (KPIs over a window; capacity when not cached): each key may
run only so many at once (kyoso/api/limits.py)."""


_PAGE_WORDS: Final = ("page", "state", "reason", "process")
"""The catalog sections the overview page reads (kyoso/i18n), in every language."""


def _overview() -> tuple[str, dict[str, str]]:
    """The overview page with a Content-Security-Policy that admits exactly its own inline
    script and style (by SHA-256) and same-origin requests: nothing external can load.

    ``static/overview.html`` names its parts with ``<!-- include overview.js -->`` (the
    files beside it) and ``<!-- include catalog -->`` (its words in every language, as
    JSON: the page picks the reader's language itself), put in here so that the page is
    one static document whose hashes hold whatever language it is read in."""
    static = importlib.resources.files("kyoso.api").joinpath("static")
    words = {lang: {s: i18n.section(s, lang) for s in _PAGE_WORDS} for lang in i18n.LANGUAGES}
    # Within <script> a "<" could end it: JSON's \u003c never does.
    catalog = json.dumps(words, ensure_ascii=False).replace("<", "\\u003c")

    def include(found: re.Match[str]) -> str:
        name = found[1]
        return catalog if name == "catalog" else static.joinpath(name).read_text("utf-8")

    template = static.joinpath("overview.html").read_text("utf-8")
    page = re.sub(r"<!-- include (\S+) -->", include, template)

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks)
        return " ".join(f"'sha256-{d}'" for d in digests)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return page, headers


def _with_webhooks(
    lifespan: Callable[[FastAPI], Any] | None, hub: WebhookHub
) -> Callable[[FastAPI], Any]:
    """``lifespan`` (the stores opened), then the webhooks, stopped first."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if lifespan is not None:
                await stack.enter_async_context(lifespan(app))
            await stack.enter_async_context(hub)
            yield

    return run


def create_app(
    service: CapacityService,
    keys: ApiKeyStore,
    *,
    lifespan: Callable[[FastAPI], Any] | None = None,
    limits: RequestLimits | None = None,
    cors_origins: Sequence[str] = (),
    monotonic: Callable[[], float] = time.monotonic,
    webhooks: WebhookSettings | None = None,
) -> FastAPI:
    """The FastAPI application over ``service``, authenticating with ``keys``, each key
    within ``limits`` (None: the defaults) on the ``monotonic`` clock; browsers on
    ``cors_origins`` may call it (CORS; none by default). Webhooks run while the app does,
    after ``lifespan`` is entered (None: their defaults, but kept in memory).

    ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from the installed fastapi-offline
    package, not from a CDN: they work with no network."""
    settings = webhooks or WebhookSettings(path=None)
    hub = WebhookHub(settings, service, keys)
    app = FastAPIOffline(
        title="Kyoso capacity API",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=_with_webhooks(lifespan, hub),
        static_url=_DOCS_ASSETS,
        redoc_url=None,  # served below, under a policy
        openapi_tags=TAGS,
        generate_unique_id_function=operation_id,
    )
    app.openapi = lambda: document(app)  # type: ignore[method-assign]
    problems.install(app)
    app.state.service = service
    app.state.bodies = AgedBodies()
    app.state.keys = keys
    app.state.webhooks = hub
    app.state.streamed = {}  # figures sent on event streams, by event id (routes/capacity.py)
    app.state.query_names = {}  # each operation's query parameters (openapi.known_query)
    app.state.limiter = limiter = Limiter(
        limits or RequestLimits(), expensive=_EXPENSIVE, clock=monotonic
    )
    app.state.metrics = metrics = ApiMetrics(service, limiter)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.add_middleware(WeakEtagWhenEncoded)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "If-None-Match"],
            expose_headers=["ETag", "Age", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(HeadAsGet)  # outermost: a HEAD gets exactly a GET's headers
    admitted = Depends(limiter.admit, scope="function")  # released as the route returns
    for router in ROUTERS:
        app.include_router(router, dependencies=[admitted, Depends(known_query)], responses=LIMITED)
    page, headers = _overview()

    @app.get("/metrics", include_in_schema=False)
    async def _metrics() -> Response:
        """Prometheus metrics (kyoso/api/metrics.py), like the gateway's and the ingest's."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def _root() -> HTMLResponse:
        """The live overview page; it reads its API key in the browser, so it needs none."""
        return HTMLResponse(page, headers=headers)

    @app.get("/redoc", include_in_schema=False)
    async def _redoc(request: Request) -> HTMLResponse:
        """ReDoc from the package's files; nothing else may load (``_REDOC_POLICY``)."""
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{_DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{_DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _REDOC_POLICY
        return page

    @app.get("/healthz", include_in_schema=False)
    async def _healthz() -> dict[str, str]:
        """200 while the process serves."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def _readyz() -> JSONResponse:
        """200 when the store answers, else 503."""
        try:
            await service.store.factories()  # the store itself, not a cached answer
        except Exception:  # any store failure means not ready; the log has the reason
            log.warning("readiness: the store does not answer", exc_info=True)
            return JSONResponse({"status": "store unavailable"}, 503)
        return JSONResponse({"status": "ok"})

    return app
