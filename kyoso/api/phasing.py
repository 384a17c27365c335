"""Capacity in time, as the API serves it: each machine's figures hour by hour over a
window the caller names, and the room a hold would take (the rules:
kyoso/capacity/phased.py).

The hours are forecast from now (a stop under way, its repair and the evidence are the
same as for ``/capacity``), then cut to the window: a window that starts later still sees
today's repair, and one that starts earlier has no past. A factory's hours are computed
once per window and evidence, like its capacity (kept ``cache_ttl_s``, forgotten when
its bookings or holds change).
"""

import asyncio
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from kyoso.capacity.aggregate import MachineCapacity
from kyoso.capacity.forecast import CapacityFigures, Slice, free_in
from kyoso.capacity.phased import within
from kyoso.contract import ShiftCalendar

from .cache import FreshCache

if TYPE_CHECKING:
    from .service import CapacityService, FactoryView, MachineView

__all__ = ["MAX_AHEAD", "PhasedFactory", "PhasedMachine", "Phasing", "zone_of"]

MAX_AHEAD: Final = timedelta(days=31)
"""How far from now a window may reach."""


@dataclass(frozen=True, slots=True)
class PhasedMachine:
    """One machine over a window: its figures there, and hour by hour."""

    capacity: MachineCapacity
    cut: list[Slice]
    calendar: ShiftCalendar


@dataclass(frozen=True, slots=True)
class PhasedFactory:
    """A factory's machines over a window."""

    factory: str
    as_of: datetime
    offline: bool
    newest: datetime | None
    timezone: str
    """Its machines' time zone (the first described machine's; UTC with none)."""
    machines: list[PhasedMachine]


class Phasing:
    """The service's figures in time (``CapacityService.phasing``)."""

    def __init__(self, service: "CapacityService", cache: FreshCache[PhasedFactory]) -> None:
        self._service = service
        self._cache = cache

    async def close(self) -> None:
        """Stop computing ahead."""
        await self._cache.close()

    def forget(self, factory: str) -> None:
        """Compute the factory's hours again on the next request."""
        self._cache.forget(lambda key: isinstance(key, tuple) and key[0] == factory)

    async def factory(self, factory: str, start: datetime, end: datetime) -> PhasedFactory:
        """The factory's machines over ``[start, end)`` (nothing before now)."""
        view = await self._service.view(factory)
        return await self._cache.get(
            (factory, start, end, view.evidence),
            lambda: self._compute(view, start, end),
            lambda _: view.read_at,
        )

    async def region(self, start: datetime, end: datetime) -> list[PhasedFactory]:
        """Every factory's machines over ``[start, end)``."""
        factories = await self._service.factories()
        return list(await asyncio.gather(*(self.factory(f, start, end) for f in factories)))

    async def _compute(self, view: "FactoryView", start: datetime, end: datetime) -> PhasedFactory:
        begin = max(start, view.as_of)
        assessed = (
            await self._service.assessed(view, end - view.as_of, hourly=True) if end > begin else []
        )
        machines = [
            _windowed(capacity, within(cut, begin, end), view.machines[capacity.machine])
            for capacity, cut in assessed
        ]
        return PhasedFactory(
            view.factory, view.as_of, view.offline, view.newest, zone_of(view), machines
        )

    async def room(
        self, factory: str, machines: list[str], start: datetime, end: datetime
    ) -> dict[str, float]:
        """Seconds each of ``machines`` has available within ``[start, end)`` with every
        hold placed so far: what one more hold may take."""
        service = self._service
        view = await service.view(factory)
        begin = max(start, view.as_of)
        if end <= begin:
            return dict.fromkeys(machines, 0.0)
        assessed = await service.assessed(view, end - view.as_of, hourly=True, only=machines)
        return {capacity.machine: free_in(cut, begin, end) for capacity, cut in assessed}


def zone_of(view: "FactoryView") -> str:
    """A factory's time zone: its first described machine's calendar's (UTC with none)."""
    first = next(iter(view.machines.values()), None)
    return "UTC" if first is None else first.description.calendar.timezone


def _windowed(capacity: MachineCapacity, cut: list[Slice], view: "MachineView") -> PhasedMachine:
    """A machine's figures over the window from its hours there (the reasons kept)."""
    total = math.fsum(s.total_s for s in cut)
    reasons = tuple(r for r in capacity.figures.reasons if r != "no_planned_time")
    figures = CapacityFigures(
        total,
        math.fsum(s.committed_s for s in cut),
        math.fsum(s.unattainable_s for s in cut),
        math.fsum(s.available_s for s in cut),
        (*reasons, "no_planned_time") if total == 0 else reasons,
    )
    return PhasedMachine(replace(capacity, figures=figures), cut, view.description.calendar)
