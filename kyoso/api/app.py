"""The capacity API (FastAPI): factories, machines, KPIs, capacity, search, bookings.

Every route under ``/v1`` needs an API key (``Authorization: Bearer kyo_...``). The tenant
comes from the key, never from the path: a ``factory:<id>`` key asking for another factory
gets 404 exactly as for a factory that does not exist; a ``platform`` key sees aggregated
capacity of every factory and search, never per-machine data or telemetry; ``admin`` sees
everything. Answers carry an ``ETag`` (a ``If-None-Match`` that matches gets 304) and
``Cache-Control``; ``/v1/events`` pushes the regional capacity as server-sent events.
"""

import asyncio
import base64
import hashlib
import importlib.resources
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import AwareDatetime, BaseModel

from kyoso import __version__
from kyoso.capacity import aggregate
from kyoso.capacity.aggregate import FactoryCapacity, MachineCapacity
from kyoso.capacity.forecast import Booking, CapacityFigures
from kyoso.capacity.kpi import Performance
from kyoso.contract import Id, Material, Process

from .keys import ApiKeyStore, Principal, ScopeKind
from .schemas import (
    BookingIn,
    BookingsIn,
    BookingsOut,
    Candidate,
    CoverOut,
    FactoryCapacityOut,
    FactoryOut,
    GatewayOut,
    IntervalOut,
    KpiReport,
    KpisOut,
    MachineCapacityOut,
    MachineKpisOut,
    MachineOut,
    PerformanceOut,
    PlannedOut,
    Problem,
    ProcessCapacityOut,
    RegionCapacityOut,
    RegionProcessOut,
    SearchOut,
    ShiftOut,
    TimeElementsOut,
)
from .service import CapacityService, MachineView

__all__ = ["create_app"]

log = logging.getLogger(__name__)

MAX_WINDOW: Final = timedelta(days=92)
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
"""Windows and bookings must lie between these (calendars expand day by day)."""
MAX_HORIZON_H: Final = 24 * 31
_DESCRIPTION = """
Live available capacity of a regional network's machines, derived from their telemetry.

**Definitions.** Time elements and KPIs follow ISO 22400-2:2014 (APT running, AUST setup,
ADET down, ADOT idle, PDOT planned stop; PBT from the shift calendar; availability =
APT/PBT, effectiveness = PRI x PQ/APT, quality ratio = GQ/PQ, OEE = A x E x QR,
utilization efficiency = APT/AUBT). Capacity over a horizon follows the ISA-95
capability model: total (planned busy time), committed (booked or expected load),
unattainable (down now, expected losses) and available = total - committed - unattainable.
Every figure carries `as_of`, the data age, a confidence and its reasons; a factory whose
gateway is offline or whose data is stale has its available capacity withdrawn (`offline`).

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

_bearer = HTTPBearer(auto_error=False, description="An API key: kyo_<id>_<secret>.")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No valid API key."},
    403: {"model": Problem, "description": "The key's scope does not allow this."},
    404: {"model": Problem, "description": "No such factory or machine (for this key)."},
}


def _h(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def _capacity(figures: CapacityFigures, confidence: float) -> dict[str, Any]:
    """The figures in hours, as every capacity answer shows them."""
    return {
        "total": _h(figures.total_s),
        "committed": _h(figures.committed_s),
        "unattainable": _h(figures.unattainable_s),
        "available": _h(figures.available_s),
        "confidence": round(min(1.0, max(0.0, confidence)), 4),
        "reasons": list(figures.reasons),
    }


def _performance(p: Performance) -> dict[str, Any]:
    e = p.elements

    def ratio(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    return {
        "time": TimeElementsOut(
            pbt=_h(e.pbt),
            apt=_h(e.apt),
            aust=_h(e.aust),
            adet=_h(e.adet),
            adot=_h(e.adot),
            pdot=_h(e.pdot),
            aubt=_h(e.aubt),
            unknown=_h(e.unknown),
            no_data=_h(e.no_data),
        ),
        "good": round(p.good, 4),
        "reject": round(p.reject, 4),
        "kpis": KpisOut(
            availability=ratio(p.availability),
            effectiveness=ratio(p.effectiveness),
            quality_ratio=ratio(p.quality_ratio),
            oee=ratio(p.oee),
            utilization_efficiency=ratio(p.utilization_efficiency),
        ),
    }


def _factory_capacity(capacity: FactoryCapacity, *, own: bool) -> FactoryCapacityOut:
    by_process = [
        ProcessCapacityOut(
            process=p.process,
            machines=p.total.machines,
            **_capacity(p.total.figures, p.total.confidence),
        )
        for p in aggregate.by_process([capacity], shared_only=not own)
    ]
    return FactoryCapacityOut(
        factory=capacity.factory,
        as_of=capacity.as_of,
        horizon_h=capacity.horizon.total_seconds() / 3600,
        offline=capacity.offline,
        data_age_s=capacity.data_age_s,
        by_process=by_process,
        machines=[
            MachineCapacityOut(
                machine=m.machine,
                processes=list(m.processes),
                shared=m.shared,
                data_age_s=m.data_age_s,
                **_capacity(m.figures, m.confidence),
            )
            for m in capacity.machines
        ]
        if own
        else None,
    )


def _cached(request: Request, body: BaseModel | list[Any] | bytes, max_age_s: float) -> Response:
    """``body`` (a model, a list of models, or JSON) as JSON with an ETag; 304 when the
    client has it already."""
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, list):
        data = b"[" + b",".join(item.model_dump_json().encode() for item in body) + b"]"
    else:
        data = body.model_dump_json().encode()
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={int(max_age_s)}"}
    wanted = request.headers.get("if-none-match", "")
    if etag in {tag.strip().removeprefix("W/") for tag in wanted.split(",")} or wanted == "*":
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(data, media_type="application/json", headers=headers)


def _overview() -> tuple[str, dict[str, str]]:
    """The overview page with a Content-Security-Policy that admits exactly its own inline
    script and style (by SHA-256) and same-origin requests: nothing external can load."""
    resource = importlib.resources.files("kyoso.api").joinpath("static/overview.html")
    page = resource.read_text(encoding="utf-8")

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


def create_app(
    service: CapacityService,
    keys: ApiKeyStore,
    *,
    lifespan: Callable[[FastAPI], Any] | None = None,
) -> FastAPI:
    """The FastAPI application over ``service``, authenticating with ``keys``.

    ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from the installed fastapi-offline
    package, not from a CDN: they work with no network."""
    app = FastAPIOffline(
        title="Kyoso capacity API",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        static_url=_DOCS_ASSETS,
        redoc_url=None,  # served below, under a policy
    )
    app.state.service = service
    app.state.region_bodies = {}
    app.state.keys = keys
    app.include_router(router)
    page, headers = _overview()

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

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        return await request_validation_exception_handler(request, _invalid((), str(exc)))

    return app


router = APIRouter(prefix="/v1", responses=_ERRORS)
_MAX_REGION_BODIES = 64
_CACHED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the If-None-Match ETag is the current one."}
}


def _service(request: Request) -> CapacityService:
    service: CapacityService = request.app.state.service
    return service


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    keys: ApiKeyStore = request.app.state.keys
    found = None
    if credentials is not None:
        found = await asyncio.to_thread(keys.authenticate, credentials.credentials)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer kyo_...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


Service = Annotated[CapacityService, Depends(_service)]
Caller = Annotated[Principal, Depends(_principal)]
Horizon = Annotated[
    float, Query(gt=0, le=MAX_HORIZON_H, description="Horizon in hours from now.", examples=[24])
]
Start = Annotated[AwareDatetime, Query(description="Window start (RFC 3339).")]
End = Annotated[AwareDatetime, Query(description="Window end, at most 92 days after start.")]


async def _own_factory(service: CapacityService, caller: Principal, factory: str) -> None:
    """404 unless ``factory`` exists and the key may see its machines (403: platform)."""
    kind = caller.scope.kind
    if kind is ScopeKind.PLATFORM:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a platform key sees aggregated capacity")
    await _any_factory(service, caller, factory)


async def _any_factory(service: CapacityService, caller: Principal, factory: str) -> None:
    """404 unless ``factory`` exists and the key may see its aggregates; another factory
    is answered exactly as a missing one."""
    if caller.scope.kind is ScopeKind.FACTORY and caller.factory != factory:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no factory {factory!r}")
    if factory not in await service.factories():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no factory {factory!r}")


def _regional(caller: Principal) -> None:
    if caller.scope.kind is ScopeKind.FACTORY:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "regional figures need a platform key")


async def _machine_of(service: CapacityService, factory: str, machine: str) -> MachineView:
    found = (await service.view(factory)).machines.get(machine)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no machine {machine!r}")
    return found


def _invalid(where: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 shaped as FastAPI's own validation errors (the documented shape)."""
    return RequestValidationError([{"loc": where, "msg": message, "type": "value_error"}])


def _window(start: datetime, end: datetime, where: str = "query") -> None:
    for name, moment in (("start", start), ("end", end)):
        if not EARLIEST <= moment <= LATEST:
            raise _invalid(
                (where, name), f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}"
            )
    if end <= start:
        raise _invalid((where, "end"), "end must be after start")
    if end - start > MAX_WINDOW:
        raise _invalid((where, "end"), f"window longer than {MAX_WINDOW.days} days")


# --- factories and machines -------------------------------------------------------------


@router.get("/factories", response_model=list[FactoryOut], responses=_CACHED)
async def list_factories(request: Request, service: Service, caller: Caller) -> Response:
    """Factories this key may see, with their gateways and staleness."""
    names = await service.factories()
    if caller.scope.kind is ScopeKind.FACTORY:
        names = [n for n in names if n == caller.factory]
    views = await asyncio.gather(*(service.view(n) for n in names))
    body = [
        FactoryOut(
            factory=v.factory,
            machines=len(v.machines),
            gateways_online=sum(g.status == "online" for g in v.gateways),
            gateways_offline=sum(g.status == "offline" for g in v.gateways),
            offline=v.offline,
            data_age_s=v.data_age_s,
            as_of=v.as_of,
        )
        for v in views
    ]
    return _cached(request, body, service.rules.cache_ttl_s)


@router.get("/factories/{factory}/machines", response_model=list[MachineOut], responses=_CACHED)
async def list_machines(
    request: Request, factory: Id, service: Service, caller: Caller
) -> Response:
    """Every described machine: description, capabilities, calendar and live state."""
    await _own_factory(service, caller, factory)
    view = await service.view(factory)
    body = [_machine(m, view.as_of) for m in view.machines.values()]
    return _cached(request, body, service.rules.cache_ttl_s)


@router.get("/factories/{factory}/gateways", response_model=list[GatewayOut], responses=_CACHED)
async def list_gateways(
    request: Request, factory: Id, service: Service, caller: Caller
) -> Response:
    """The last status of each of the factory's gateways."""
    await _own_factory(service, caller, factory)
    view = await service.view(factory)
    body = [
        GatewayOut(gateway=g.gateway, status=g.status, reason=g.reason, since=g.ts)
        for g in view.gateways
    ]
    return _cached(request, body, service.rules.cache_ttl_s)


@router.get("/factories/{factory}/machines/{machine}", response_model=MachineOut, responses=_CACHED)
async def get_machine(
    *, request: Request, factory: Id, machine: Id, service: Service, caller: Caller
) -> Response:
    """One machine's description and live state."""
    await _own_factory(service, caller, factory)
    found = await _machine_of(service, factory, machine)
    as_of = (await service.view(factory)).as_of
    return _cached(request, _machine(found, as_of), service.rules.cache_ttl_s)


@router.get(
    "/factories/{factory}/machines/{machine}/calendar", response_model=PlannedOut, responses=_CACHED
)
async def get_planned(
    *,
    request: Request,
    factory: Id,
    machine: Id,
    start: Start,
    end: End,
    service: Service,
    caller: Caller,
) -> Response:
    """Planned busy time from the machine's calendar: weekly shifts minus breaks, holidays
    and planned maintenance."""
    await _own_factory(service, caller, factory)
    _window(start, end)
    found = await _machine_of(service, factory, machine)
    intervals = found.description.calendar.planned_intervals(start, end)
    body = PlannedOut(
        machine=machine,
        start=start,
        end=end,
        pbt=_h(sum((b - a).total_seconds() for a, b in intervals)),
        intervals=[IntervalOut(start=a, end=b) for a, b in intervals],
    )
    return _cached(request, body, 3600)


# --- KPIs -------------------------------------------------------------------------------


@router.get("/factories/{factory}/kpis", response_model=KpiReport, responses=_CACHED)
async def get_kpis(
    *,
    request: Request,
    factory: Id,
    start: Start,
    end: End,
    machine: Annotated[Id | None, Query(description="Only this machine.")] = None,
    service: Service,
    caller: Caller,
) -> Response:
    """ISO 22400-2 time elements and KPIs per machine and for the factory."""
    await _own_factory(service, caller, factory)
    _window(start, end)
    if machine is not None:
        await _machine_of(service, factory, machine)
    rows = await service.kpis(factory, start, end, machine)
    total = sum((r.performance for r in rows), Performance.empty())
    body = KpiReport(
        factory=factory,
        start=start,
        end=end,
        machines=[MachineKpisOut(machine=r.machine, **_performance(r.performance)) for r in rows],
        total=PerformanceOut(**_performance(total)),
    )
    return _cached(request, body, service.rules.cache_ttl_s)


# --- capacity ---------------------------------------------------------------------------


@router.get("/factories/{factory}/capacity", response_model=FactoryCapacityOut, responses=_CACHED)
async def get_factory_capacity(
    *, request: Request, factory: Id, horizon_h: Horizon = 24, service: Service, caller: Caller
) -> Response:
    """Capacity per capability (and, in the factory's own view, per machine)."""
    await _any_factory(service, caller, factory)
    capacity = await service.capacity(factory, timedelta(hours=horizon_h))
    own = caller.scope.kind is not ScopeKind.PLATFORM
    return _cached(request, _factory_capacity(capacity, own=own), service.rules.cache_ttl_s)


@router.get("/capacity", response_model=RegionCapacityOut, responses=_CACHED)
async def get_region_capacity(
    *,
    request: Request,
    horizon_h: Horizon = 24,
    process: Annotated[Process | None, Query(description="Only this capability.")] = None,
    service: Service,
    caller: Caller,
) -> Response:
    """Capacity per capability across the region, and per factory (shared machines)."""
    _regional(caller)
    horizon = timedelta(hours=horizon_h)
    factories = await service.region(horizon)
    # The region's answer is the same for every caller until the figures are recomputed:
    # serialize it once per computation, not per request.
    bodies: dict[Any, tuple[list[FactoryCapacity], bytes]] = request.app.state.region_bodies
    key = (horizon, process)
    known = bodies.get(key)
    if (
        known is None
        or len(known[0]) != len(factories)
        or any(a is not b for a, b in zip(known[0], factories, strict=True))
    ):
        data = _region(service, horizon, process, factories).model_dump_json().encode()
        bodies.pop(key, None)
        bodies[key] = known = (factories, data)
        while len(bodies) > _MAX_REGION_BODIES:
            del bodies[next(iter(bodies))]
    return _cached(request, known[1], service.rules.cache_ttl_s)


def _region(
    service: CapacityService,
    horizon: timedelta,
    process: Process | None,
    factories: list[FactoryCapacity],
) -> RegionCapacityOut:
    return RegionCapacityOut(
        as_of=aggregate.as_of(factories, service.now()),
        horizon_h=horizon.total_seconds() / 3600,
        by_process=[
            RegionProcessOut(
                process=p.process,
                factories=p.factories,
                offline_factories=p.offline_factories,
                **_capacity(p.total.figures, p.total.confidence),
            )
            for p in aggregate.by_process(factories, shared_only=True, process=process)
        ],
        factories=[_factory_capacity(c, own=False) for c in factories],
    )


# --- search -----------------------------------------------------------------------------


async def _candidates(
    service: CapacityService,
    process: Process,
    hours: float,
    within_days: float,
    material: Material | None,
) -> tuple[datetime, list[Candidate]]:
    """The ranked candidates, and when their figures were computed."""
    factories = await service.region(timedelta(days=within_days))
    suitable: set[tuple[str, str]] | None = None
    if material is not None:  # the descriptions are read only when a material is asked for
        suitable = set()
        for capacity in factories:
            view = await service.view(capacity.factory)
            suitable |= {
                (capacity.factory, name)
                for name, machine in view.machines.items()
                if any(
                    c.process == process and material in c.materials
                    for c in machine.description.capabilities
                )
            }

    def suits(capacity: FactoryCapacity, machine: MachineCapacity) -> bool:
        return suitable is None or (capacity.factory, machine.machine) in suitable

    ranked = [
        Candidate(
            factory=o.factory,
            available=_h(o.available_s),
            confidence=round(o.confidence, 4),
            machines=o.machines,
            covers=o.covers,
            data_age_s=o.data_age_s,
        )
        for o in aggregate.offers(factories, process, hours, suits)
    ]
    return aggregate.as_of(factories, service.now()), ranked


@router.get("/search", response_model=SearchOut, responses=_CACHED)
async def search(
    *,
    request: Request,
    process: Annotated[Process, Query(description="The capability asked for.")],
    hours: Annotated[float, Query(gt=0, le=100_000, description="Machine-hours needed.")],
    within_days: Annotated[float, Query(gt=0, le=31, description="Within the next days.")],
    material: Annotated[Material | None, Query(description="A material to process.")] = None,
    service: Service,
    caller: Caller,
) -> Response:
    """Who can take ``hours`` of ``process`` within ``within_days``: factories whose
    available hours cover it first, then by available hours times confidence."""
    _regional(caller)
    as_of, ranked = await _candidates(service, process, hours, within_days, material)
    body = SearchOut(
        process=process, hours=hours, within_days=within_days, as_of=as_of, candidates=ranked
    )
    return _cached(request, body, service.rules.cache_ttl_s)


@router.get("/search/cover", response_model=list[CoverOut], responses=_CACHED)
async def cover(
    *,
    request: Request,
    factory: Annotated[Id, Query(description="The machine's factory.")],
    machine: Annotated[Id, Query(description="The machine that is down.")],
    within_days: Annotated[float, Query(gt=0, le=31)] = 7,
    service: Service,
    caller: Caller,
) -> Response:
    """Machine M is down: who can take its expected work (its committed hours over the
    horizon), per capability it has. Its own factory is left out: it is asking for help."""
    await _any_factory(service, caller, factory)
    found = await _machine_of(service, factory, machine)
    if caller.scope.kind is ScopeKind.PLATFORM and not found.description.sharing.capacity:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no machine {machine!r}")
    capacity = await service.capacity(factory, timedelta(days=within_days))
    own = next(m for m in capacity.machines if m.machine == machine)
    hours = round(max(own.figures.committed_s / 3600, 0.0001), 4)
    body = []
    for process in dict.fromkeys(c.process for c in found.description.capabilities):
        as_of, ranked = await _candidates(service, process, hours, within_days, None)
        body.append(
            CoverOut(
                factory=factory,
                machine=machine,
                process=process,
                hours=hours,
                within_days=within_days,
                as_of=as_of,
                candidates=[c for c in ranked if c.factory != factory],
            )
        )
    return _cached(request, body, service.rules.cache_ttl_s)


# --- bookings ---------------------------------------------------------------------------


@router.get("/factories/{factory}/machines/{machine}/bookings", response_model=BookingsOut)
async def get_bookings(factory: Id, machine: Id, service: Service, caller: Caller) -> BookingsOut:
    """The bookings the factory declared for the machine."""
    await _own_factory(service, caller, factory)
    await _machine_of(service, factory, machine)
    declared = (await asyncio.to_thread(service.bookings.declared, factory)).get(machine)
    return BookingsOut(
        factory=factory,
        machine=machine,
        declared=declared is not None,
        bookings=[BookingIn(start=b.start, end=b.end, hours=b.hours) for b in declared or []],
    )


def _factory_only(caller: Principal) -> None:
    if caller.scope.kind is not ScopeKind.FACTORY:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "bookings are declared by the factory")


@router.put(
    "/factories/{factory}/machines/{machine}/bookings",
    response_model=BookingsOut,
    responses={400: {"model": Problem, "description": "The body is not JSON."}},
)
async def put_bookings(
    *, factory: Id, machine: Id, body: BookingsIn, service: Service, caller: Caller
) -> BookingsOut:
    """Declare the machine's bookings, replacing earlier ones: its committed load is then
    the booked hours instead of the forecast. Only the factory's own key."""
    _factory_only(caller)
    await _own_factory(service, caller, factory)
    await _machine_of(service, factory, machine)
    for b in body.bookings:
        _window(b.start, b.end, "body")
    bookings = [Booking(b.start, b.end, b.hours) for b in body.bookings]
    await asyncio.to_thread(service.bookings.replace, factory, machine, bookings)
    service.forget(factory)
    return BookingsOut(factory=factory, machine=machine, declared=True, bookings=body.bookings)


@router.delete(
    "/factories/{factory}/machines/{machine}/bookings", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_bookings(factory: Id, machine: Id, service: Service, caller: Caller) -> None:
    """Return the machine's committed load to the forecast."""
    _factory_only(caller)
    await _own_factory(service, caller, factory)
    await _machine_of(service, factory, machine)
    await asyncio.to_thread(service.bookings.clear, factory, machine)
    service.forget(factory)


# --- push -------------------------------------------------------------------------------


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "An event stream."}},
)
async def events(
    *, request: Request, horizon_h: Horizon = 24, service: Service, caller: Caller
) -> StreamingResponse:
    """Server-sent events: ``capacity`` with the regional capacity (as ``/v1/capacity``)
    at once and whenever it changes; a comment line every 15 s keeps proxies open."""
    _regional(caller)
    horizon = timedelta(hours=horizon_h)
    step = max(1.0, min(service.rules.cache_ttl_s, 15.0))

    async def stream() -> AsyncIterator[bytes]:
        last = None
        quiet = 0.0
        while not await request.is_disconnected():
            body = _region(service, horizon, None, await service.region(horizon))
            figures = body.model_dump_json(include={"by_process", "factories"})
            if figures != last:
                last, quiet = figures, 0.0
                yield f"event: capacity\ndata: {body.model_dump_json()}\n\n".encode()
            elif quiet >= 15:
                quiet = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(step)
            quiet += step

    return StreamingResponse(stream(), media_type="text/event-stream")


def _machine(view: MachineView, as_of: datetime) -> MachineOut:
    d = view.description
    latest = view.latest
    shift = d.calendar.shift_at(as_of)
    return MachineOut(
        machine=d.machine,
        name=d.name,
        gateway=d.gateway,
        capabilities=d.capabilities,
        ideal_cycle_time_s=d.ideal_cycle_time_s,
        calendar=d.calendar,
        shift=None if shift is None else ShiftOut(name=shift[0].name, start=shift[1], end=shift[2]),
        share_capacity=d.sharing.capacity,
        share_kpis=d.sharing.kpis,
        state=None if latest is None else latest.sample.state,
        alarm=None if latest is None else latest.sample.alarm,
        data_age_s=view.data_age_s,
        stale=view.stale,
        as_of=as_of,
    )
