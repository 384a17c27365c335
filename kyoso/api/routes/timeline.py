"""What a plant manager glances at: each machine's states through one local day (a state
timeline), and utilization shift by shift over the last days.

Both show each machine's figures, so the factory's own key and admin see them, the platform
not (403). Days are the factory's local days (its time zone: :func:`zone_of`).

**The timeline** is laid from the store's runs of each state (kyoso/store/base.py), cut to
the day and to ``as_of``, end to end: time no sample covers is ``no_data``, never idle.
Where one sample holds several states, the runs place each state's part at an edge of the
sample; a part two runs both claim goes to the earlier one, and a part of the sample no run
claims (a third state in the middle) to the run before it. So the bands tile the day; a
state's time there differs from its prorated seconds (``/kpis``) by less than a sample at
each change of state.

**Utilization by shift** is ISO 22400-2 availability, APT / PBT (kyoso/capacity/kpi.py),
summed over the machines whose calendar has the shift: the seconds ``running`` within the
shift (breaks included, as ``/kpis`` counts a window) over its planned busy time (breaks,
holidays and maintenance left out). A shift under way counts up to ``as_of``.
"""

import asyncio
import bisect
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response

from kyoso.capacity.kpi import Performance, TimeElements
from kyoso.contract import MAX_INTERVAL_S, Id, MachineState
from kyoso.store import StateWindow, StoreReader
from kyoso.store.base import ADJOIN, chain_runs

from ..deps import CACHED, ERRORS, Caller, Service, age_s, cached, invalid, own_factory
from ..phasing import zone_of
from ..schemas import IntervalOut
from ..timeline_schemas import (
    MachineTimelineOut,
    RunOut,
    ShiftReport,
    ShiftUtilizationOut,
    TimelineOut,
    TimelineState,
)

__all__ = ["MAX_DAYS", "router"]

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["factories"])

MAX_DAYS: Final = 31
"""How many days back a timeline, and how many days of shifts, may be asked for."""
_STRADDLE: Final = timedelta(seconds=MAX_INTERVAL_S)
"""How far past a window a sample may end and still cover part of it."""

_Band = tuple[TimelineState | None, datetime, datetime]
"""A stretch of a machine's timeline; ``None``: covered by a sample, no run placed there."""


@router.get("/factories/{factory}/timeline", response_model=TimelineOut, responses=CACHED)
async def get_timeline(
    *,
    request: Request,
    factory: Id,
    day: Annotated[
        date | None,
        Query(
            description="The local day (YYYY-MM-DD) in the factory's time zone; default: "
            f"today. At most {MAX_DAYS} days back, never ahead.",
            examples=["2026-12-06"],
        ),
    ] = None,
    service: Service,
    caller: Caller,
) -> Response:
    """Each machine's states through one local day, end to end (no_data where no sample
    covers the time, never idle), up to as_of today, and its calendar's planned busy
    intervals that day: a state timeline."""
    await own_factory(service, caller, factory)
    view = await service.view(factory)
    zone = zone_of(view)
    today = view.as_of.astimezone(ZoneInfo(zone)).date()
    asked = today if day is None else day
    if asked > today:
        raise invalid(
            ("query", "day"), f"{asked} is ahead of the factory's today, {today} ({zone})"
        )
    if asked < today - timedelta(days=MAX_DAYS):
        raise invalid(
            ("query", "day"),
            f"{asked} is more than {MAX_DAYS} days before the factory's today, {today} ({zone})",
        )
    start, end = _midnight(asked, zone), _midnight(asked + timedelta(days=1), zone)
    until = max(start, min(end, view.as_of))
    laid = await _timelines(service.store, factory, start, until)
    machines = []
    for name, machine in view.machines.items():
        bands = laid.get(name) or ([("no_data", start, until)] if until > start else [])
        machines.append(
            MachineTimelineOut(
                machine=name,
                name=machine.description.name,
                runs=[RunOut(state=state, start=a, end=b) for state, a, b in bands],
                planned=[
                    IntervalOut(start=a, end=b)
                    for a, b in machine.description.calendar.planned_intervals(start, end)
                ],
            )
        )
    body = TimelineOut(
        factory=factory,
        day=asked,
        timezone=zone,
        start=start,
        end=end,
        as_of=view.as_of,
        machines=machines,
    )
    now = service.now()
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(view.as_of, now))


@router.get("/factories/{factory}/kpis/shifts", response_model=ShiftReport, responses=CACHED)
async def get_shift_utilization(
    *,
    request: Request,
    factory: Id,
    days: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_DAYS,
            description="Local days back, today included.",
            examples=[7],
        ),
    ] = 7,
    service: Service,
    caller: Caller,
) -> Response:
    """Utilization per shift over the last days, oldest first, the shift under way up to
    as_of: ISO 22400-2 availability (APT / PBT) summed over the machines whose calendar has
    the shift."""
    await own_factory(service, caller, factory)
    view = await service.view(factory)
    zone, as_of = zone_of(view), view.as_of
    first = as_of.astimezone(ZoneInfo(zone)).date() - timedelta(days=days - 1)
    # (local day, shift name) -> its machines, each with its start and end
    worked: dict[tuple[date, str], list[tuple[str, datetime, datetime]]] = {}
    for name, machine in view.machines.items():
        calendar = machine.description.calendar
        for shift, begin, finish in calendar.shifts_between(_midnight(first, zone), as_of):
            local = begin.astimezone(ZoneInfo(zone)).date()
            if local >= first and begin < as_of:
                worked.setdefault((local, shift.name), []).append((name, begin, finish))
    windows = {
        (begin, min(finish, as_of)) for found in worked.values() for _, begin, finish in found
    }
    measured = await _state_seconds(service.store, factory, windows)
    shifts = []
    for (local, shift_name), found in worked.items():
        performance, observed = Performance.empty(), 0.0
        for name, begin, finish in found:
            window = (begin, min(finish, as_of))
            planned = view.machines[name].description.calendar.planned_seconds(*window)
            seconds = measured[window].get(name)
            elements = (
                TimeElements.measured(planned, seconds.seconds, seconds.no_data_s)
                if seconds is not None
                else TimeElements.measured(planned, {}, (window[1] - window[0]).total_seconds())
            )
            performance += Performance.of_machine(elements, {}, None)
            observed += (window[1] - window[0]).total_seconds() - elements.no_data
        # A shift no machine said anything of has no figure: not 0 %, which it would read as.
        availability = performance.availability if observed > 0 else None
        shifts.append(
            ShiftUtilizationOut(
                day=local,
                shift=shift_name,
                start=min(begin for _, begin, _ in found),
                end=max(finish for _, _, finish in found),
                ongoing=any(finish > as_of for _, _, finish in found),
                machines=len(found),
                planned_s=round(performance.elements.pbt, 3),
                running_s=round(performance.elements.apt, 3),
                no_data_s=round(performance.elements.no_data, 3),
                availability=None if availability is None else round(availability, 6),
            )
        )
    shifts.sort(key=lambda s: (s.start, s.end, s.shift))
    body = ShiftReport(factory=factory, days=days, timezone=zone, as_of=as_of, shifts=shifts)
    now = service.now()
    return cached(request, body, service.rules.cache_ttl_s, age_s=age_s(as_of, now))


def _midnight(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(), tzinfo=ZoneInfo(zone)).astimezone(UTC)


async def _state_seconds(
    store: StoreReader, factory: str, windows: Iterable[tuple[datetime, datetime]]
) -> dict[tuple[datetime, datetime], dict[str, StateWindow]]:
    """Each machine's state seconds in each window: one read per window for every machine
    of the factory (its machines mostly work the same shifts)."""
    ordered = sorted(windows)
    read = await asyncio.gather(*(store.state_seconds(factory, None, a, b) for a, b in ordered))
    return {
        window: {row.machine: row for row in rows}
        for window, rows in zip(ordered, read, strict=True)
    }


async def _timelines(
    store: StoreReader, factory: str, start: datetime, end: datetime
) -> dict[str, list[tuple[TimelineState, datetime, datetime]]]:
    """Each machine's bands over ``[start, end)`` (module docstring), by machine; a
    machine without a sample there is absent."""
    if end <= start:
        return {}
    states = list(MachineState)
    read = await asyncio.gather(
        *(store.state_run_rows(factory, state, start, end + _STRADDLE) for state in states)
    )
    runs: dict[str, list[tuple[datetime, datetime, TimelineState]]] = {}
    covered: dict[str, list[tuple[datetime, datetime]]] = {}
    for state, rows in zip(states, read, strict=True):
        for run in chain_runs(rows):
            runs.setdefault(run.machine, []).append((run.start, run.end, state.value))
        for machine, begin, ts, _, _ in rows:
            covered.setdefault(machine, []).append((begin, ts))
    return {
        machine: _laid(runs.get(machine, []), _merged(spans), start, end)
        for machine, spans in covered.items()
    }


def _merged(spans: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Sample intervals joined where they adjoin (gateways tile time, within ``ADJOIN``)."""
    merged: list[tuple[datetime, datetime]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + ADJOIN:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _laid(
    runs: list[tuple[datetime, datetime, TimelineState]],
    covered: list[tuple[datetime, datetime]],
    start: datetime,
    end: datetime,
) -> list[tuple[TimelineState, datetime, datetime]]:
    """One machine's runs laid end to end over ``[start, end)`` (module docstring)."""
    bands: list[_Band] = []
    cursor = start
    for run in sorted(runs, key=lambda run: (run[0], run[1])):
        begin, finish = max(run[0], cursor), min(run[1], end)
        if finish > begin:
            bands += _gap(cursor, begin, covered)
            bands.append((run[2], begin, finish))
            cursor = finish
    bands += _gap(cursor, end, covered)
    known: list[tuple[TimelineState, datetime, datetime]] = []
    for i, (placed, a, b) in enumerate(bands):
        state: TimelineState
        if placed is None:  # the run before it, else the run after it (bands tile the time)
            nearby: list[TimelineState | None] = [known[-1][0]] if known else []
            nearby += [bands[i + 1][0]] if i + 1 < len(bands) else []
            state = next((s for s in nearby if s is not None and s != "no_data"), "unknown")
        else:
            state = placed
        if known and known[-1][0] == state:
            known[-1] = (state, known[-1][1], b)
        else:
            known.append((state, a, b))
    return known


def _gap(start: datetime, end: datetime, covered: list[tuple[datetime, datetime]]) -> list[_Band]:
    """``[start, end)``, where no run lies, cut into what samples cover (``None``) and what
    none does (``no_data``)."""
    found: list[_Band] = []
    for a, b in covered[bisect.bisect_right(covered, start, key=lambda span: span[1]) :]:
        if a >= end:
            break
        if a > start:
            found.append(("no_data", start, a))
        found.append((None, max(a, start), min(b, end)))
        start = min(b, end)
    if start < end:
        found.append(("no_data", start, end))
    return found
