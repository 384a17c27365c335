"""The bodies of a factory's pictures: each machine's states through one local day, and
utilization shift by shift (kyoso/api/routes/timeline.py)."""

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import Field

from .schemas import AsOf, Body, FactoryId, IntervalOut, MachineId

__all__ = [
    "MachineTimelineOut",
    "RunOut",
    "ShiftReport",
    "ShiftUtilizationOut",
    "TimelineOut",
    "TimelineState",
]

TimelineState = Literal["running", "setup", "down", "idle", "planned_stop", "unknown", "no_data"]
"""A machine state (kyoso.contract.MachineState), or ``no_data``: no sample covers the time."""

Timezone = Annotated[
    str, Field(description="The factory's IANA time zone.", examples=["Asia/Tokyo"])
]


class RunOut(Body):
    """A stretch of time one machine spent in one state."""

    state: TimelineState = Field(
        description="The machine's state; no_data: no sample covers the stretch (never idle).",
        examples=["running"],
    )
    start: datetime = Field(description="When it began (UTC).", examples=["2026-12-05T23:02:10Z"])
    end: datetime = Field(description="When it ended (UTC).", examples=["2026-12-06T01:40:00Z"])


class MachineTimelineOut(Body):
    """One machine through the day: its states end to end, and its planned busy time."""

    machine: MachineId
    name: str = Field(description="Display name.", examples=["Mazak Integrex i-200"])
    runs: list[RunOut] = Field(
        description="Its states from the day's start to its end (or as_of, today), in order, "
        "without gaps or overlaps."
    )
    planned: list[IntervalOut] = Field(
        description="Planned busy intervals of its calendar that day, in order."
    )


class TimelineOut(Body):
    """A factory's machines through one local day (kyoso/api/routes/timeline.py)."""

    factory: FactoryId
    day: date = Field(
        description="The local day, in the factory's time zone.", examples=["2026-12-06"]
    )
    timezone: Timezone
    start: datetime = Field(
        description="The day's local midnight (UTC).", examples=["2026-12-05T15:00:00Z"]
    )
    end: datetime = Field(
        description="The next local midnight (UTC).", examples=["2026-12-06T15:00:00Z"]
    )
    as_of: AsOf
    machines: list[MachineTimelineOut] = Field(
        description="Every described machine, in the order of the machine listing."
    )


class ShiftUtilizationOut(Body):
    """One shift of one local day, over the machines that work it."""

    day: date = Field(description="The local day the shift starts on.", examples=["2026-11-30"])
    shift: str = Field(description="The shift's name in the calendars.", examples=["early"])
    start: datetime = Field(description="When it began (UTC).", examples=["2026-11-29T21:00:00Z"])
    end: datetime = Field(
        description="When it ends by the calendars (UTC), breaks included.",
        examples=["2026-11-30T05:30:00Z"],
    )
    ongoing: bool = Field(
        description="It has not ended at as_of: its figures run up to as_of.", examples=[False]
    )
    machines: int = Field(ge=0, description="Machines whose calendar has it.", examples=[3])
    planned_s: float = Field(
        ge=0,
        description="Planned busy time (PBT) of those machines in it, in seconds.",
        examples=[86400.0],
    )
    running_s: float = Field(
        ge=0, description="Actual production time (APT, running), in seconds.", examples=[60000.0]
    )
    no_data_s: float = Field(
        ge=0, description="Time of it covered by no sample, in seconds.", examples=[0.0]
    )
    availability: float | None = Field(
        ge=0,
        description="The shift's utilization as the overview page draws it: running_s / "
        "planned_s, ISO 22400-2 availability (APT / PBT) summed over the machines; may "
        "exceed 1 with overtime; null: no planned time, or no sample of the shift from any "
        "of its machines (no_data_s covers it all): nothing is known of it.",
        examples=[0.69],
    )


class ShiftReport(Body):
    """Utilization shift by shift over a factory's last days."""

    factory: FactoryId
    days: int = Field(description="Local days covered, today included.", examples=[7])
    timezone: Timezone
    as_of: AsOf
    shifts: list[ShiftUtilizationOut] = Field(
        description="Every shift that has started in those days, oldest first."
    )
