"""The API's response and request bodies (they make its OpenAPI document)."""

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from kyoso.contract import Capability, MachineState, Process, ShiftCalendar

Hours = Annotated[float, Field(ge=0, description="Machine-hours.")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(_Body):
    """An error: what was wrong."""

    detail: str = Field(examples=["window longer than 92 days"])


class GatewayOut(_Body):
    gateway: str
    status: str = Field(description="online or offline (the last status received).")
    reason: str
    since: datetime = Field(
        description="Online: when it connected. Offline: when it was last heard (its last "
        "sample or status received), not its last will's connect time."
    )
    gap_samples: int = Field(
        description="Its samples that no ingest worker has taken (lost, or not yet replayed "
        "from its outbox), as the ingest last reported them; 0: none reported."
    )
    gap_oldest_s: float | None = Field(
        description="How long the oldest of those holes has been open, as the ingest saw it, "
        "measured when this answer is sent; null: no gap."
    )


class FactoryOut(_Body):
    """A factory at a glance."""

    factory: str = Field(examples=["okada-machining"])
    machines: int
    gateways_online: int
    gateways_offline: int
    offline: bool = Field(description="Its capacity is withdrawn (reason offline).")
    data_age_s: float | None = Field(
        description="Seconds from the end of its newest sample to this response; null: none."
    )
    as_of: datetime = Field(description="The moment of the store this answer tells of.")


class ShiftOut(_Body):
    """A shift of the machine's calendar, in progress (breaks included)."""

    name: str = Field(examples=["early"])
    start: datetime = Field(description="When it began (UTC; local times are in the calendar).")
    end: datetime = Field(description="When it ends (UTC).")


class MachineOut(_Body):
    """A machine's description and live state (its factory's own view)."""

    machine: str = Field(examples=["cnc-01"])
    name: str
    gateway: str
    capabilities: list[Capability]
    ideal_cycle_time_s: float | None
    calendar: ShiftCalendar
    shift: ShiftOut | None = Field(
        description="The calendar's shift in progress at as_of; null: off shift, a holiday "
        "or planned maintenance."
    )
    share_capacity: bool
    share_kpis: bool
    state: MachineState | None = Field(description="State at the latest sample; null: none.")
    alarm: int | None
    data_age_s: float | None = Field(
        description="Seconds from the end of its latest sample to this response; null: none."
    )
    stale: bool = Field(description="No sample within the staleness threshold.")
    as_of: datetime


class TimeElementsOut(_Body):
    """ISO 22400-2 time elements in hours (PBT from the calendar, the rest measured)."""

    pbt: Hours = Field(description="Planned busy time.")
    apt: Hours = Field(description="Actual production time (running).")
    aust: Hours = Field(description="Actual unit setup time (setup).")
    adet: Hours = Field(description="Actual unit delay time (down).")
    adot: Hours = Field(description="Actual unit down time (idle: sellable).")
    pdot: Hours = Field(description="Planned down time (planned_stop).")
    aubt: Hours = Field(description="Actual unit busy time: APT + AUST + ADET.")
    unknown: Hours = Field(description="Gateway up, machine unreadable: kept apart.")
    no_data: Hours = Field(description="No sample at all: kept apart.")


class KpisOut(_Body):
    """ISO 22400-2 KPIs; null where the denominator is zero."""

    availability: float | None = Field(description="APT / PBT.")
    effectiveness: float | None = Field(description="PRI x PQ / APT.")
    quality_ratio: float | None = Field(description="GQ / PQ.")
    oee: float | None = Field(description="Availability x effectiveness x quality ratio.")
    utilization_efficiency: float | None = Field(description="APT / AUBT.")


class PerformanceOut(_Body):
    time: TimeElementsOut
    good: float = Field(ge=0, description="Good quantity (GQ), prorated to the window.")
    reject: float = Field(ge=0, description="Rejected quantity.")
    kpis: KpisOut


class MachineKpisOut(PerformanceOut):
    machine: str


class KpiReport(_Body):
    """KPIs of a factory's machines and of the factory over ``[start, end)``."""

    factory: str
    start: datetime
    end: datetime
    machines: list[MachineKpisOut]
    total: PerformanceOut


class CapacityOut(_Body):
    """Capacity over the horizon in machine-hours (ISA-95 capability types)."""

    total: Hours = Field(description="Planned busy time in the horizon (calendar).")
    committed: Hours = Field(description="Booked load, or the expected load.")
    unattainable: Hours = Field(description="Down now until expected repair, expected losses.")
    available: Hours = Field(description="total - committed - unattainable, never negative.")
    confidence: float = Field(
        ge=0,
        le=1,
        description="1 - the expected error of available, as a share of it, for this much "
        "history (measured by the capacity backtest); 0 when withdrawn.",
    )
    history_coverage: float = Field(
        ge=0, le=1, description="Observed over planned time of the lookback (28 days)."
    )
    reasons: list[str] = Field(
        description="How it was derived: forecast:<method>, booked, down, minor_stop, "
        "offline, unreadable, insufficient_history, no_planned_time; history:backfilling "
        "while history is still being written.",
        examples=[["forecast:hour_of_week"]],
    )


class MachineCapacityOut(CapacityOut):
    machine: str
    processes: list[Process]
    shared: bool
    data_age_s: float | None = Field(
        description="Seconds from the end of its latest sample to this response; null: none."
    )


class ProcessCapacityOut(CapacityOut):
    process: Process
    machines: int


class FactoryCapacityOut(_Body):
    """A factory's capacity over ``[as_of, as_of + horizon_h)``."""

    factory: str
    as_of: datetime
    horizon_h: float
    offline: bool
    data_age_s: float | None = Field(
        description="Seconds from the end of its newest sample to this response; null: none."
    )
    by_process: list[ProcessCapacityOut]
    machines: list[MachineCapacityOut] | None = Field(
        description="Per machine: only in the factory's own (and the admin's) view."
    )


class RegionProcessOut(CapacityOut):
    process: Process
    factories: int
    offline_factories: int


class RegionCapacityOut(_Body):
    """Capacity per capability across the region (shared machines only)."""

    as_of: datetime
    horizon_h: float
    by_process: list[RegionProcessOut]
    factories: list[FactoryCapacityOut]


class Candidate(_Body):
    """A factory that can take (part of) the work."""

    factory: str
    available: Hours
    confidence: float
    machines: int = Field(description="Shared machines with the capability.")
    covers: bool = Field(description="Its available hours reach the hours asked for.")
    largest_machine: Hours = Field(
        description="Available hours of its machine with the most trusted hours."
    )
    machines_needed: int | None = Field(
        description="The fewest of its machines whose hours cover the request; null: none."
    )
    data_age_s: float | None = Field(
        description="Seconds from the end of its newest sample to this response; null: none."
    )


class SearchOut(_Body):
    """Who can take ``hours`` of ``process`` within the next ``within_days``, ranked:
    those that cover it first, with the fewest machines first, then by available hours
    weighted by confidence."""

    process: Process
    hours: float
    within_days: float
    as_of: datetime
    candidates: list[Candidate]


class CoverOut(SearchOut):
    """Who can take the work a machine will miss (``hours``: until its expected repair)."""

    factory: str
    machine: str


class BookingIn(_Body):
    start: AwareDatetime
    end: AwareDatetime
    hours: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Hours of work within [start, end); null: all its planned time.",
    )


class BookingsIn(_Body):
    bookings: list[BookingIn] = Field(max_length=500)


class BookingsOut(_Body):
    factory: str
    machine: str
    declared: bool = Field(description="False: committed load comes from the forecast.")
    bookings: list[BookingIn]


class IntervalOut(_Body):
    start: datetime
    end: datetime


class PlannedOut(_Body):
    """Planned busy time of a machine's calendar within ``[start, end)``."""

    machine: str
    start: datetime
    end: datetime
    pbt: Hours
    intervals: list[IntervalOut] = Field(description="Planned busy intervals, in order.")


__all__ = [
    "BookingIn",
    "BookingsIn",
    "BookingsOut",
    "Candidate",
    "CapacityOut",
    "CoverOut",
    "FactoryCapacityOut",
    "FactoryOut",
    "GatewayOut",
    "IntervalOut",
    "KpiReport",
    "KpisOut",
    "MachineCapacityOut",
    "MachineKpisOut",
    "MachineOut",
    "PerformanceOut",
    "PlannedOut",
    "Problem",
    "ProcessCapacityOut",
    "RegionCapacityOut",
    "RegionProcessOut",
    "SearchOut",
    "TimeElementsOut",
]
