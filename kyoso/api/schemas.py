"""The API's response and request bodies (they make its OpenAPI document)."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from kyoso.capacity.forecast import Reason
from kyoso.contract import (
    Capability,
    GatewayReason,
    GatewayState,
    MachineState,
    Process,
    ShiftCalendar,
)

Hours = Annotated[float, Field(ge=0, description="Machine-hours.", examples=[12.5])]
Share = Annotated[float | None, Field(ge=0, description="A ratio.", examples=[0.82])]
FactoryId = Annotated[str, Field(description="The factory's id.", examples=["okada-machining"])]
MachineId = Annotated[str, Field(description="The machine's id.", examples=["cnc-01"])]
GatewayId = Annotated[str, Field(description="The gateway's id.", examples=["gw-01"])]
ProcessName = Annotated[Process, Field(description="The process.", examples=["cnc_turning"])]
AsOf = Annotated[
    datetime,
    Field(
        description="The moment of the store the figures tell of (UTC).",
        examples=["2026-03-02T09:15:00Z"],
    ),
]
DataAge = Annotated[
    float | None,
    Field(
        description="Seconds from the end of the newest sample to this response; null: none.",
        examples=[4.2],
    ),
]
HorizonH = Annotated[float, Field(description="The horizon in hours from as_of.", examples=[24.0])]
ProblemCode = Literal[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "conflict",
    "precondition_failed",
    "too_large",
    "unsupported_media_type",
    "invalid_request",
    "precondition_required",
    "too_many_requests",
    "internal_error",
    "unavailable",
    "error",
]
"""The ``code`` of a problem (kyoso/api/problems.py)."""


class Body(BaseModel):
    """What every body of the API is: no field it does not declare, never changed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldError(Body):
    """One refused part of a request."""

    loc: list[str] = Field(
        description="Where: the part (query, path, header, body) and the name within it.",
        examples=[["query", "horizon_h"]],
    )
    msg: str = Field(
        description="Why it was refused.", examples=["Input should be less than or equal to 744"]
    )
    type: str = Field(
        description="The kind of refusal, a stable word.", examples=["less_than_equal"]
    )


class Problem(Body):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(
        description="urn:kyoso:problem:<code>: what kind of problem.",
        examples=["urn:kyoso:problem:not_found"],
    )
    title: str = Field(
        description=(
            "The kind of problem in words, in the language Accept-Language prefers "
            "(Japanese or English: the HTTP status phrase)."
        ),
        examples=["Not Found"],
    )
    status: int = Field(description="The HTTP status code.", examples=[404])
    code: ProblemCode = Field(
        description="What went wrong, a stable word to branch on.", examples=["not_found"]
    )
    detail: str = Field(
        description="What happened this time, for a person.", examples=["no factory 'okada'"]
    )
    instance: str = Field(
        description="The path asked for.", examples=["/v1/factories/okada/capacity"]
    )
    errors: list[FieldError] | None = Field(
        default=None, description="The refused parts of the request (422 only)."
    )
    requested_h: float | None = Field(
        default=None,
        description="A hold refused for want of room (409): the hours it asked.",
        examples=[12.0],
    )
    available_h: float | None = Field(
        default=None,
        description="A hold refused for want of room (409): the most any machine asked "
        "for has available in its window.",
        examples=[7.5],
    )


class GatewayOut(Body):
    """A gateway's last status, and the samples of it no ingest worker has taken."""

    gateway: GatewayId
    status: GatewayState = Field(description="The last status received.", examples=["online"])
    reason: GatewayReason = Field(
        description="Why: connected (online), shutdown (it said goodbye) or connection_lost "
        "(its last will: it vanished).",
        examples=["connected"],
    )
    since: datetime = Field(
        description="Online: when it connected. Offline: when it was last heard (its last "
        "sample or status received), not its last will's connect time.",
        examples=["2026-03-02T06:00:04Z"],
    )
    gap_samples: int = Field(
        description="Its samples that no ingest worker has taken (lost, or not yet replayed "
        "from its outbox), as the ingest last reported them; 0: none reported.",
        examples=[0],
    )
    gap_oldest_s: float | None = Field(
        description="How long the oldest of those holes has been open, as the ingest saw it, "
        "measured when this answer is sent; null: no gap.",
        examples=[None],
    )


class FactoryOut(Body):
    """A factory at a glance."""

    factory: FactoryId
    machines: int = Field(description="Machines described.", examples=[12])
    gateways_online: int = Field(description="Gateways whose last status is online.", examples=[1])
    gateways_offline: int = Field(
        description="Gateways whose last status is offline.", examples=[0]
    )
    offline: bool = Field(
        description="Its capacity is withdrawn (reason offline).", examples=[False]
    )
    data_age_s: DataAge
    as_of: AsOf


class ShiftOut(Body):
    """A shift of the machine's calendar, in progress (breaks included)."""

    name: str = Field(description="The shift's name in the calendar.", examples=["early"])
    start: datetime = Field(
        description="When it began (UTC; local times are in the calendar).",
        examples=["2026-03-01T21:00:00Z"],
    )
    end: datetime = Field(description="When it ends (UTC).", examples=["2026-03-02T05:30:00Z"])


class MachineOut(Body):
    """A machine's description and live state (its factory's own view)."""

    machine: MachineId
    name: str = Field(description="Display name.", examples=["DMG Mori NHX 4000"])
    gateway: GatewayId
    capabilities: list[Capability] = Field(description="The processes it offers.")
    ideal_cycle_time_s: float | None = Field(
        description="Ideal cycle time of one part (for effectiveness); null: not stated.",
        examples=[42.0],
    )
    calendar: ShiftCalendar = Field(description="Its shifts, holidays and maintenance.")
    shift: ShiftOut | None = Field(
        description="The calendar's shift in progress at as_of; null: off shift, a holiday "
        "or planned maintenance."
    )
    share_capacity: bool = Field(
        description="The factory shares its capacity with the region.", examples=[True]
    )
    share_kpis: bool = Field(
        description="The factory shares its KPIs with the platform.", examples=[False]
    )
    state: MachineState | None = Field(
        description="State at the latest sample; null: none.", examples=["running"]
    )
    alarm: int | None = Field(
        description="The alarm code at the latest sample (0: none); null: not read.",
        examples=[0],
    )
    down_since: datetime | None = Field(
        description="Down now: when this stop began, by its samples (a stop longer than a "
        "day is said to begin a day before its latest sample); null: not down.",
        examples=[None],
    )
    data_age_s: DataAge
    stale: bool = Field(description="No sample within the staleness threshold.", examples=[False])
    as_of: AsOf


class TimeElementsOut(Body):
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


class KpisOut(Body):
    """ISO 22400-2 KPIs; null where the denominator is zero."""

    availability: Share = Field(description="APT / PBT.")
    effectiveness: Share = Field(description="PRI x PQ / APT.")
    quality_ratio: Share = Field(description="GQ / PQ.")
    oee: Share = Field(description="Availability x effectiveness x quality ratio.")
    utilization_efficiency: Share = Field(description="APT / AUBT.")


class PerformanceOut(Body):
    """Time elements, quantities and KPIs over a window."""

    time: TimeElementsOut = Field(description="The time elements.")
    good: float = Field(
        ge=0, description="Good quantity (GQ), prorated to the window.", examples=[1840.0]
    )
    reject: float = Field(ge=0, description="Rejected quantity.", examples=[12.0])
    kpis: KpisOut = Field(description="The KPIs of those.")


class MachineKpisOut(PerformanceOut):
    """One machine's performance over the window."""

    machine: MachineId


class KpiReport(Body):
    """KPIs of a factory's machines and of the factory over ``[start, end)``."""

    factory: FactoryId
    start: datetime = Field(description="Window start.", examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(description="Window end.", examples=["2026-03-02T00:00:00Z"])
    machines: list[MachineKpisOut] = Field(description="Per machine.")
    total: PerformanceOut = Field(description="The factory: its machines summed.")


class FiguresOut(Body):
    """Capacity in machine-hours (ISA-95 capability types), from now on."""

    total: Hours = Field(description="Planned busy time (calendar).")
    committed: Hours = Field(
        description="The expected load, or the booked load beyond it; holds and orders."
    )
    unattainable: Hours = Field(description="Down now until expected repair, expected losses.")
    available: Hours = Field(description="total - committed - unattainable, never negative.")


class CapacityOut(FiguresOut):
    """Capacity over the horizon in machine-hours (ISA-95 capability types)."""

    confidence: float = Field(
        ge=0,
        le=1,
        description="1 - the expected error of available, as a share of it, for this much "
        "history (measured by the capacity backtest); 0 when withdrawn.",
        examples=[0.86],
    )
    history_coverage: float = Field(
        ge=0,
        le=1,
        description="Observed over planned time of the lookback (28 days).",
        examples=[0.97],
    )
    reasons: list[Reason] = Field(
        description="How it was derived: forecast:<method>, booked, down (until the repair "
        "learnt), minor_stop, no_planned_time; why it is withdrawn: offline, unreadable, "
        "insufficient_history; history:backfilling while history is still being written.",
        examples=[["forecast:hour_of_week"]],
    )


class MachineCapacityOut(CapacityOut):
    """One machine's capacity."""

    machine: MachineId
    processes: list[Process] = Field(
        description="The processes it offers.", examples=[["cnc_milling_3axis"]]
    )
    shared: bool = Field(description="Its capacity is shared with the region.", examples=[True])
    data_age_s: DataAge


class ProcessCapacityOut(CapacityOut):
    """A factory's capacity for one process."""

    process: ProcessName
    machines: int = Field(description="Its machines offering the process.", examples=[3])


class FactoryCapacityOut(Body):
    """A factory's capacity over ``[as_of, as_of + horizon_h)``."""

    factory: FactoryId
    as_of: AsOf
    horizon_h: HorizonH
    offline: bool = Field(
        description="Its capacity is withdrawn: no gateway heard recently.", examples=[False]
    )
    data_age_s: DataAge
    by_process: list[ProcessCapacityOut] = Field(description="Per process offered.")
    machines: list[MachineCapacityOut] | None = Field(
        description="Per machine: only in the factory's own (and the admin's) view."
    )


class RegionProcessOut(CapacityOut):
    """The region's capacity for one process (shared machines only)."""

    process: ProcessName
    factories: int = Field(description="Factories offering it.", examples=[4])
    offline_factories: int = Field(
        description="Of those, factories whose capacity is withdrawn (offline).", examples=[0]
    )


class RegionCapacityOut(Body):
    """Capacity per capability across the region (shared machines only)."""

    as_of: AsOf
    horizon_h: HorizonH
    by_process: list[RegionProcessOut] = Field(description="Per process, summed.")
    factories: list[FactoryCapacityOut] = Field(description="Per factory.")


class Candidate(Body):
    """A factory that can take (part of) the work."""

    factory: FactoryId
    available: Hours = Field(description="Its available hours of the process in the window.")
    confidence: float = Field(
        ge=0, le=1, description="The confidence of those hours (see capacity).", examples=[0.86]
    )
    machines: int = Field(description="Shared machines with the capability.", examples=[2])
    covers: bool = Field(
        description="Its available hours reach the hours asked for.", examples=[True]
    )
    largest_machine: Hours = Field(
        description="Available hours of its machine with the most trusted hours."
    )
    machines_needed: int | None = Field(
        description="The fewest of its machines whose hours cover the request; null: none.",
        examples=[1],
    )
    data_age_s: DataAge
    qualified_machines: list[MachineId] = Field(
        description="Its shared machines of the process that meet every attribute asked, "
        "most trusted first (with one_machine, the one offered first).",
        examples=[["cnc-02", "cnc-03"]],
    )


class SearchOut(Body):
    """Who can take ``hours`` of ``process`` within the next ``within_days``, ranked:
    those that cover it first, with the fewest machines first, then by available hours
    weighted by confidence."""

    process: ProcessName
    hours: float = Field(description="Machine-hours asked for.", examples=[40.0])
    within_days: float = Field(description="Within the next days.", examples=[7.0])
    as_of: AsOf
    candidates: list[Candidate] = Field(description="Ranked, best first.")


class CoverOut(SearchOut):
    """Who can take the work a machine will miss (``hours``: until its expected repair)."""

    factory: FactoryId
    machine: MachineId


class BookingIn(Body):
    """Work booked on a machine."""

    start: AwareDatetime = Field(
        description="Start (RFC 3339, with an offset).", examples=["2026-03-03T08:00:00+09:00"]
    )
    end: AwareDatetime = Field(
        description="End, after start.", examples=["2026-03-03T17:00:00+09:00"]
    )
    hours: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Hours of work within [start, end); null: all its planned time.",
        examples=[6.5],
    )


class BookingsIn(Body):
    """The machine's bookings, all of them (they replace the ones declared before)."""

    bookings: list[BookingIn] = Field(max_length=500, description="At most 500.")


class BookingsOut(Body):
    """The bookings a factory declared for a machine."""

    factory: FactoryId
    machine: MachineId
    declared: bool = Field(
        description="False: committed load comes from the forecast.", examples=[True]
    )
    bookings: list[BookingIn] = Field(description="As declared.")


class IntervalOut(Body):
    """A planned busy interval."""

    start: datetime = Field(description="Its start (UTC).", examples=["2026-03-01T21:00:00Z"])
    end: datetime = Field(description="Its end (UTC).", examples=["2026-03-02T03:00:00Z"])


class PlannedOut(Body):
    """Planned busy time of a machine's calendar within ``[start, end)``."""

    machine: MachineId
    start: datetime = Field(description="Window start.", examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(description="Window end.", examples=["2026-03-08T00:00:00Z"])
    pbt: Hours = Field(description="Planned busy time in the window.")
    intervals: list[IntervalOut] = Field(description="Planned busy intervals, in order.")


class FactoryList(RootModel[list[FactoryOut]]):
    """The factories a key may see."""


class MachineList(RootModel[list[MachineOut]]):
    """A factory's described machines."""


class GatewayList(RootModel[list[GatewayOut]]):
    """A factory's gateways."""


class CoverList(RootModel[list[CoverOut]]):
    """Who can cover a machine's work, per capability it has."""


__all__ = [
    "Body",
    "BookingIn",
    "BookingsIn",
    "BookingsOut",
    "Candidate",
    "CapacityOut",
    "CoverList",
    "CoverOut",
    "FactoryCapacityOut",
    "FactoryList",
    "FactoryOut",
    "FieldError",
    "FiguresOut",
    "GatewayList",
    "GatewayOut",
    "IntervalOut",
    "KpiReport",
    "KpisOut",
    "MachineCapacityOut",
    "MachineKpisOut",
    "MachineList",
    "MachineOut",
    "PerformanceOut",
    "PlannedOut",
    "Problem",
    "ProblemCode",
    "ProcessCapacityOut",
    "RegionCapacityOut",
    "RegionProcessOut",
    "SearchOut",
    "TimeElementsOut",
]
