"""Machine states and their meaning as ISO 22400-2 time elements."""

from enum import StrEnum


class MachineState(StrEnum):
    """What a machine is doing, as the edge derives it.

    Each state maps to one ISO 22400-2 time element (see :data:`ISO_22400_ELEMENT`), so
    that every KPI is a ratio of summed state durations.
    """

    RUNNING = "running"
    """Producing: actual production time (APT)."""
    SETUP = "setup"
    """Changeover or setup for an order: actual unit setup time (AUST)."""
    DOWN = "down"
    """Breakdown, alarm or minor stop: actual unit delay time (ADET)."""
    IDLE = "idle"
    """Available but without an order: actual unit down time (ADOT), the sellable capacity."""
    PLANNED_STOP = "planned_stop"
    """Maintenance, break or no shift: planned down time (PDOT), outside planned busy time."""
    UNKNOWN = "unknown"
    """No data: kept apart and never counted as idle."""


ISO_22400_ELEMENT: dict[MachineState, str | None] = {
    MachineState.RUNNING: "APT",
    MachineState.SETUP: "AUST",
    MachineState.DOWN: "ADET",
    MachineState.IDLE: "ADOT",
    MachineState.PLANNED_STOP: "PDOT",
    MachineState.UNKNOWN: None,
}
"""The ISO 22400-2 time element each state's duration counts towards (None: no data)."""
