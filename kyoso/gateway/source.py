"""What the gateway reads a machine through: one small interface for every protocol.

A source answers ``await source.poll()`` with the fields it read and, for every other
configured field, why it is missing. It never raises for a device fault: a dead, slow or
confused device is missing values with a reason, so the agent treats every protocol alike
and a new one (OPC UA, MTConnect, SLMP) only has to implement :class:`Source`.
Implementations: :class:`~kyoso.gateway.modbus.ModbusSource`,
:class:`~kyoso.gateway.mtconnect.MtconnectSource` (an MTConnect agent),
:class:`~kyoso.gateway.opcua.OpcuaSource` (an OPC UA server),
:class:`~kyoso.gateway.slmp.SlmpSource` (a MELSEC PLC over SLMP) and
:class:`~kyoso.gateway.sensors.SensorSource` (MQTT sensors); the agent builds each by its
configured kind (kyoso/gateway/agent.py).
"""

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from .breaker import CircuitBreaker
from .modbus_decode import Value

__all__ = ["DeviceSource", "Missing", "Polled", "Reading", "Source"]


@dataclass(frozen=True, slots=True)
class Missing:
    """A field without a value, and why: a reason of the source's own (each protocol names
    its reasons in a StrEnum) and what more it knows."""

    reason: StrEnum
    detail: str = ""

    @property
    def key(self) -> str:
        """A short metric label: ``timeout``, ``circuit_open``..."""
        return self.reason.name.lower()

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


class Reading(Protocol):
    """One poll: every configured field is in exactly one of ``values`` and ``missing``."""

    @property
    def values(self) -> Mapping[str, Value]: ...

    @property
    def missing(self) -> Mapping[str, object]:
        """Field name -> why it could not be read (printable)."""
        ...


@dataclass(frozen=True, slots=True)
class Polled:
    """One poll of a source (a :class:`Reading`): every configured field is in exactly one of
    ``values`` and ``missing``."""

    values: Mapping[str, Value]
    missing: Mapping[str, Missing]


class Source(Protocol):
    """A machine's source of values; see the module docstring."""

    async def poll(self) -> Reading:
        """Read every configured field once; never raises for a device fault."""
        ...


class FailureCounts(Protocol):
    @property
    def errors(self) -> Counter[str]:
        """Failed requests and refused polls by :attr:`Missing.key`."""
        ...


@runtime_checkable
class DeviceSource(Source, Protocol):
    """A source that talks to a device of its own (every kind but MQTT sensors): its
    failures by reason and its circuit breaker, for the gateway's /metrics and /healthz."""

    @property
    def stats(self) -> FailureCounts: ...

    @property
    def breaker(self) -> CircuitBreaker: ...
