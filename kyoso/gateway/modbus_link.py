"""Modbus links: one connection per endpoint (TCP, RTU over TCP, serial RTU) shared by the
units behind it, with one request in flight, each bounded by the device's ``timeout_s``; and
the errors a request ends in. The source (:mod:`kyoso.gateway.modbus`) plans, decodes and
guards devices on top of these links.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from .errors import GatewayError
from .modbus_decode import BIT_TABLES, ModbusDeviceConfig, Table

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
EXCEPTION_NAMES: Final[dict[int, str]] = {
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
        super().__init__(f"exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")
        self.code = code


class ModbusSetupError(ModbusError):
    """The gateway cannot open this kind of link at all (a missing dependency)."""


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
