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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Final, Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from . import source
from .breaker import CircuitBreaker
from .errors import GatewayError
from .modbus_decode import (
    BIT_TABLES,
    DecodeError,
    ModbusDeviceConfig,
    ModbusFieldConfig,
    ReadRequest,
    Table,
    Value,
    decode_field,
    format_plan,
    plan_device,
    plan_requests,
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

_LIBRARY_TIMEOUT_S: Final = 3600.0
"""pymodbus's own timeout: out of the way, since asyncio bounds each request per unit."""
_CONNECT_SETTLE_S: Final = 0.1
"""pymodbus's connect() sleeps this long after connecting; allowed on top of timeout_s."""
_FUNCTION_CODES: Final[dict[Table, int]] = {
    "coil": 1,
    "discrete_input": 2,
    "holding": 3,
    "input": 4,
}
_EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
_READS: Final = frozenset(_FUNCTION_CODES.values())
_ILLEGAL_ADDRESS: Final = 2
_BUSY_CODES: Final = frozenset({5, 6})
"""The device is alive but cannot serve now: back off."""
_UNREACHABLE_CODES: Final = frozenset({10, 11})
"""A gateway answered for a device it cannot reach: as good as a timeout."""


# -- errors --------------------------------------------------------------------------------


class ModbusError(GatewayError):
    """Root of the errors of this module."""


class ModbusTransientError(ModbusError):
    """The link or the device may recover: worth another attempt."""


class ModbusTimeoutError(ModbusTransientError):
    """No answer within the timeout."""


class ModbusConnectionError(ModbusTransientError):
    """Could not connect, or the connection was lost during the request."""


class ModbusInvalidResponseError(ModbusTransientError):
    """An answer that is not a valid answer to the request (garbage, wrong shape)."""


class ModbusExceptionResponseError(ModbusError):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})")
        self.code = code


class ModbusSetupError(ModbusError):
    """The gateway cannot open this kind of link at all (a missing dependency)."""


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
            name = _EXCEPTION_NAMES.get(self.exception_code, "unknown")
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


# -- connections ---------------------------------------------------------------------------

_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class _Link:
    """One pymodbus client and what its callbacks saw since the last request went out.

    A received frame whose function code answers no read is swallowed here and reported
    as a lost link: pymodbus would raise inside ``data_received``, where asyncio logs a
    traceback and drops the connection anyway.
    """

    def __init__(self, make: Callable[["_Link"], "_Client"], rtu: bool) -> None:
        self.lost = asyncio.Event()
        self.received = False
        self.garbage: bytes | None = None
        self._function_at = 1 if rtu else 7  # after the unit id, or after the MBAP header
        self.client = make(self)

    def on_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            return data
        self.received = True
        if len(data) > self._function_at and data[self._function_at] & 0x7F not in _READS:
            self.garbage = data
            self.lost.set()
            return b""
        return data

    def on_connect(self, up: bool) -> None:
        if not up:
            self.lost.set()


@dataclass(slots=True)
class ConnectionStats:
    connects: int = 0
    losses: int = 0
    """Connections lost under a request: closed by the peer, or by pymodbus."""


class ModbusConnection:
    """One link to an endpoint (TCP socket or serial line), shared by the units behind it.

    One request is in flight at a time; each is bounded by its caller's timeout, which
    starts once the line is free. The link connects when first used and reconnects after
    it was lost; on RTU framing (no transaction ids) it is also reopened after a timeout,
    so that a late answer cannot pass for the answer to the next request.
    """

    def __init__(self, device: ModbusDeviceConfig) -> None:
        self.settings = device
        self.endpoint = device.endpoint
        self.stats = ConnectionStats()
        self._lock = asyncio.Lock()
        self._link: _Link | None = None

    def _client(self, link: _Link) -> _Client:
        d = self.settings
        if d.transport == "rtu":
            try:
                return AsyncModbusSerialClient(
                    d.serial_port or "",
                    framer=FramerType.RTU,
                    baudrate=d.baudrate,
                    bytesize=d.bytesize,
                    parity=d.parity,
                    stopbits=d.stopbits,
                    name=f"kyoso {self.endpoint}",
                    trace_packet=link.on_packet,
                    trace_connect=link.on_connect,
                    timeout=_LIBRARY_TIMEOUT_S,
                    retries=0,
                    reconnect_delay=0.0,
                )
            except RuntimeError as exc:  # pymodbus: "Serial client requires pyserial"
                raise ModbusSetupError(
                    "transport rtu needs pyserial (install pymodbus[serial])"
                ) from exc
        framer = FramerType.RTU if d.transport == "rtu_over_tcp" else FramerType.SOCKET
        return AsyncModbusTcpClient(
            d.host or "",
            port=d.port,
            framer=framer,
            name=f"kyoso {self.endpoint}",
            trace_packet=link.on_packet,
            trace_connect=link.on_connect,
            timeout=_LIBRARY_TIMEOUT_S,
            retries=0,
            reconnect_delay=0.0,
        )

    async def _connected(self, timeout_s: float) -> _Link:
        link = self._link
        if link is not None and link.client.connected and not link.lost.is_set():
            return link
        self._drop()
        link = _Link(self._client, rtu=self.settings.transport != "tcp")
        self._link = link
        try:
            async with asyncio.timeout(timeout_s + _CONNECT_SETTLE_S):
                connected = await link.client.connect()
        except TimeoutError:
            connected = False
        if not connected or link.lost.is_set():
            self._drop()
            raise ModbusConnectionError(f"cannot connect to {self.endpoint}")
        self.stats.connects += 1
        log.debug("modbus %s: connected", self.endpoint)
        return link

    def _drop(self) -> None:
        if self._link is not None:
            self._link.client.close()
            self._link = None

    async def read(
        self, unit: int, table: Table, start: int, count: int, timeout_s: float
    ) -> list[int]:
        """``count`` registers (or bits, as 0/1) of ``table`` from ``start`` of ``unit``.

        Raises ModbusExceptionResponseError for an exception answer, and a
        ModbusTransientError for a timeout, a lost connection or an invalid answer.
        """
        async with self._lock:
            link = await self._connected(timeout_s)
            link.received = False
            request = asyncio.ensure_future(self._send(link, unit, table, start, count))
            lost = asyncio.ensure_future(link.lost.wait())
            try:
                done, _ = await asyncio.wait(
                    (request, lost), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (request, lost):
                    task.cancel()
                # pymodbus turns the cancellation into ModbusIOException: swallow it here.
                await asyncio.gather(request, lost, return_exceptions=True)
            if request in done:
                return self._checked(request, table, count)
            if lost in done:
                self._drop()
                if link.garbage is not None:
                    raise ModbusInvalidResponseError(f"garbage answer {link.garbage[:24].hex()}")
                self.stats.losses += 1
                if link.received:
                    raise ModbusInvalidResponseError("undecodable answer; connection dropped")
                raise ModbusConnectionError(f"connection to {self.endpoint} lost")
            if self.settings.transport != "tcp":
                self._drop()  # RTU has no transaction id: a late answer would look current
            raise ModbusTimeoutError(f"no answer within {timeout_s:g} s")

    @staticmethod
    async def _send(link: _Link, unit: int, table: Table, start: int, count: int) -> ModbusPDU:
        client = link.client
        call: Callable[..., Awaitable[ModbusPDU]] = {
            "coil": client.read_coils,
            "discrete_input": client.read_discrete_inputs,
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
        }[table]
        return await call(start, count=count, device_id=unit)

    def _checked(self, request: "asyncio.Future[ModbusPDU]", table: Table, count: int) -> list[int]:
        try:
            response = request.result()
        except ConnectionException as exc:
            self._drop()
            raise ModbusConnectionError(str(exc)) from exc
        except ModbusException as exc:
            self._drop()
            raise ModbusInvalidResponseError(str(exc)) from exc
        if response.isError():
            raise ModbusExceptionResponseError(response.exception_code)
        if response.function_code != _FUNCTION_CODES[table]:
            self._drop()
            raise ModbusInvalidResponseError(
                f"function {response.function_code} answered function {_FUNCTION_CODES[table]}"
            )
        if table in BIT_TABLES:
            if len(response.bits) < count:  # bits come padded to a multiple of 8
                self._drop()
                raise ModbusInvalidResponseError(f"{len(response.bits)} bits for {count}")
            return [int(b) for b in response.bits[:count]]
        if len(response.registers) != count:
            self._drop()
            raise ModbusInvalidResponseError(f"{len(response.registers)} registers for {count}")
        return list(response.registers)

    async def aclose(self) -> None:
        """Close the link; a later read opens it again."""
        self._drop()


class ModbusConnections:
    """The gateway's connections, one per endpoint, shared by the units behind it::

        async with ModbusConnections() as connections:
            sources = [ModbusSource(d, connections.get(d)) for d in devices]

    Leaving the block closes every connection.
    """

    def __init__(self) -> None:
        self._by_endpoint: dict[tuple[str, str], ModbusConnection] = {}

    def get(self, device: ModbusDeviceConfig) -> ModbusConnection:
        """The connection for ``device``'s endpoint. Raises ValueError if a device on the
        same endpoint was configured with another transport or other serial settings."""
        key = ("serial" if device.transport == "rtu" else "tcp", device.endpoint)
        connection = self._by_endpoint.get(key)
        if connection is None:
            connection = self._by_endpoint[key] = ModbusConnection(device)
            return connection
        line = ("transport", "baudrate", "parity", "stopbits", "bytesize")
        theirs = connection.settings
        if clash := [n for n in line if getattr(theirs, n) != getattr(device, n)]:
            raise ValueError(
                f"devices on {device.endpoint} disagree on {', '.join(clash)}: "
                "one line has one setting"
            )
        return connection

    async def aclose(self) -> None:
        for connection in self._by_endpoint.values():
            await connection.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


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
