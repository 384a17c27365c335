"""Factories, machines, gateways, planned time and ISO 22400 KPIs: a factory's own view, and
the platform's of its shared machines and consented KPIs."""

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from kyoso.capacity.kpi import Performance
from kyoso.contract import Id, Process

from ..deps import (
    CACHED,
    ERRORS,
    Caller,
    End,
    Service,
    Start,
    age_s,
    any_factory,
    cached,
    check_window,
    in_hours,
    machine_of,
    own_factory,
)
from ..keys import ScopeKind
from ..platform_schemas import (
    KpiAnswer,
    MachineListing,
    ProcessKpisOut,
    PublicMachineOut,
    SharedKpiReport,
)
from ..schemas import (
    FactoryList,
    FactoryOut,
    GatewayList,
    GatewayOut,
    IntervalOut,
    KpiReport,
    KpisOut,
    MachineKpisOut,
    MachineOut,
    PerformanceOut,
    PlannedOut,
    ShiftOut,
    TimeElementsOut,
)
from ..service import FactoryView, MachineKpis, MachineView

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["factories"])


# --- factories and machines -------------------------------------------------------------


@router.get("/factories", response_model=FactoryList, responses=CACHED)
async def list_factories(request: Request, service: Service, caller: Caller) -> Response:
    """Factories this key may see, with their gateways and staleness."""
    names = await service.factories()
    if caller.scope.kind is ScopeKind.FACTORY:
        names = [n for n in names if n == caller.factory]
    views = await asyncio.gather(*(service.view(n) for n in names))
    now = service.now()
    body = [
        FactoryOut(
            factory=v.factory,
            machines=len(v.machines),
            gateways_online=sum(g.status == "online" for g in v.gateways),
            gateways_offline=sum(g.status == "offline" for g in v.gateways),
            offline=v.offline,
            data_age_s=age_s(v.newest, now),
            as_of=v.as_of,
        )
        for v in views
    ]
    oldest = min((v.as_of for v in views), default=now)
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(oldest, now))


@router.get("/factories/{factory}/machines", response_model=MachineListing, responses=CACHED)
async def list_machines(
    request: Request, factory: Id, service: Service, caller: Caller
) -> Response:
    """Every described machine: description, capabilities, calendar and live state. The
    platform is shown the machines whose capacity is shared, by their public description:
    id, name, capabilities and the calendar's time zone, nothing live."""
    await any_factory(service, caller, factory)
    view = await service.view(factory)
    now = service.now()
    body: list[MachineOut] | list[PublicMachineOut]
    if caller.scope.kind is ScopeKind.PLATFORM:
        body = [
            PublicMachineOut(
                machine=d.machine,
                name=d.name,
                capabilities=d.capabilities,
                timezone=d.calendar.timezone,
            )
            for d in (m.description for m in view.machines.values())
            if d.sharing.capacity
        ]
    else:
        body = [_machine(m, view.as_of, now) for m in view.machines.values()]
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(view.as_of, now))


@router.get("/factories/{factory}/gateways", response_model=GatewayList, responses=CACHED)
async def list_gateways(
    request: Request, factory: Id, service: Service, caller: Caller
) -> Response:
    """The last status of each of the factory's gateways, and its samples missing."""
    await own_factory(service, caller, factory)
    view = await service.view(factory)
    now = service.now()
    body = []
    for g in view.gateways:
        gaps = view.gaps.get(g.gateway)
        oldest_s = None if gaps is None else gaps.oldest_s_at(now)
        body.append(
            GatewayOut(
                gateway=g.gateway,
                status=g.status,
                reason=g.reason,
                since=max(g.ts, view.heard.get(g.gateway, g.ts))
                if g.reason == "connection_lost"
                else g.ts,
                gap_samples=0 if gaps is None else gaps.missing,
                gap_oldest_s=None if oldest_s is None else round(oldest_s, 3),
            )
        )
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(view.as_of, now))


@router.get("/factories/{factory}/machines/{machine}", response_model=MachineOut, responses=CACHED)
async def get_machine(
    *, request: Request, factory: Id, machine: Id, service: Service, caller: Caller
) -> Response:
    """One machine's description and live state."""
    await own_factory(service, caller, factory)
    found = await machine_of(service, factory, machine)
    as_of, now = (await service.view(factory)).as_of, service.now()
    body = _machine(found, as_of, now)
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(as_of, now))


@router.get(
    "/factories/{factory}/machines/{machine}/calendar", response_model=PlannedOut, responses=CACHED
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
    await own_factory(service, caller, factory)
    check_window(start, end)
    found = await machine_of(service, factory, machine)
    intervals = found.description.calendar.planned_intervals(start, end)
    body = PlannedOut(
        machine=machine,
        start=start,
        end=end,
        pbt=in_hours(sum((b - a).total_seconds() for a, b in intervals)),
        intervals=[IntervalOut(start=a, end=b) for a, b in intervals],
    )
    return cached(request, body, 3600)


# --- KPIs -------------------------------------------------------------------------------


@router.get("/factories/{factory}/kpis", response_model=KpiAnswer, responses=CACHED)
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
    """ISO 22400-2 time elements and KPIs per machine and for the factory. The platform is
    shown them summed over the machines whose KPIs the factory shares (``sharing.kpis``),
    per process and in total, never per machine (403 with ``machine``); a factory sharing
    none answers with nothing summed, as one whose machines have no samples in the window."""
    await any_factory(service, caller, factory)
    check_window(start, end)
    platform = caller.scope.kind is ScopeKind.PLATFORM
    if platform and machine is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "a platform key sees KPIs summed over machines"
        )
    if machine is not None:
        await machine_of(service, factory, machine)
    view = await service.view(factory)
    rows = await service.kpis(view, start, end, machine, shared_only=platform)
    total = PerformanceOut(**_performance(sum((r.performance for r in rows), Performance.empty())))
    body: KpiReport | SharedKpiReport
    if platform:
        body = SharedKpiReport(
            factory=factory,
            start=start,
            end=end,
            machines=len(rows),
            by_process=_by_process(view, rows),
            total=total,
        )
    else:
        body = KpiReport(
            factory=factory,
            start=start,
            end=end,
            machines=[
                MachineKpisOut(machine=r.machine, **_performance(r.performance)) for r in rows
            ],
            total=total,
        )
    return cached(request, body, service.rules.cache_ttl_s)


def _by_process(view: FactoryView, rows: list[MachineKpis]) -> list[ProcessKpisOut]:
    """The machines' performance summed per process they offer (a machine offering two
    counts in both)."""
    found: dict[Process, list[Performance]] = {}
    for row in rows:
        capabilities = view.machines[row.machine].description.capabilities
        for process in dict.fromkeys(c.process for c in capabilities):
            found.setdefault(process, []).append(row.performance)
    return [
        ProcessKpisOut(
            process=process,
            machines=len(performances),
            **_performance(sum(performances, Performance.empty())),
        )
        for process, performances in sorted(found.items())
    ]


def _machine(view: MachineView, as_of: datetime, now: datetime) -> MachineOut:
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
        state=None if latest is None else latest.state,
        alarm=None if latest is None else latest.alarm,
        down_since=(
            None
            if latest is None or view.down_for_s is None
            else latest.ts - timedelta(seconds=view.down_for_s)
        ),
        data_age_s=age_s(view.newest, now),
        stale=view.stale,
        as_of=as_of,
    )


def _performance(p: Performance) -> dict[str, Any]:
    e = p.elements

    def ratio(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    return {
        "time": TimeElementsOut(
            pbt=in_hours(e.pbt),
            apt=in_hours(e.apt),
            aust=in_hours(e.aust),
            adet=in_hours(e.adet),
            adot=in_hours(e.adot),
            pdot=in_hours(e.pdot),
            aubt=in_hours(e.aubt),
            unknown=in_hours(e.unknown),
            no_data=in_hours(e.no_data),
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
