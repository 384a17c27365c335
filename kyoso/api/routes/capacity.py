"""Capacity per factory and across the region, search, cover, and its event stream."""

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from kyoso.capacity import aggregate
from kyoso.capacity.aggregate import FactoryCapacity, MachineCapacity
from kyoso.contract import Id, Material, Process

from ..deps import (
    CACHED,
    ERRORS,
    Caller,
    Horizon,
    Service,
    any_factory,
    cached,
    figures_out,
    in_hours,
    machine_of,
    regional,
)
from ..keys import ScopeKind
from ..schemas import (
    Candidate,
    CoverOut,
    FactoryCapacityOut,
    MachineCapacityOut,
    ProcessCapacityOut,
    RegionCapacityOut,
    RegionProcessOut,
    SearchOut,
)
from ..service import CapacityService

router = APIRouter(prefix="/v1", responses=ERRORS)
_MAX_REGION_BODIES = 64

# --- capacity ---------------------------------------------------------------------------


@router.get("/factories/{factory}/capacity", response_model=FactoryCapacityOut, responses=CACHED)
async def get_factory_capacity(
    *, request: Request, factory: Id, horizon_h: Horizon = 24, service: Service, caller: Caller
) -> Response:
    """Capacity per capability (and, in the factory's own view, per machine)."""
    await any_factory(service, caller, factory)
    capacity = await service.capacity(factory, timedelta(hours=horizon_h))
    own = caller.scope.kind is not ScopeKind.PLATFORM
    return cached(request, _factory_capacity(capacity, own=own), service.rules.cache_ttl_s)


@router.get("/capacity", response_model=RegionCapacityOut, responses=CACHED)
async def get_region_capacity(
    *,
    request: Request,
    horizon_h: Horizon = 24,
    process: Annotated[Process | None, Query(description="Only this capability.")] = None,
    service: Service,
    caller: Caller,
) -> Response:
    """Capacity per capability across the region, and per factory (shared machines)."""
    regional(caller)
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
    return cached(request, known[1], service.rules.cache_ttl_s)


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
                **figures_out(p.total.figures, p.total.confidence),
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
            available=in_hours(o.available_s),
            confidence=round(o.confidence, 4),
            machines=o.machines,
            covers=o.covers,
            data_age_s=o.data_age_s,
        )
        for o in aggregate.offers(factories, process, hours, suits)
    ]
    return aggregate.as_of(factories, service.now()), ranked


@router.get("/search", response_model=SearchOut, responses=CACHED)
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
    regional(caller)
    as_of, ranked = await _candidates(service, process, hours, within_days, material)
    body = SearchOut(
        process=process, hours=hours, within_days=within_days, as_of=as_of, candidates=ranked
    )
    return cached(request, body, service.rules.cache_ttl_s)


@router.get("/search/cover", response_model=list[CoverOut], responses=CACHED)
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
    await any_factory(service, caller, factory)
    found = await machine_of(service, factory, machine)
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
    return cached(request, body, service.rules.cache_ttl_s)


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
    regional(caller)
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


def _factory_capacity(capacity: FactoryCapacity, *, own: bool) -> FactoryCapacityOut:
    by_process = [
        ProcessCapacityOut(
            process=p.process,
            machines=p.total.machines,
            **figures_out(p.total.figures, p.total.confidence),
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
                **figures_out(m.figures, m.confidence),
            )
            for m in capacity.machines
        ]
        if own
        else None,
    )
