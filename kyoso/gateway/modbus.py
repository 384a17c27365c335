"""Reading Modbus devices: one :class:`ModbusSource` per device, polled on demand.

What this promises, where common gateways fall short:

- **No value from a failed read.** An exception response, a timeout, a dropped connection
  or an undecodable answer makes the fields of that read *missing*, with the reason; a NaN
  or infinite float is missing too. Nothing is ever carried over from an earlier poll.
- **A dead device does not stall the others.** Each request is bounded by the device's
  ``timeout_s`` (asyncio, not the library's one timeout per client), a poll gives up on the
  device at its first transport failure, and a circuit breaker stops talking to a device
  that failed ``failures_to_open`` polls in a row: its polls answer "circuit open" at once
  until ``open_s`` has passed, then one trial request decides (half-open). Devices behind
  different endpoints run concurrently; units behind one endpoint share its line.
- **A busy device is left alone.** Exception 6 (or 5) pauses the device for
  ``busy_backoff_s`` instead of retrying at once.

Units behind one endpoint (a TCP-to-serial gateway, an RS-485 bus) share one
:class:`ModbusConnection` with **one request in flight**: pymodbus 3.12.1's server drops a
request that arrives while it is still answering, and a serial line carries one exchange
at a time anyway. Get shared connections from :class:`ModbusConnections`.

pymodbus is kept on a short leash: it never reconnects or retries on its own (both happen
here, visibly and counted), and its timeouts are set out of the way because asyncio bounds
every request and connect per unit.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Final, Self

from . import source
from .breaker import CircuitBreaker
from .modbus_decode import (
    DecodeError,
    ModbusDeviceConfig,
    ModbusFieldConfig,
    ReadRequest,
    Value,
    decode_field,
    format_plan,
    plan_device,
    plan_requests,
)
from .modbus_link import (
    EXCEPTION_NAMES,
    ConnectionStats,
    ModbusConnection,
    ModbusConnectionError,
    ModbusConnections,
    ModbusError,
    ModbusExceptionResponseError,
    ModbusInvalidResponseError,
    ModbusSetupError,
    ModbusTimeoutError,
    ModbusTransientError,
)

__all__ = [
    "ConnectionStats",
    "Missing",
    "MissingReason",
    "ModbusConnection",
    "ModbusConnectionError",
    "ModbusConnections",
    "ModbusDeviceConfig",
    "ModbusError",
    "ModbusExceptionResponseError",
    "ModbusFieldConfig",
    "ModbusInvalidResponseError",
    "ModbusSetupError",
    "ModbusSource",
    "ModbusTimeoutError",
    "ModbusTransientError",
    "ReadRequest",
    "ReadResult",
    "SourceStats",
    "format_plan",
    "plan_device",
]

log = logging.getLogger(__name__)

_ILLEGAL_ADDRESS: Final = 2
_BUSY_CODES: Final = frozenset({5, 6})
"""The device is alive but cannot serve now: back off."""
_UNREACHABLE_CODES: Final = frozenset({10, 11})
"""A gateway answered for a device it cannot reach: as good as a timeout."""


# -- results -------------------------------------------------------------------------------


class MissingReason(StrEnum):
    """Why a field has no value in a poll."""

    TIMEOUT = "timeout"
    EXCEPTION = "exception"
    CONNECTION = "connection error"
    INVALID_RESPONSE = "invalid response"
    DECODE = "decode error"
    BUSY_BACKOFF = "busy backoff"
    CIRCUIT_OPEN = "circuit open"


@dataclass(frozen=True, slots=True)
class Missing(source.Missing):
    """A field without a value, and why; a Modbus exception with its code."""

    reason: MissingReason
    exception_code: int | None = None

    @property
    def key(self) -> str:
        """A short metric label: ``timeout``, ``exception_6``, ``circuit_open``..."""
        if self.reason is MissingReason.EXCEPTION:
            return f"exception_{self.exception_code}"
        return self.reason.name.lower()

    def __str__(self) -> str:
        if self.reason is MissingReason.EXCEPTION and self.exception_code is not None:
            name = EXCEPTION_NAMES.get(self.exception_code, "unknown")
            return f"exception {self.exception_code} ({name})"
        return source.Missing.__str__(self)  # super() fails in a slotted dataclass


@dataclass(frozen=True, slots=True)
class ReadResult:
    """One poll of one device: the fields read, and the fields missing with the reason.

    Every configured field is in exactly one of ``values`` and ``missing``.
    """

    values: Mapping[str, Value]
    missing: Mapping[str, Missing]
    at: float
    """Wall-clock time (epoch seconds) when the poll started."""
    duration_s: float
    requests: int
    """Requests sent during this poll, retries included."""


@dataclass(slots=True)
class SourceStats:
    """Counters of one source, for metrics; they only grow (but ``last_*``)."""

    polls: int = 0
    requests: int = 0
    answers: int = 0
    """Requests answered, by values or by an exception response."""
    errors: Counter[str] = field(default_factory=Counter)
    """Failed requests and refused polls by :attr:`Missing.key`."""
    decode_errors: int = 0
    circuit_opens: int = 0
    last_latency_s: float | None = None
    """Round trip of the last answered request."""


# -- the source ----------------------------------------------------------------------------


class ModbusSource:
    """Polls one device's fields; see the module docstring for what it promises.

    ``connection`` is shared with the other units of the endpoint (from
    :class:`ModbusConnections`); without one the source opens and owns its own. Polls of
    one source run one at a time; polls of different sources may run concurrently.
    """

    def __init__(
        self,
        device: ModbusDeviceConfig,
        connection: ModbusConnection | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device = device
        self.plan: tuple[ReadRequest, ...] = plan_device(device)
        self.connection = connection or ModbusConnection(device)
        self._owns_connection = connection is None
        self.stats = SourceStats()
        self.breaker = CircuitBreaker.configured(device, clock)
        self.name = f"{device.endpoint} unit {device.unit}"
        self._clock = clock
        self._busy_until = float("-inf")
        self._polling = asyncio.Lock()

    async def poll(self) -> ReadResult:
        """Read every field once. Never raises for a device fault: see ReadResult."""
        async with self._polling:
            at, started = time.time(), self._clock()
            sent_before = self.stats.requests
            values, missing = await self._poll()
            duration_s = self._clock() - started
            self.stats.polls += 1
            requests = self.stats.requests - sent_before
            return ReadResult(values, missing, at, duration_s, requests)

    async def _poll(self) -> tuple[dict[str, Value], dict[str, Missing]]:
        values: dict[str, Value] = {}
        missing: dict[str, Missing] = {}
        refusal = self._refusal()
        if refusal is not None:
            self.stats.errors[refusal.key] += 1
            return values, {f.name: refusal for f in self.device.fields}
        pending = list(self.plan)
        failure: Missing | None = None
        while pending and failure is None:
            request = pending.pop(0)
            try:
                data = await self._read(request)
            except ModbusExceptionResponseError as exc:
                reason = Missing(MissingReason.EXCEPTION, exception_code=exc.code)
                self.stats.errors[reason.key] += 1
                if exc.code == _ILLEGAL_ADDRESS and (parts := self._split(request)):
                    pending[:0] = parts
                elif exc.code in _BUSY_CODES | _UNREACHABLE_CODES:
                    failure = reason
                else:
                    missing.update((f.name, reason) for f in request.fields)
                continue
            except ModbusError as exc:  # counted by _read
                failure = _missing_for(exc)
                continue
            self._decode(request, data, values, missing)
        if failure is None:
            self.breaker.success()
            return values, missing
        for f in self.device.fields:
            if f.name not in values and f.name not in missing:
                missing[f.name] = failure
        self._failed(failure)
        return values, missing

    def _refusal(self) -> Missing | None:
        """Why this poll must not send anything, if it must not."""
        left_s = self._busy_until - self._clock()
        if left_s > 0:
            return Missing(MissingReason.BUSY_BACKOFF, f"{left_s:.1f} s left")
        if not self.breaker.allow():
            return Missing(MissingReason.CIRCUIT_OPEN, f"{self.breaker.remaining_s():.1f} s left")
        return None

    def _failed(self, failure: Missing) -> None:
        if failure.exception_code in _BUSY_CODES:
            self._busy_until = self._clock() + self.device.busy_backoff_s
        if self.breaker.failure():
            self.stats.circuit_opens += 1
            log.warning(
                "modbus %s: circuit open after %d failed polls (last: %s); trial in %g s",
                self.name,
                self.breaker.failures,
                failure,
                self.device.open_s,
            )

    async def _read(self, request: ReadRequest) -> list[int]:
        """One request, attempted again after a transient failure up to ``retries`` times."""
        device = self.device
        for attempt in range(device.retries + 1):
            self.stats.requests += 1
            started = self._clock()
            try:
                data = await self.connection.read(
                    device.unit, request.table, request.start, request.count, device.timeout_s
                )
            except ModbusExceptionResponseError:
                self._answered(started)
                raise
            except ModbusError as exc:
                self.stats.errors[_missing_for(exc).key] += 1
                if attempt == device.retries or not isinstance(exc, ModbusTransientError):
                    raise
                log.debug("modbus %s: %s, attempt %d", self.name, exc, attempt + 1)
                continue
            self._answered(started)
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    def _answered(self, started: float) -> None:
        self.stats.answers += 1
        self.stats.last_latency_s = self._clock() - started

    def _decode(
        self,
        request: ReadRequest,
        data: Sequence[int],
        values: dict[str, Value],
        missing: dict[str, Missing],
    ) -> None:
        for f in request.fields:
            try:
                values[f.name] = decode_field(f, request.data_for(f, data), self.device.word_order)
            except DecodeError as exc:
                missing[f.name] = Missing(MissingReason.DECODE, str(exc))
                self.stats.decode_errors += 1

    def _split(self, request: ReadRequest) -> list[ReadRequest]:
        """Split a read that met exception 2 into reads of its fields alone, for good; none
        if it cannot be split (then the fields are missing with exception 2)."""
        if len(request.fields) < 2:
            return []
        parts = plan_requests(
            request.fields,
            max_registers=self.device.max_registers_per_request,
            max_bits=self.device.max_bits_per_request,
            max_gap_registers=-1,
            max_gap_bits=-1,
        )
        if len(parts) < 2:
            return []
        index = self.plan.index(request)
        self.plan = (*self.plan[:index], *parts, *self.plan[index + 1 :])
        log.warning(
            "modbus %s: %s %d+%d answers exception 2; reading its %d fields separately",
            self.name,
            request.table,
            request.start,
            request.count,
            len(request.fields),
        )
        return list(parts)

    async def aclose(self) -> None:
        """Close the connection if this source opened it."""
        if self._owns_connection:
            await self.connection.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _missing_for(exc: ModbusError) -> Missing:
    if isinstance(exc, ModbusExceptionResponseError):
        return Missing(MissingReason.EXCEPTION, exception_code=exc.code)
    if isinstance(exc, ModbusTimeoutError):
        return Missing(MissingReason.TIMEOUT, str(exc))
    if isinstance(exc, ModbusInvalidResponseError):
        return Missing(MissingReason.INVALID_RESPONSE, str(exc))
    return Missing(MissingReason.CONNECTION, str(exc))
