"""ISO 22400-2 time elements and KPIs of a machine (or a factory) over a past window.

Definitions (ISO 22400-2:2014, *Key performance indicators for manufacturing operations
management*, clause 5 time elements, clause 6 KPIs), with where each figure comes from:

======  ===============================  =================================================
figure  ISO 22400-2 name                 Kyoso source
======  ===============================  =================================================
PBT     planned busy time                the machine's shift calendar over the window:
                                         weekly shifts minus breaks, holidays and planned
                                         maintenance (:mod:`kyoso.contract.calendar`)
APT     actual production time           seconds in state ``running``
AUST    actual unit setup time           seconds in state ``setup``
ADET    actual unit delay time           seconds in state ``down`` (breakdown, alarm,
                                         minor stop)
ADOT    actual unit down time            seconds in state ``idle`` (available, no order:
                                         the sellable capacity)
PDOT    planned down time                seconds in state ``planned_stop``
AUBT    actual unit busy time            APT + AUST + ADET
—       (no ISO element)                 ``unknown`` seconds (gateway up, machine not
                                         readable) and ``no_data`` seconds (no sample at
                                         all), kept apart and never counted as idle
PQ      produced quantity                good + reject part counts (prorated deltas)
GQ      good quantity                    the ``good`` counter
PRI     planned run time per item        the machine's ``ideal_cycle_time_s``
======  ===============================  =================================================

KPIs: **availability** = APT / PBT; **effectiveness** = PRI x PQ / APT; **quality ratio** =
GQ / PQ; **OEE index** = availability x effectiveness x quality ratio; **utilization
efficiency** = APT / AUBT. A KPI whose denominator is zero (no planned time, nothing
produced, no PRI) is ``None``, never 0 or 1. Summing :class:`Performance` over machines
gives the factory's figures: each KPI is then the ratio of the sums (a machine without a
PRI adds nothing to effectiveness, neither numerator nor denominator).

A machine may run outside its planned busy time (overtime), so availability can exceed 1;
it is reported as measured, not clipped.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from kyoso.contract import COUNTER_GOOD, COUNTER_REJECT, MachineState

__all__ = ["Performance", "TimeElements"]


@dataclass(frozen=True, slots=True)
class TimeElements:
    """The ISO 22400-2 time elements of a window, in seconds."""

    pbt: float
    apt: float
    aust: float
    adet: float
    adot: float
    pdot: float
    unknown: float
    no_data: float

    @property
    def aubt(self) -> float:
        """Actual unit busy time: APT + AUST + ADET."""
        return self.apt + self.aust + self.adet

    @classmethod
    def measured(cls, pbt: float, seconds: Mapping[MachineState, float], no_data: float) -> Self:
        """The elements of a window: ``pbt`` from the calendar, the rest from the
        state seconds and the time without data."""
        return cls(
            pbt=pbt,
            apt=seconds.get(MachineState.RUNNING, 0.0),
            aust=seconds.get(MachineState.SETUP, 0.0),
            adet=seconds.get(MachineState.DOWN, 0.0),
            adot=seconds.get(MachineState.IDLE, 0.0),
            pdot=seconds.get(MachineState.PLANNED_STOP, 0.0),
            unknown=seconds.get(MachineState.UNKNOWN, 0.0),
            no_data=no_data,
        )

    def __add__(self, other: "TimeElements") -> "TimeElements":
        return TimeElements(
            self.pbt + other.pbt,
            self.apt + other.apt,
            self.aust + other.aust,
            self.adet + other.adet,
            self.adot + other.adot,
            self.pdot + other.pdot,
            self.unknown + other.unknown,
            self.no_data + other.no_data,
        )


_NONE = TimeElements(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Performance:
    """Time elements and quantities of a window, and the KPIs derived from them."""

    elements: TimeElements
    good: float
    reject: float
    ideal_s: float
    """PRI x PQ summed over the machines that have a PRI."""
    rated_apt: float
    """APT of the machines that have a PRI (effectiveness' denominator)."""

    @classmethod
    def of_machine(
        cls,
        elements: TimeElements,
        counters: Mapping[str, float],
        ideal_cycle_time_s: float | None,
    ) -> Self:
        """One machine's performance from its elements and prorated counter deltas."""
        good = counters.get(COUNTER_GOOD, 0.0)
        reject = counters.get(COUNTER_REJECT, 0.0)
        if ideal_cycle_time_s is None:
            return cls(elements, good, reject, 0.0, 0.0)
        return cls(elements, good, reject, ideal_cycle_time_s * (good + reject), elements.apt)

    @classmethod
    def empty(cls) -> Self:
        """Nothing: the start of a sum."""
        return cls(_NONE, 0.0, 0.0, 0.0, 0.0)

    def __add__(self, other: "Performance") -> "Performance":
        return Performance(
            self.elements + other.elements,
            self.good + other.good,
            self.reject + other.reject,
            self.ideal_s + other.ideal_s,
            self.rated_apt + other.rated_apt,
        )

    @property
    def produced(self) -> float:
        """PQ: good and rejected parts."""
        return self.good + self.reject

    @property
    def availability(self) -> float | None:
        """APT / PBT."""
        return _ratio(self.elements.apt, self.elements.pbt)

    @property
    def effectiveness(self) -> float | None:
        """PRI x PQ / APT, over the machines that have a PRI."""
        return _ratio(self.ideal_s, self.rated_apt)

    @property
    def quality_ratio(self) -> float | None:
        """GQ / PQ."""
        return _ratio(self.good, self.produced)

    @property
    def oee(self) -> float | None:
        """Availability x effectiveness x quality ratio."""
        a, e, q = self.availability, self.effectiveness, self.quality_ratio
        return None if a is None or e is None or q is None else a * e * q

    @property
    def utilization_efficiency(self) -> float | None:
        """APT / AUBT."""
        return _ratio(self.elements.apt, self.elements.aubt)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None
