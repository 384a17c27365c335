"""What the matching platform is shown of one factory beyond capacity: the public description
of its shared machines, and KPIs summed over the machines whose KPIs it shares. Each
operation that answers the platform differently documents both answers, the factory's own
view first (kyoso/api/routes/factories.py)."""

from datetime import datetime

from pydantic import Field, RootModel

from kyoso.contract import Capability

from .schemas import (
    Body,
    FactoryId,
    KpiReport,
    MachineId,
    MachineList,
    PerformanceOut,
    ProcessName,
)

__all__ = [
    "KpiAnswer",
    "MachineListing",
    "ProcessKpisOut",
    "PublicMachineList",
    "PublicMachineOut",
    "SharedKpiReport",
]


class PublicMachineOut(Body):
    """A machine whose capacity its factory shares, as the platform sees it: what it can do,
    not how it is doing (no live state, calendar details, gateway or cycle time)."""

    machine: MachineId
    name: str = Field(description="Display name.", examples=["DMU 50 five-axis machining centre"])
    capabilities: list[Capability] = Field(
        description="The processes it offers, with the attributes its factory states."
    )
    timezone: str = Field(
        description="Its calendar's IANA time zone (shifts are local times there).",
        examples=["Asia/Tokyo"],
    )


class PublicMachineList(RootModel[list[PublicMachineOut]]):
    """A factory's machines whose capacity is shared, as the platform sees them."""


class MachineListing(RootModel[MachineList | PublicMachineList]):
    """A factory's machines: every described one with its live state for the factory's own
    key and admin (``MachineList``); for the platform, the public description of those whose
    capacity is shared (``PublicMachineList``)."""


class ProcessKpisOut(PerformanceOut):
    """KPIs summed over the consenting machines that offer one process."""

    process: ProcessName
    machines: int = Field(description="The machines summed.", examples=[2])


class SharedKpiReport(Body):
    """A factory's KPIs over ``[start, end)`` as the platform sees them: summed over the
    machines whose KPIs the factory shares (``sharing.kpis``), per process and in total,
    never per machine. A factory sharing none answers with no process and a zero total."""

    factory: FactoryId
    start: datetime = Field(description="Window start.", examples=["2026-03-01T00:00:00Z"])
    end: datetime = Field(description="Window end.", examples=["2026-03-02T00:00:00Z"])
    machines: int = Field(
        description="Machines summed in the total: those sharing their KPIs, with samples in "
        "the window.",
        examples=[3],
    )
    by_process: list[ProcessKpisOut] = Field(
        description="Per process (a machine with two processes counts in both)."
    )
    total: PerformanceOut = Field(description="Those machines summed.")


class KpiAnswer(RootModel[KpiReport | SharedKpiReport]):
    """A factory's KPIs: per machine and in total for the factory's own key and admin
    (``KpiReport``); summed over consenting machines for the platform
    (``SharedKpiReport``)."""
