"""Capacity per factory and across the region, search, cover, and its event stream."""

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from kyoso.capacity import aggregate
from kyoso.capacity.aggregate import CapacitySum, FactoryCapacity, MachineCapacity
from kyoso.capacity.requirement import Requirement
from kyoso.contract import Id, Material, Process
from kyoso.contract.capabilities import TOLERANCE_COARSEST_MM, TOLERANCE_FINEST_MM

from ..aged import bodies, same_objects
from ..deps import (
    CACHED,
    ERRORS,
    Caller,
    Horizon,
    PartSize,
    Service,
    age_s,
    any_factory,
    cached,
    figures_out,
    figures_tag,
    in_hours,
    invalid,
    machine_of,
    regional,
)
from ..keys import ScopeKind
from ..schemas import (
    Candidate,
    CoverList,
    CoverOut,
    FactoryCapacityOut,
    MachineCapacityOut,
    Problem,
    ProcessCapacityOut,
    RegionCapacityOut,
    RegionProcessOut,
    SearchOut,
)
from ..service import CapacityService
from ..webhook_watch import look_interval_s

router = APIRouter(prefix="/v1", responses=ERRORS)

# --- capacity ---------------------------------------------------------------------------


@router.get(
    "/factories/{factory}/capacity",
    response_model=FactoryCapacityOut,
    responses=CACHED,
    tags=["capacity"],
)
async def get_factory_capacity(
    *, request: Request, factory: Id, horizon_h: Horizon = 24, service: Service, caller: Caller
) -> Response:
    """Capacity per capability (and, in the factory's own view, per machine)."""
    await any_factory(service, caller, factory)
    capacity = await service.capacity(factory, timedelta(hours=horizon_h))
    own = caller.scope.kind is not ScopeKind.PLATFORM
    now = service.now()

    def build() -> dict[str, Any]:
        data = _factory_capacity(capacity, now, own=own).model_dump(mode="json")
        data["data_age_s"] = capacity.newest
        for out, machine in zip(data["machines"] if own else [], capacity.machines, strict=own):
            out["data_age_s"] = machine.newest
        return data

    body = bodies(request).get(("factory", factory, capacity.horizon, own), [capacity], build)
    age = age_s(capacity.as_of, now)
    return cached(request, body.at(now), service.rules.cache_ttl_s, age_s=age, tag=body.tag)


@router.get("/capacity", response_model=RegionCapacityOut, responses=CACHED, tags=["capacity"])
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
    now = service.now()

    def build() -> dict[str, Any]:
        data = _region(service, horizon, process, factories, now).model_dump(mode="json")
        for out, capacity in zip(data["factories"], factories, strict=True):
            out["data_age_s"] = capacity.newest
        return data

    body = bodies(request).get(("region", horizon, process), factories, build)
    age = age_s(aggregate.as_of(factories, now), now)
    return cached(request, body.at(now), service.rules.cache_ttl_s, age_s=age, tag=body.tag)


def _region(
    service: CapacityService,
    horizon: timedelta,
    process: Process | None,
    factories: list[FactoryCapacity],
    now: datetime,
) -> RegionCapacityOut:
    return RegionCapacityOut(
        as_of=aggregate.as_of(factories, now),
        horizon_h=horizon.total_seconds() / 3600,
        by_process=[
            RegionProcessOut(
                process=p.process,
                factories=p.factories,
                offline_factories=p.offline_factories,
                **_sum_out(p.total),
            )
            for p in aggregate.by_process(factories, shared_only=True, process=process)
        ],
        factories=[_factory_capacity(c, now, own=False, process=process) for c in factories],
    )


# --- search -----------------------------------------------------------------------------


async def _candidates(
    service: CapacityService,
    process: Process,
    hours: float,
    within_days: float,
    needs: Requirement | None,
    *,
    one_machine: bool = False,
) -> tuple[datetime, list[Candidate]]:
    """The ranked candidates whose machines meet ``needs`` (None: any machine of the
    process), and when their figures were computed."""
    factories = await service.region(timedelta(days=within_days))
    suitable: set[tuple[str, str]] | None = None
    if needs is not None and needs.asks:  # descriptions are read only when something is asked
        views = await asyncio.gather(*(service.view(c.factory) for c in factories))
        suitable = {
            (view.factory, name)
            for view in views
            for name, machine in view.machines.items()
            if needs.met_by(process, machine.description.capabilities)
        }

    def suits(capacity: FactoryCapacity, machine: MachineCapacity) -> bool:
        return suitable is None or (capacity.factory, machine.machine) in suitable

    now = service.now()
    ranked = [
        Candidate(
            factory=o.factory,
            available=in_hours(o.available_s),
            confidence=round(o.confidence, 4),
            machines=o.machines,
            covers=o.covers,
            largest_machine=in_hours(o.largest_s),
            machines_needed=o.machines_needed,
            data_age_s=age_s(o.newest, now),
            qualified_machines=list(o.qualified),
        )
        for o in aggregate.offers(factories, process, hours, suits, one_machine=one_machine)
    ]
    return aggregate.as_of(factories, now), ranked


@router.get("/search", response_model=SearchOut, responses=CACHED, tags=["search"])
async def search_capacity(
    *,
    request: Request,
    process: Annotated[Process, Query(description="The capability asked for.")],
    hours: Annotated[float, Query(gt=0, le=100_000, description="Machine-hours needed.")],
    within_days: Annotated[float, Query(gt=0, le=31, description="Within the next days.")],
    material: Annotated[Material | None, Query(description="A material to process.")] = None,
    part_mm: PartSize = None,
    thickness_mm: Annotated[
        float | None,
        Query(gt=0, le=1000, description="Sheet or wall thickness: at most max_thickness_mm."),
    ] = None,
    force_kn: Annotated[
        float | None,
        Query(gt=0, le=100_000, description="Press or clamping force needed: at most force_kn."),
    ] = None,
    part_kg: Annotated[
        float | None, Query(gt=0, le=100_000, description="Part weight: at most max_part_kg.")
    ] = None,
    tolerance_mm: Annotated[
        float | None,
        Query(
            ge=TOLERANCE_FINEST_MM,
            le=TOLERANCE_COARSEST_MM,
            description="The part's tightest tolerance, as a ± half-width in millimetres: "
            "the machine's tolerance_mm must be at most this.",
        ),
    ] = None,
    one_machine: Annotated[
        bool, Query(description="The hours must fit on one machine, not a factory's sum.")
    ] = False,
    service: Service,
    caller: Caller,
) -> Response:
    """Who can take ``hours`` of ``process`` within ``within_days`` on machines that meet
    every attribute asked, where their descriptions state it (an unstated one does not
    qualify): factories whose available hours cover it first, those needing the fewest
    machines for it first, then by available hours times confidence."""
    regional(caller)
    needs = Requirement(
        material=material,
        part_mm=part_mm,
        thickness_mm=thickness_mm,
        force_kn=force_kn,
        part_kg=part_kg,
        tolerance_mm=tolerance_mm,
    )
    as_of, ranked = await _candidates(
        service, process, hours, within_days, needs, one_machine=one_machine
    )
    body = SearchOut(
        process=process, hours=hours, within_days=within_days, as_of=as_of, candidates=ranked
    )
    age = age_s(as_of, service.now())
    return cached(request, body, service.rules.cache_ttl_s, age_s=age)


@router.get(
    "/search/cover",
    response_model=CoverList,
    tags=["search"],
    responses={
        **CACHED,
        409: {"model": Problem, "description": "The machine is working: give for_h."},
    },
)
async def find_cover(
    *,
    request: Request,
    factory: Annotated[Id, Query(description="The machine's factory.")],
    machine: Annotated[Id, Query(description="The machine that cannot work.")],
    within_days: Annotated[float, Query(gt=0, le=31, description="Neighbours' window.")] = 7,
    for_h: Annotated[
        float | None,
        Query(gt=0, le=24 * 31, description="Hours it is out (default: until repair)."),
    ] = None,
    service: Service,
    caller: Caller,
) -> Response:
    """Machine M cannot work: who can take the work it would have done, per capability it
    has. That work is its expected load (bookings and history) until its expected repair,
    or over ``for_h`` hours when the caller says how long it is out (a planned outage);
    without ``for_h`` the machine must be broken down or withdrawn now (409 otherwise). Its
    own factory is left out: it is asking for help."""
    await any_factory(service, caller, factory)
    found = await machine_of(service, factory, machine)
    if caller.scope.kind is ScopeKind.PLATFORM and not found.description.sharing.capacity:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no machine {machine!r}")
    if for_h is None:
        out_s = await service.outage_s(factory, machine)
        if out_s is None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"machine {machine!r} is working: nothing to cover (for_h names an outage)",
            )
        span = timedelta(seconds=out_s)
    else:
        span = timedelta(hours=for_h)
    hours = round(max(await service.expected_work(factory, machine, span) / 3600, 0.0001), 4)
    body = []
    as_of = service.now()
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
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(as_of, service.now()))


# --- push -------------------------------------------------------------------------------


EVENT_MIN_CHANGE_H: Final = 0.25
"""Default of ``min_change_h``: a quarter of an hour of any figure."""
_KEEP_ALIVE_S: Final = 15.0
"""A quiet event stream sends a comment this often (proxies close idle connections)."""
_REMEMBERED: Final = 64
"""The figures of the events last sent (by id, in ``app.state.streamed``) that a stream
resumed with one of those ids starts from."""

Rows = dict[tuple[str, str], tuple[Any, ...]]
"""A regional answer's figures by (factory or "" for the region, process)."""


@router.get(
    "/events",
    response_class=StreamingResponse,
    tags=["events"],
    responses={200: {"content": {"text/event-stream": {}}, "description": "An event stream."}},
)
async def stream_capacity_events(
    *,
    request: Request,
    horizon_h: Horizon = 24,
    process: Annotated[Process | None, Query(description="Only this capability.")] = None,
    factory: Annotated[Id | None, Query(description="Only this factory.")] = None,
    min_change_h: Annotated[
        float, Query(ge=0, le=1000, description="Send when a figure moves by this many hours.")
    ] = EVENT_MIN_CHANGE_H,
    min_available_h: Annotated[
        float | None,
        Query(
            gt=0,
            le=100_000,
            description="Send only when available hours (of the region or a factory, per "
            "capability listed) cross this, either way; not with min_change_h.",
        ),
    ] = None,
    last_event_id: Annotated[str | None, Header(description="Resume: the last id seen.")] = None,
    service: Service,
    caller: Caller,
) -> StreamingResponse:
    """Server-sent events: ``capacity`` with the regional capacity (as ``/v1/capacity``, only
    ``process`` and ``factory`` if given), at once and whenever a figure changes: an hours
    figure by ``min_change_h`` or more, or a confidence by 0.05, a reason, an offline flag,
    the factories or capabilities listed. With ``min_available_h``, only when the available
    hours of a row (a capability region-wide or at a factory) cross it, up or down, or a
    row comes or goes. Each event's ``id`` tags its figures: a client reconnecting with
    ``Last-Event-ID`` is sent what it would have been sent had it stayed connected (by the
    figures of that id, while this process remembers them; else the first event unless
    the figures are still those). A comment line every 15 s keeps proxies open.

    The figures are looked at as often as the live views are read again (``view_ttl_s``,
    at least every 0.1 s): a change reaches the stream as soon as it reaches
    ``/v1/capacity``. Figures are computed once for every client (kyoso/api/cache.py); a
    look that finds the same ones as the last costs no more than comparing them."""
    regional(caller)
    if min_available_h is not None and "min_change_h" in request.query_params:
        raise invalid(
            ("query", "min_change_h"),
            "not with min_available_h: a threshold sends its crossings, not moves",
        )
    horizon = timedelta(hours=horizon_h)
    step = look_interval_s(service)
    streamed: dict[str, Rows] = request.app.state.streamed

    def tells(before: Rows, now: Rows) -> bool:
        if min_available_h is None:
            return _moved(before, now, min_change_h)
        return _sides(before, min_available_h) != _sides(now, min_available_h)

    async def stream() -> AsyncIterator[bytes]:
        sent = None if last_event_id is None else streamed.get(last_event_id)
        looked: list[FactoryCapacity] = []
        quiet = 0.0
        while not await request.is_disconnected():
            found = await service.region(horizon)
            chosen = [c for c in found if factory is None or c.factory == factory]
            if not same_objects(chosen, looked):
                looked = chosen
                body = _region(service, horizon, process, chosen, service.now())
                data = body.model_dump_json().encode()
                tag = figures_tag(data)
                now = _figures(body)
                if sent is None and tag == last_event_id:
                    sent = now  # the client has these figures already
                if sent is None or tells(sent, now):
                    sent, quiet = now, 0.0
                    _remember(streamed, tag, now)
                    yield b"event: capacity\nid: " + tag.encode() + b"\ndata: " + data + b"\n\n"
            if quiet >= _KEEP_ALIVE_S:
                quiet = 0.0
                yield b": keep-alive\n\n"
            await asyncio.sleep(step)
            quiet += step

    return StreamingResponse(stream(), media_type="text/event-stream")


def _remember(streamed: dict[str, Rows], tag: str, rows: Rows) -> None:
    """Keep the figures of event ``tag`` among the last :data:`_REMEMBERED` sent."""
    streamed.pop(tag, None)
    streamed[tag] = rows
    while len(streamed) > _REMEMBERED:
        del streamed[next(iter(streamed))]


def _figures(body: RegionCapacityOut) -> Rows:
    """The figures of a regional answer by (factory or "" for the region, process)."""
    rows: Rows = {}
    for p in body.by_process:
        rows["", p.process] = (p.total, p.committed, p.unattainable, p.available,
                               p.confidence, tuple(p.reasons), p.offline_factories)  # fmt: skip
    for f in body.factories:
        for q in f.by_process:
            rows[f.factory, q.process] = (q.total, q.committed, q.unattainable, q.available,
                                          q.confidence, tuple(q.reasons), f.offline)  # fmt: skip
    return rows


def _moved(before: Rows, now: Rows, min_change_h: float) -> bool:
    """Whether a figure moved enough to tell (see :func:`stream_capacity_events`)."""
    if before.keys() != now.keys():
        return True
    for key, figures in now.items():
        old = before[key]
        if any(
            abs(a - b) >= min_change_h and a != b for a, b in zip(old[:4], figures[:4], strict=True)
        ):
            return True
        if abs(old[4] - figures[4]) >= 0.05 or old[5:] != figures[5:]:
            return True
    return False


def _sides(rows: Rows, min_available_h: float) -> dict[tuple[str, str], bool]:
    """Which rows have at least ``min_available_h`` available hours."""
    return {key: figures[3] >= min_available_h for key, figures in rows.items()}


def _sum_out(total: CapacitySum) -> dict[str, Any]:
    return figures_out(total.figures, total.confidence, total.history_coverage)


def _factory_capacity(
    capacity: FactoryCapacity, now: datetime, *, own: bool, process: Process | None = None
) -> FactoryCapacityOut:
    by_process = [
        ProcessCapacityOut(
            process=p.process,
            machines=p.total.machines,
            **_sum_out(p.total),
        )
        for p in aggregate.by_process([capacity], shared_only=not own, process=process)
    ]
    return FactoryCapacityOut(
        factory=capacity.factory,
        as_of=capacity.as_of,
        horizon_h=capacity.horizon.total_seconds() / 3600,
        offline=capacity.offline,
        data_age_s=age_s(capacity.newest, now),
        by_process=by_process,
        machines=[
            MachineCapacityOut(
                machine=m.machine,
                processes=list(m.processes),
                shared=m.shared,
                data_age_s=age_s(m.newest, now),
                **figures_out(m.figures, m.confidence, m.history_coverage),
            )
            for m in capacity.machines
        ]
        if own
        else None,
    )
