"""Capacity summed and ranked: per machine, per capability of a factory, across the region,
and the factories a search offers. Pure functions over the figures of
:mod:`kyoso.capacity.forecast`; no HTTP, no store, so the rules are tested on their own.

Rules:

- A **sum** adds the ISA-95 figures of its machines, and weighs their confidences by planned
  time (a machine without planned time in the horizon adds nothing to either).
- A machine with two capabilities counts in both; the region counts only machines whose
  factory shares their capacity.
- A search **ranks** the factories that cover the hours asked first; among them, those
  that need the fewest of their machines to do it (a factory whose one machine takes the
  whole order before one that sums three lathes); then by available hours weighted by
  confidence, then by factory id (a stable order). Hours with no confidence never cover a
  request.
- Work that **cannot be split** (``one_machine``) is offered on one machine: the most
  trusted of those that cover it alone, or, if none does, the most trusted of all.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from kyoso.contract import Process

from .forecast import CapacityFigures, Reason

__all__ = [
    "CapacitySum",
    "FactoryCapacity",
    "MachineCapacity",
    "Offer",
    "ProcessSum",
    "as_of",
    "by_process",
    "offers",
    "summed",
]


@dataclass(frozen=True, slots=True)
class MachineCapacity:
    """One machine's capacity over a horizon, with how much to trust it."""

    machine: str
    processes: tuple[Process, ...]
    figures: CapacityFigures
    confidence: float
    """1 - the available hours' expected error for this much history (capacity/confidence.py)."""
    history_coverage: float
    """Observed over planned time of the lookback."""
    newest: datetime | None
    """When its latest sample ended (None: none yet)."""
    shared: bool
    """The factory shares this machine's capacity with the region."""


@dataclass(frozen=True, slots=True)
class FactoryCapacity:
    """Every described machine's capacity over ``[as_of, as_of + horizon)``."""

    factory: str
    as_of: datetime
    horizon: timedelta
    offline: bool
    newest: datetime | None
    """When the newest sample of any machine ended (None: none yet)."""
    machines: list[MachineCapacity]

    def by_process(self, *, shared_only: bool) -> dict[Process, list[MachineCapacity]]:
        """Machines by capability process (a machine with two capabilities is in both)."""
        result: dict[Process, list[MachineCapacity]] = {}
        for machine in self.machines:
            if machine.shared or not shared_only:
                for process in machine.processes:
                    result.setdefault(process, []).append(machine)
        return result


@dataclass(frozen=True, slots=True)
class CapacitySum:
    """Figures of several machines added up, and how far the sum can be trusted."""

    figures: CapacityFigures
    confidence: float
    history_coverage: float
    machines: int


def summed(machines: Sequence[MachineCapacity]) -> CapacitySum:
    """The machines' figures added, their confidences and coverages weighed by planned
    time."""
    total = committed = unattainable = available = 0.0
    reasons: dict[Reason, None] = {}
    for machine in machines:  # as CapacityFigures.__add__ would, without a sum per step
        f = machine.figures
        total += f.total_s
        committed += f.committed_s
        unattainable += f.unattainable_s
        available += f.available_s
        reasons.update(dict.fromkeys(f.reasons))
    figures = CapacityFigures(total, committed, unattainable, available, tuple(reasons))

    def weighed(share: Callable[[MachineCapacity], float]) -> float:
        return sum(share(m) * m.figures.total_s for m in machines) / total if total > 0 else 0.0

    return CapacitySum(
        figures,
        weighed(lambda m: m.confidence),
        weighed(lambda m: m.history_coverage),
        len(machines),
    )


@dataclass(frozen=True, slots=True)
class ProcessSum:
    """One capability's capacity summed over factories (one factory: ``factories`` 1)."""

    process: Process
    total: CapacitySum
    factories: int
    offline_factories: int


def by_process(
    factories: Sequence[FactoryCapacity], *, shared_only: bool, process: Process | None = None
) -> list[ProcessSum]:
    """Each capability's sum over ``factories`` (only ``process`` if given), by process."""
    entries: dict[Process, list[tuple[FactoryCapacity, list[MachineCapacity]]]] = {}
    for capacity in factories:
        for found, machines in capacity.by_process(shared_only=shared_only).items():
            if process is None or found == process:
                entries.setdefault(found, []).append((capacity, machines))
    return [
        ProcessSum(
            process=found,
            total=summed([m for _, machines in pairs for m in machines]),
            factories=len(pairs),
            offline_factories=sum(c.offline for c, _ in pairs),
        )
        for found, pairs in sorted(entries.items())
    ]


def as_of(factories: Sequence[FactoryCapacity], now: datetime) -> datetime:
    """When figures of several factories were computed: the oldest one's (``now``, for
    none)."""
    return min((c.as_of for c in factories), default=now)


@dataclass(frozen=True, slots=True)
class Offer:
    """What one factory can offer for a request of ``hours`` of a capability."""

    factory: str
    available_s: float
    confidence: float
    machines: int
    covers: bool
    largest_s: float
    """The available seconds of its machine with the most trusted hours."""
    machines_needed: int | None
    """The fewest of its machines whose hours cover the request (None: they do not)."""
    newest: datetime | None
    qualified: tuple[str, ...]
    """Its machines that qualified (process, shared, and kept by ``suits``), most trusted
    first; with ``one_machine`` the one offered is first."""


def offers(
    factories: Sequence[FactoryCapacity],
    process: Process,
    hours: float,
    suits: Callable[[FactoryCapacity, MachineCapacity], bool] = lambda _f, _m: True,
    *,
    one_machine: bool = False,
) -> list[Offer]:
    """The factories whose shared machines of ``process`` (those that ``suits`` keeps) can
    take some of ``hours``, ranked (see the module docstring). With ``one_machine`` a
    factory offers one machine, never a sum: the work cannot be split between machines."""
    seconds = hours * 3600.0
    found = []
    for capacity in factories:
        machines = sorted(
            (
                m
                for m in capacity.by_process(shared_only=True).get(process, [])
                if suits(capacity, m)
            ),
            key=_trusted,
            reverse=True,
        )
        if not machines:
            continue
        if one_machine:  # the most trusted machine that covers alone, else the most trusted
            first = next((m for m in machines if _needed([m], seconds) is not None), machines[0])
            machines = [first, *(m for m in machines if m is not first)]
        offered = machines[:1] if one_machine else machines
        total = summed(offered)
        needed = _needed(offered, seconds)
        found.append(
            Offer(
                factory=capacity.factory,
                available_s=total.figures.available_s,
                confidence=total.confidence,
                machines=len(offered),
                covers=needed is not None,
                largest_s=offered[0].figures.available_s,
                machines_needed=needed,
                newest=capacity.newest,
                qualified=tuple(m.machine for m in machines),
            )
        )
    return sorted(
        found,
        key=lambda o: (
            not o.covers,
            o.machines_needed or 0,
            -o.available_s * o.confidence,
            o.factory,
        ),
    )


def _needed(machines: Sequence[MachineCapacity], seconds: float) -> int | None:
    """How many of ``machines`` (most trusted first), counting only hours with some
    confidence, it takes to cover ``seconds``; None if all of them do not."""
    gathered = 0.0
    for count, machine in enumerate((m for m in machines if m.confidence > 0), start=1):
        gathered += machine.figures.available_s
        if gathered >= seconds:
            return count
    return None


def _trusted(machine: MachineCapacity) -> tuple[float, str]:
    """A machine's available seconds times its confidence (its id breaks ties)."""
    return machine.figures.available_s * machine.confidence, machine.machine
