"""Capacity in time: per day, shift or hour of a window, per machine, capability, factory
and region, with each machine's free blocks and when it could do N hours."""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request, Response

from kyoso.capacity.forecast import CapacityFigures
from kyoso.capacity.phased import (
    Block,
    Bucket,
    BucketKind,
    bucketed,
    buckets,
    earliest_finish,
    earliest_start,
    free_blocks,
    summed,
)
from kyoso.contract import Id, Process

from ..aged import bodies
from ..deps import (
    CACHED,
    ERRORS,
    Caller,
    Service,
    age_s,
    any_factory,
    cached,
    in_hours,
    invalid,
    regional,
)
from ..keys import ScopeKind
from ..order_schemas import (
    BlockOut,
    BucketOut,
    FactoryPhasedOut,
    MachineOfferOut,
    MachinePhasedOut,
    ProcessPhasedOut,
    RegionFactoryPhasedOut,
    RegionPhasedOut,
    RegionProcessPhasedOut,
)
from ..phasing import MAX_AHEAD, PhasedFactory, PhasedMachine, zone_of

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["capacity"])

_DEFAULT_SPAN = timedelta(days=7)
From = Annotated[
    datetime | None,
    Query(
        alias="from",
        description="Window start (RFC 3339 with an offset); default: today's midnight in "
        "the factory's time zone (the region's: `timezone`). Figures start now at the "
        "earliest.",
    ),
]
To = Annotated[
    datetime | None,
    Query(description="Window end, at most 31 days from now; default: 7 days after from."),
]
Hours = Annotated[
    float | None,
    Query(gt=0, le=744, description="A job's machine-hours: each machine's earliest start "
          "and finish for it."),
]  # fmt: skip
ProcessFilter = Annotated[Process | None, Query(description="Only this capability.")]


def _window(start: datetime | None, end: datetime | None, zone: str, now: datetime
            ) -> tuple[datetime, datetime]:  # fmt: skip
    """The window asked for, its defaults filled in, checked."""
    for name, moment in (("from", start), ("to", end)):
        if moment is not None and moment.tzinfo is None:
            raise invalid(("query", name), "give an offset (Z or +09:00)")
    if start is None:
        local = now.astimezone(ZoneInfo(zone)).date()
        start = datetime.combine(local, time(), tzinfo=ZoneInfo(zone))
    start = start.astimezone(UTC)
    end = (start + _DEFAULT_SPAN if end is None else end).astimezone(UTC)
    if end <= start:
        raise invalid(("query", "to"), "to must be after from")
    if end <= now:
        raise invalid(("query", "to"), "the window has passed: capacity is from now on")
    if end > now + MAX_AHEAD or end - start > MAX_AHEAD + timedelta(days=1):
        raise invalid(("query", "to"), f"at most {MAX_AHEAD.days} days ahead")
    return start, end


@router.get(
    "/factories/{factory}/capacity/phased", response_model=FactoryPhasedOut, responses=CACHED
)
async def get_factory_phased_capacity(
    *,
    request: Request,
    factory: Id,
    start: From = None,
    to: To = None,
    bucket: Annotated[BucketKind, Query(description="Buckets: day, shift or hour.")] = "day",
    hours: Hours = None,
    process: ProcessFilter = None,
    service: Service,
    caller: Caller,
) -> Response:
    """The factory's capacity per local day, shift or hour of a window, per process and (for
    its own key) per machine, and when each machine could take a job: its longest free
    block and, for ``hours``, its earliest start and finish (a platform key: the shared
    machines', no machine's figures; docs/api.md)."""
    await any_factory(service, caller, factory)
    now = service.now()
    begin, end = _window(start, to, zone_of(await service.view(factory)), now)
    phased = await service.phasing.factory(factory, begin, end)
    own = caller.scope.kind is not ScopeKind.PLATFORM
    machines = [m for m in phased.machines if own or m.capacity.shared]
    cuts = _cuts(machines, bucket, begin, end, phased.timezone)
    chosen = [
        (m, cut)
        for m, cut in zip(machines, cuts, strict=True)
        if process is None or process in m.capacity.processes
    ]
    body = FactoryPhasedOut(
        factory=factory,
        as_of=phased.as_of,
        start=begin,
        end=end,
        bucket=bucket,
        timezone=phased.timezone,
        offline=phased.offline,
        hours=hours,
        by_process=_processes(_per_process(machines, cuts, process)),
        machines=[_machine(m, cut, now) for m, cut in chosen] if own else None,
        offers=[_offer(m, hours) for m, _ in chosen],
    )
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(phased.as_of, now))


@router.get("/capacity/phased", response_model=RegionPhasedOut, responses=CACHED)
async def get_region_phased_capacity(
    *,
    request: Request,
    start: From = None,
    to: To = None,
    bucket: Annotated[
        BucketKind, Query(description="Buckets: day or hour (shifts are each factory's).")
    ] = "day",
    timezone: Annotated[
        str | None,
        Query(
            max_length=64,
            description="IANA time zone of the days and hours; default: the factories' "
            "own, if they share one, else UTC.",
        ),
    ] = None,
    process: ProcessFilter = None,
    service: Service,
    caller: Caller,
) -> Response:
    """The region's shared capacity per day or hour of a window, per process and per
    factory."""
    regional(caller)
    if bucket == "shift":
        raise invalid(("query", "bucket"), "shifts are each factory's: ask a factory for them")
    now = service.now()
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise invalid(("query", "timezone"), f"unknown time zone {timezone!r}") from exc
    zones = {zone_of(await service.view(f)) for f in await service.factories()}
    zone = timezone or (zones.pop() if len(zones) == 1 else "UTC")
    begin, end = _window(start, to, zone, now)
    factories = await service.phasing.region(begin, end)

    def build() -> dict[str, Any]:
        answer = _region(
            factories, bucket=bucket, begin=begin, end=end, zone=zone, process=process, now=now
        )
        return answer.model_dump(mode="json")

    key = ("region-phased", begin, end, bucket, zone, process)
    body = bodies(request).get(key, factories, build)
    as_of = min((f.as_of for f in factories), default=now)
    age = age_s(as_of, now)
    return cached(request, body.at(now), service.rules.cache_ttl_s, age_s=age, tag=body.tag)


def _region(
    factories: Sequence[PhasedFactory],
    *,
    bucket: BucketKind,
    begin: datetime,
    end: datetime,
    zone: str,
    process: Process | None,
    now: datetime,
) -> RegionPhasedOut:
    """The regional answer: the shared machines' figures per process and per factory."""
    per_factory = []
    rows: dict[Process, _Rows] = {}
    offering: dict[Process, list[PhasedFactory]] = {}
    for phased in factories:
        shared = [m for m in phased.machines if m.capacity.shared]
        found = _per_process(shared, _cuts(shared, bucket, begin, end, zone), process)
        per_factory.append(
            RegionFactoryPhasedOut(
                factory=phased.factory,
                offline=phased.offline,
                machines=len(shared),
                by_process=_processes(found),
            )
        )
        for p, (cut, figures) in found.items():
            known = rows.setdefault(p, ([], []))
            known[0].extend(cut)
            known[1].extend(figures)
            offering.setdefault(p, []).append(phased)
    by_process = [
        RegionProcessPhasedOut(
            process=p,
            factories=len(offering[p]),
            offline_factories=sum(f.offline for f in offering[p]),
            **_window_out(figures, summed(cut)),
        )
        for p, (cut, figures) in sorted(rows.items())
    ]
    as_of = min((f.as_of for f in factories), default=now)
    return RegionPhasedOut(
        as_of=as_of,
        start=begin,
        end=end,
        bucket=bucket,
        timezone=zone,
        by_process=by_process,
        factories=per_factory,
    )


def _cuts(
    machines: Sequence[PhasedMachine], kind: BucketKind, start: datetime, end: datetime, zone: str
) -> list[list[tuple[Bucket, CapacityFigures]]]:
    """Each machine's figures per bucket (its own shifts; the days or hours of ``zone``)."""
    shared: list[Bucket] | None = None
    found = []
    for m in machines:
        if kind == "shift":
            into = buckets(kind, m.calendar, start, end, zone)
        else:
            shared = shared if shared is not None else buckets(kind, m.calendar, start, end, zone)
            into = shared
        found.append(list(zip(into, bucketed(m.cut, into), strict=True)))
    return found


_Rows = tuple[list[tuple[Bucket, CapacityFigures]], list[CapacityFigures]]
"""A process's machines' figures per bucket, and over the window."""


def _per_process(
    machines: Sequence[PhasedMachine],
    cuts: Sequence[list[tuple[Bucket, CapacityFigures]]],
    process: Process | None,
) -> dict[Process, _Rows]:
    rows: dict[Process, _Rows] = {}
    for m, cut in zip(machines, cuts, strict=True):
        for p in m.capacity.processes:
            if process is None or p == process:
                known = rows.setdefault(p, ([], []))
                known[0].extend(cut)
                known[1].append(m.capacity.figures)
    return rows


def _processes(rows: dict[Process, _Rows]) -> list[ProcessPhasedOut]:
    return [
        ProcessPhasedOut(process=p, machines=len(figures), **_window_out(figures, summed(cut)))
        for p, (cut, figures) in sorted(rows.items())
    ]


def _window_out(
    figures: Iterable[CapacityFigures], rows: Iterable[tuple[Bucket, CapacityFigures]]
) -> dict[str, Any]:
    total = sum(figures, CapacityFigures(0.0, 0.0, 0.0, 0.0))
    return {
        "total": in_hours(total.total_s),
        "committed": in_hours(total.committed_s),
        "unattainable": in_hours(total.unattainable_s),
        "available": in_hours(total.available_s),
        "buckets": [_bucket(b, f) for b, f in rows],
    }


def _bucket(bucket: Bucket, figures: CapacityFigures) -> BucketOut:
    return BucketOut(
        start=bucket.start,
        end=bucket.end,
        label=bucket.label,
        total=in_hours(figures.total_s),
        committed=in_hours(figures.committed_s),
        unattainable=in_hours(figures.unattainable_s),
        available=in_hours(figures.available_s),
    )


def _machine(
    m: PhasedMachine, rows: list[tuple[Bucket, CapacityFigures]], now: datetime
) -> MachinePhasedOut:
    capacity = m.capacity
    return MachinePhasedOut(
        machine=capacity.machine,
        processes=list(capacity.processes),
        shared=capacity.shared,
        confidence=round(capacity.confidence, 4),
        reasons=list(capacity.figures.reasons),
        data_age_s=age_s(capacity.newest, now),
        **_window_out([capacity.figures], rows),
    )


def _offer(m: PhasedMachine, hours: float | None) -> MachineOfferOut:
    blocks = free_blocks(m.cut)
    longest = max(blocks, key=lambda b: (b.end - b.start, -b.start.timestamp()), default=None)
    first = None if hours is None else earliest_start(blocks, hours * 3600)
    return MachineOfferOut(
        machine=m.capacity.machine,
        processes=list(m.capacity.processes),
        longest_free_block=None if longest is None else _block(longest),
        earliest_start=None if first is None else _block(first),
        earliest_finish=None if hours is None else earliest_finish(m.cut, hours * 3600),
    )


def _block(block: Block) -> BlockOut:
    return BlockOut(start=block.start, end=block.end, available=in_hours(block.available_s))
