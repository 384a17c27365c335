"""One machine's capacity as the API serves it: the forecast, a stop under way, the evidence
that withdraws it, and how far it can be trusted, put together in one place (the API and
the backtest both call :func:`assess`, so what is measured is what is served)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kyoso.contract import MachineDescription

from .aggregate import MachineCapacity
from .confidence import confidence
from .evidence import withdrawal
from .forecast import Booking, CapacityFigures, LoadProfile, Slice, forecast, hourly
from .phased import withdrawn
from .repair import RepairRecord, stop
from .rules import CapacityRules

__all__ = ["Evidence", "assess", "assess_hourly"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What is known of a machine now."""

    stale: bool
    """Its latest sample is older than ``stale_after_s``, or it has none."""
    offline: bool = False
    """Its factory is offline (every gateway offline, or no machine fresh)."""
    unreadable: bool = False
    """Heard, but its state unknown through the last ``unreadable_after_s``."""
    down_for_s: float | None = None
    """Down now, for this long (None: not down)."""
    newest: datetime | None = None
    """When its latest sample ended."""
    repairs: RepairRecord = field(default_factory=RepairRecord)


def assess(
    description: MachineDescription,
    profile: LoadProfile,
    evidence: Evidence,
    *,
    as_of: datetime,
    horizon: timedelta,
    rules: CapacityRules,
    bookings: Sequence[Booking] | None = None,
    held: Sequence[Booking] = (),
    backfilling: bool = False,
) -> MachineCapacity:
    """The machine's capacity over ``[as_of, as_of + horizon)`` (docs/api.md)."""
    figures = forecast(
        description.calendar,
        profile,
        as_of,
        horizon,
        bookings=bookings,
        held=held,
        **_stopped(evidence, rules),
    )
    return _judged(description, profile, evidence, figures, rules, backfilling=backfilling)[0]


def assess_hourly(
    description: MachineDescription,
    profile: LoadProfile,
    evidence: Evidence,
    *,
    as_of: datetime,
    horizon: timedelta,
    rules: CapacityRules,
    bookings: Sequence[Booking] | None = None,
    held: Sequence[Booking] = (),
    backfilling: bool = False,
) -> tuple[MachineCapacity, list[Slice]]:
    """:func:`assess`, and the same figures hour by hour (kyoso/capacity/phased.py)."""
    figures, cut = hourly(
        description.calendar,
        profile,
        as_of,
        horizon,
        bookings=bookings,
        held=held,
        **_stopped(evidence, rules),
    )
    machine, withdraw = _judged(
        description, profile, evidence, figures, rules, backfilling=backfilling
    )
    return machine, withdrawn(cut) if withdraw else cut


def _stopped(evidence: Evidence, rules: CapacityRules) -> dict[str, Any]:
    """The forecast's options for a stop under way (none: not down, or not heard)."""
    stopped = stop(evidence.down_for_s, evidence.repairs, rules)
    kind, rest_s = stopped if stopped is not None else ("down", 0.0)
    return {
        "down_now": stopped is not None and not evidence.stale,
        "repair_estimate": timedelta(seconds=rest_s),
        "down_reason": kind,
    }


def _judged(
    description: MachineDescription,
    profile: LoadProfile,
    evidence: Evidence,
    figures: CapacityFigures,
    rules: CapacityRules,
    *,
    backfilling: bool,
) -> tuple[MachineCapacity, bool]:
    """The machine's capacity from its forecast and what is known of it now, and whether
    the evidence withdraws it."""
    reason = withdrawal(
        offline=evidence.stale or evidence.offline,
        unreadable=evidence.unreadable,
        observed_s=profile.observed_s,
        rules=rules,
    )
    if reason is not None:
        figures = figures.withdrawn(reason)
    if backfilling:
        figures = figures.noted("history:backfilling")
    machine = MachineCapacity(
        machine=description.machine,
        processes=tuple(dict.fromkeys(c.process for c in description.capabilities)),
        figures=figures,
        confidence=confidence(profile.observed_s) if reason is None else 0.0,
        history_coverage=profile.coverage,
        newest=evidence.newest,
        shared=description.sharing.capacity,
    )
    return machine, reason is not None
