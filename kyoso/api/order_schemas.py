"""The bodies of what a platform needs to place an order: capacity in time, holds and
orders, and the factory's audit log (they make part of the OpenAPI document)."""

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, Field, RootModel, model_validator

from kyoso.capacity.forecast import Reason
from kyoso.capacity.phased import BucketKind
from kyoso.contract import Id, Process

from .holds import Action, HoldStatus
from .schemas import (
    AsOf,
    Body,
    DataAge,
    FactoryId,
    FiguresOut,
    Hours,
    MachineId,
    ProcessName,
)

__all__ = [
    "AuditEntryOut",
    "AuditList",
    "BlockOut",
    "BucketOut",
    "FactoryPhasedOut",
    "HoldIn",
    "HoldList",
    "HoldOut",
    "MachineOfferOut",
    "MachinePhasedOut",
    "ProcessPhasedOut",
    "RegionFactoryPhasedOut",
    "RegionPhasedOut",
    "RegionProcessPhasedOut",
]

Bucket = Annotated[
    BucketKind,
    Field(description="What each bucket is: a local day, a shift, a local hour.", examples=["day"]),
]
Zone = Annotated[
    str, Field(description="The IANA time zone of the buckets.", examples=["Asia/Tokyo"])
]
WindowStart = Annotated[
    datetime, Field(description="The window's start (UTC).", examples=["2026-03-02T15:00:00Z"])
]
WindowEnd = Annotated[
    datetime, Field(description="The window's end (UTC).", examples=["2026-03-09T15:00:00Z"])
]


class BucketOut(FiguresOut):
    """Capacity within one bucket of the window, in machine-hours (only from now on)."""

    start: datetime = Field(description="Start (UTC).", examples=["2026-03-02T15:00:00Z"])
    end: datetime = Field(description="End (UTC).", examples=["2026-03-03T15:00:00Z"])
    label: str = Field(
        description="The local date, the shift's name and local start date, or the local hour.",
        examples=["2026-03-03"],
    )


class BlockOut(Body):
    """A free block: uninterrupted planned time with nothing booked or held in it."""

    start: datetime = Field(description="Start (UTC).", examples=["2026-03-03T23:00:00Z"])
    end: datetime = Field(description="End (UTC).", examples=["2026-03-04T03:00:00Z"])
    available: Hours = Field(description="What the forecast expects free within it.")


class _Window(FiguresOut):
    buckets: list[BucketOut] = Field(description="The same figures per bucket, in time order.")


class MachinePhasedOut(_Window):
    """One machine over the window."""

    machine: MachineId
    processes: list[Process] = Field(
        description="The processes it offers.", examples=[["cnc_milling_3axis"]]
    )
    shared: bool = Field(description="Its capacity is shared with the region.", examples=[True])
    confidence: float = Field(
        ge=0, le=1, description="As in its capacity; 0 when withdrawn.", examples=[0.86]
    )
    reasons: list[Reason] = Field(
        description="How it was derived and why it is withdrawn, as in its capacity.",
        examples=[["forecast:hour_of_week", "held"]],
    )
    data_age_s: DataAge


class MachineOfferOut(Body):
    """When one machine could take a job: what a hold on it needs to know."""

    machine: MachineId
    processes: list[Process] = Field(
        description="The processes it offers.", examples=[["cnc_milling_3axis"]]
    )
    longest_free_block: BlockOut | None = Field(
        description="Its longest free block in the window; null: none."
    )
    earliest_start: BlockOut | None = Field(
        description="The first free block offering `hours` available hours: where a job of "
        "that length could run without a break; null: none, or `hours` not asked."
    )
    earliest_finish: datetime | None = Field(
        description="When `hours` available hours have gone by, the work split over the "
        "calendar's shifts; null: not within the window, or `hours` not asked.",
        examples=["2026-03-04T06:30:00Z"],
    )


class ProcessPhasedOut(_Window):
    """A factory's machines offering one process, summed."""

    process: ProcessName
    machines: int = Field(description="Its machines offering the process.", examples=[3])


class FactoryPhasedOut(Body):
    """A factory's capacity over ``[start, end)``, bucket by bucket."""

    factory: FactoryId
    as_of: AsOf
    start: WindowStart
    end: WindowEnd
    bucket: Bucket
    timezone: Zone
    offline: bool = Field(description="Its capacity is withdrawn.", examples=[False])
    hours: float | None = Field(
        description="The job length asked for (earliest start and finish).", examples=[6.0]
    )
    by_process: list[ProcessPhasedOut] = Field(description="Per process offered.")
    machines: list[MachinePhasedOut] | None = Field(
        description="Per machine, for the factory's own key; null for a platform key, which "
        "sees no machine's figures."
    )
    offers: list[MachineOfferOut] = Field(
        description="When each machine could take a job (the shared ones for a platform key)."
    )


class RegionProcessPhasedOut(_Window):
    """One process across the region's shared machines."""

    process: ProcessName
    factories: int = Field(description="Factories offering it.", examples=[4])
    offline_factories: int = Field(description="Of them, offline.", examples=[0])


class RegionFactoryPhasedOut(Body):
    """One factory in the regional answer (its shared machines)."""

    factory: FactoryId
    offline: bool = Field(description="Its capacity is withdrawn.", examples=[False])
    machines: int = Field(description="Its shared machines.", examples=[5])
    by_process: list[ProcessPhasedOut] = Field(description="Per process it shares.")


class RegionPhasedOut(Body):
    """The region's shared capacity over ``[start, end)``, bucket by bucket."""

    as_of: AsOf
    start: WindowStart
    end: WindowEnd
    bucket: Bucket
    timezone: Zone
    by_process: list[RegionProcessPhasedOut] = Field(description="Per process.")
    factories: list[RegionFactoryPhasedOut] = Field(description="Per factory.")


class HoldIn(Body):
    """Machine time to reserve for an order: on one machine, or on whichever machine of
    the factory offering the process has the most room in the window."""

    factory: Id = Field(description="The factory.", examples=["okada-machining"])
    machine: Id | None = Field(
        default=None, description="The machine; null: give `process`.", examples=["cnc-01"]
    )
    process: Process | None = Field(
        default=None,
        description="The process; the machine is chosen (required without `machine`).",
        examples=["cnc_milling_3axis"],
    )
    start: AwareDatetime = Field(
        description="Window start (RFC 3339, with an offset).",
        examples=["2026-03-03T08:00:00+09:00"],
    )
    end: AwareDatetime = Field(
        description="Window end, after start.", examples=["2026-03-05T17:00:00+09:00"]
    )
    hours: float = Field(
        gt=0, le=10_000, description="Machine-hours of work within the window.", examples=[6.5]
    )
    order_ref: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$",
        description="The platform's reference of the order (printable ASCII).",
        examples=["PO-2026-0412"],
    )
    expires_in_s: int = Field(
        default=86_400,
        ge=60,
        le=14 * 86_400,
        description="Seconds until an unconfirmed hold expires (1 minute to 14 days).",
        examples=[86_400],
    )

    @model_validator(mode="after")
    def _what(self) -> Self:
        if self.machine is None and self.process is None:
            raise ValueError("give the machine, or the process for the factory to choose one")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class HoldOut(Body):
    """A hold, or, confirmed, an order."""

    id: str = Field(description="The hold's id.", examples=["hld_3f9a0c2d4b6e8a10"])
    factory: FactoryId
    machine: MachineId
    process: Process | None = Field(
        description="The process asked for, if the machine was chosen by it.",
        examples=["cnc_milling_3axis"],
    )
    start: datetime = Field(description="Window start (UTC).", examples=["2026-03-02T23:00:00Z"])
    end: datetime = Field(description="Window end (UTC).", examples=["2026-03-05T08:00:00Z"])
    hours: float = Field(description="Machine-hours held.", examples=[6.5])
    order_ref: str = Field(description="The platform's reference.", examples=["PO-2026-0412"])
    status: HoldStatus = Field(
        description="held (reserved), confirmed (an order), released, expired.",
        examples=["held"],
    )
    expires_at: datetime = Field(
        description="When it expires unless confirmed.", examples=["2026-03-03T09:15:00Z"]
    )
    created_at: datetime = Field(description="Placed at.", examples=["2026-03-02T09:15:00Z"])
    updated_at: datetime = Field(description="Last changed at.", examples=["2026-03-02T09:15:00Z"])


class HoldList(RootModel[list[HoldOut]]):
    """Holds, newest first."""


class AuditEntryOut(Body):
    """One change to a factory's bookings, holds or orders."""

    seq: int = Field(description="Its place in the log: ask for `after` it.", examples=[42])
    at: datetime = Field(description="When (UTC).", examples=["2026-03-02T09:15:00Z"])
    hold: str | None = Field(
        description="The hold changed; null: the bookings.", examples=["hld_3f9a0c2d4b6e8a10"]
    )
    action: Action = Field(description="What happened.", examples=["created"])
    actor: str = Field(
        description="The key id that did it; `system` for an expiry.", examples=["3f9a0c2d4b6e"]
    )
    detail: dict[str, Any] = Field(
        description="What changed.", examples=[{"hours": 6.5, "order_ref": "PO-2026-0412"}]
    )


class AuditList(RootModel[list[AuditEntryOut]]):
    """Audit entries, oldest first."""
