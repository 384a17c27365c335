"""What the gateway reads a machine through: one small interface for every protocol.

A source answers ``await source.poll()`` with the fields it read and, for every other
configured field, why it is missing. It never raises for a device fault: a dead, slow or
confused device is missing values with a reason, so the agent treats every protocol alike
and a new one (OPC UA, MTConnect, SLMP) only has to implement :class:`Source`.
Implementations: :class:`~kyoso.gateway.modbus.ModbusSource` and
:class:`~kyoso.gateway.sensors.SensorSource` (MQTT sensors).
"""

from collections.abc import Mapping
from typing import Protocol

from .modbus_decode import Value

__all__ = ["Reading", "Source"]


class Reading(Protocol):
    """One poll: every configured field is in exactly one of ``values`` and ``missing``."""

    @property
    def values(self) -> Mapping[str, Value]: ...

    @property
    def missing(self) -> Mapping[str, object]:
        """Field name -> why it could not be read (printable)."""
        ...


class Source(Protocol):
    """A machine's source of values; see the module docstring."""

    async def poll(self) -> Reading:
        """Read every configured field once; never raises for a device fault."""
        ...
