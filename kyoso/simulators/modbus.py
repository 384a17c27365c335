"""Modbus TCP servers for a factory's simulated machines, with injectable faults.

Each configured server is one TCP port; machines answer on it behind their unit ids. A
machine's registers are computed when they are read, from its behaviour model at the
caller's simulation time, so nothing runs between requests and the values always agree
with the model (see :mod:`kyoso.simulators.registers` for the map).

Faults make a machine misbehave the way field devices do, so that a gateway's error
handling can be tested: busy (exception 6), no answer, a late answer, a dropped TCP
connection, or a garbage frame. They draw from their own random stream and never touch
the behaviour model's.
"""

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Final, Self, TypeVar

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusBaseDeviceContext, ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from kyoso.contract import MachineState

from .behaviour import MachineModel
from .config import FactoryConfig, ModbusSourceConfig
from .endpoints import Endpoint
from .registers import COIL_ALARM_ACK, MeterReader, RegisterImage, register_image

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_MAX_READ: Final = {1: 2000, 2: 2000, 3: 125, 4: 125, 23: 125}
"""Largest quantity each read function admits (Modbus application protocol 1.1b3)."""
_COIL_WRITES: Final = frozenset({5, 15})


class FaultKind(StrEnum):
    """How a faulty machine answers a request."""

    BUSY = "busy"
    """Exception 6, server device busy."""
    NO_RESPONSE = "no_response"
    """No answer at all; the client times out."""
    SLOW = "slow"
    """The correct answer, ``delay_s`` late."""
    DROP = "drop"
    """The server closes the TCP connection instead of answering."""
    JUNK = "junk"
    """A well-framed answer whose PDU is garbage: function code 0, then random bytes."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault hitting each request to one machine with ``probability``."""

    kind: FaultKind
    probability: float = 1.0
    delay_s: float = 0.0
    """Only for ``slow``: how late the answer comes."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], got {self.probability}")
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError(f"delay_s must be finite and >= 0, got {self.delay_s}")
        if self.kind is FaultKind.SLOW and self.delay_s == 0:
            raise ValueError("a slow fault needs delay_s > 0")


class _MachineDevice(ModbusBaseDeviceContext):
    """One machine behind a unit id; addresses are the map's, zero-based, with no offset.

    Reads outside the map answer exception 2, quantities beyond the protocol's limits
    exception 3. Register writes (FC 6, 16, 22, 23) answer exception 1: the machine has no
    writable register, so it does not support those functions at all, as read-only
    controllers do. Coil writes anywhere but coil 0 answer exception 2.
    """

    def __init__(
        self,
        machine: str,
        source: ModbusSourceConfig,
        model: MachineModel,
        now: Callable[[], float],
    ) -> None:
        self.machine = machine
        self.source = source
        self.model = model
        self._now = now
        self._meters = MeterReader(model)
        self.alarm_ack = False

    def image(self) -> RegisterImage:
        """The machine's registers at the current simulation time."""
        moment = self._now()
        return register_image(
            self.model.snapshot(moment),
            self.source,
            name=self.machine,
            meters=self._meters.at(moment),
            alarm_ack=self.alarm_ack,
        )

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        limit = _MAX_READ.get(func_code)
        if limit is not None and not 1 <= count <= limit:
            return ExcCodes.ILLEGAL_VALUE
        image = self.image()
        found: list[int] | list[bool] | None
        match func_code:
            case 1 | 5 | 15:
                found = _read(image.coils, address, count)
            case 2:
                found = _read(image.discrete_inputs, address, count)
            case 3 | 6 | 16 | 22 | 23:
                found = _read(image.holding, address, count)
            case 4:
                found = _read(image.input, address, count)
            case _:
                return ExcCodes.ILLEGAL_FUNCTION
        return ExcCodes.ILLEGAL_ADDRESS if found is None else found

    async def async_setValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if func_code not in _COIL_WRITES:
            return ExcCodes.ILLEGAL_FUNCTION
        if address != COIL_ALARM_ACK or len(values) != 1:
            return ExcCodes.ILLEGAL_ADDRESS
        self.alarm_ack = bool(values[0])
        return None


def _read(table: Mapping[int, _T], address: int, count: int) -> list[_T] | None:
    """``count`` values from ``address`` on, or None if any address is not in the map."""
    try:
        return [table[a] for a in range(address, address + count)]
    except KeyError:
        return None


class _FaultTable:
    """The faults of one server's units, drawing from the simulation's fault stream."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._faults: dict[int, Fault] = {}

    def set(self, unit: int, fault: Fault | None) -> None:
        if fault is None:
            self._faults.pop(unit, None)
        else:
            self._faults[unit] = fault

    def draw(self, unit: int) -> Fault | None:
        """The fault hitting this request to ``unit``, if any."""
        fault = self._faults.get(unit)
        if fault is None or self._rng.random() >= fault.probability:
            return None
        return fault

    def junk(self) -> bytes:
        """A garbage PDU: function code 0, which no Modbus message uses, then noise."""
        return b"\x00" + self._rng.randbytes(self._rng.randint(2, 16))


class _Connection(ServerRequestHandler):
    """One client connection: answers each request, or applies its machine's fault.

    pymodbus's own handler reads ``last_pdu`` again after awaiting the datastore, so a late
    answer would go out with the *next* request's transaction id. This one keeps the
    request it answers, as a real device does.
    """

    def __init__(self, server: "_TcpServer") -> None:
        super().__init__(server, None, None, None)  # type: ignore[no-untyped-call]
        self._context = server.units
        self._faults = server.faults

    async def handle_request(self) -> None:
        request = self.last_pdu
        if request is None:
            return
        try:
            await self._answer(request)
        except Exception:
            # The handler runs as a detached task: nobody else would see this.
            log.exception("unit %d: failed to answer %s", request.dev_id, request)

    async def _answer(self, request: ModbusPDU) -> None:
        fault = self._faults.draw(request.dev_id)
        if fault is not None:
            log.debug("unit %d: %s fault", request.dev_id, fault.kind.value)
        match fault:
            case Fault(kind=FaultKind.NO_RESPONSE):
                return
            case Fault(kind=FaultKind.DROP):
                self.close()
                return
            case Fault(kind=FaultKind.JUNK):
                frame = self.framer.encode(
                    self._faults.junk(), request.dev_id, request.transaction_id
                )
                self.send(frame)
                return
            case Fault(kind=FaultKind.BUSY):
                response: ModbusPDU = ExceptionResponse(request.function_code, ExcCodes.DEVICE_BUSY)
            case Fault(kind=FaultKind.SLOW, delay_s=delay_s):
                await asyncio.sleep(delay_s)
                response = await self._execute(request)
            case _:
                response = await self._execute(request)
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        if self.is_active():
            self.pdu_send(response)

    async def _execute(self, request: ModbusPDU) -> ModbusPDU:
        try:
            return await request.datastore_update(self._context, request.dev_id)
        except NoSuchIdException:
            # What a gateway answers when nothing behind it has that unit id.
            return ExceptionResponse(request.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
        except Exception:
            log.exception("unit %d: device failure answering %s", request.dev_id, request)
            return ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)


class _TcpServer(ModbusTcpServer):
    """A pymodbus TCP server whose connections apply the units' faults."""

    def __init__(
        self, devices: dict[int, _MachineDevice], address: tuple[str, int], faults: _FaultTable
    ) -> None:
        self.units = ModbusServerContext(devices=devices, single=False)  # type: ignore[no-untyped-call]
        super().__init__(self.units, address=address)
        self.faults = faults

    def callback_new_connection(self) -> _Connection:
        return _Connection(self)

    def bound_port(self) -> int:
        """The port actually listened on (the configured one, or the one picked for 0)."""
        listener = self.transport
        if not isinstance(listener, asyncio.Server):
            raise RuntimeError("server is not listening")
        port: int = listener.sockets[0].getsockname()[1]
        return port


class ModbusServers:
    """Every Modbus TCP server of one factory, as an async context manager::

        async with ModbusServers(factory, models, clock.now) as servers:
            host, port, unit = servers.endpoints["cnc-01"]

    ``now`` returns the simulation time in epoch seconds; ``models`` holds the behaviour
    model of every Modbus machine of ``factory``. Faults draw from a stream seeded with
    ``fault_seed`` (None: from the system).
    """

    def __init__(
        self,
        factory: FactoryConfig,
        models: Mapping[str, MachineModel],
        now: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        fault_seed: int | None = None,
    ) -> None:
        self.factory = factory
        self.host = host
        rng = random.Random(fault_seed)
        self._faults = {name: _FaultTable(rng) for name in factory.modbus_servers}
        self._devices: dict[str, dict[int, _MachineDevice]] = {
            name: {} for name in factory.modbus_servers
        }
        self._units: dict[str, tuple[str, int]] = {}
        for machine in factory.machines:
            source = machine.source
            if isinstance(source, ModbusSourceConfig):
                _check_state_codes(machine.id, source)
                device = _MachineDevice(machine.id, source, models[machine.id], now)
                self._devices[source.server][source.unit] = device
                self._units[machine.id] = (source.server, source.unit)
        self._servers: dict[str, _TcpServer] = {}
        self._ports: dict[str, int] = {}

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """Where each machine answers; the ports are known once the servers are started."""
        if len(self._ports) != len(self._devices):
            raise RuntimeError("the Modbus servers are not started")
        return {
            machine: Endpoint(self.host, self._ports[server], unit)
            for machine, (server, unit) in self._units.items()
        }

    def set_fault(self, machine: str, fault: Fault | None) -> None:
        """Make ``machine`` answer with ``fault`` from its next request on; None clears it."""
        if machine not in self._units:
            raise KeyError(f"{machine!r} is not a Modbus machine of {self.factory.factory}")
        server, unit = self._units[machine]
        self._faults[server].set(unit, fault)
        log.info("%s/%s: fault %s", self.factory.factory, machine, fault)

    async def start(self) -> None:
        """Listen on every configured port; raises OSError if one cannot be bound."""
        for name, config in self.factory.modbus_servers.items():
            server = _TcpServer(self._devices[name], (self.host, config.port), self._faults[name])
            try:
                await server.serve_forever(background=True)
            except RuntimeError as exc:
                raise OSError(
                    f"{self.factory.factory}/{name}: cannot listen on {self.host}:{config.port}"
                ) from exc
            self._servers[name] = server
            self._ports[name] = server.bound_port()
            log.info(
                "%s/%s: Modbus TCP on %s:%d",
                self.factory.factory,
                name,
                self.host,
                self._ports[name],
            )

    async def stop(self) -> None:
        """Close every listener and every open connection."""
        for server in self._servers.values():
            listener = server.transport
            await server.shutdown()  # type: ignore[no-untyped-call]
            if isinstance(listener, asyncio.Server):
                await listener.wait_closed()
        self._servers.clear()
        self._ports.clear()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _check_state_codes(machine: str, source: ModbusSourceConfig) -> None:
    missing: Sequence[str] = [
        s.value
        for s in MachineState
        if s is not MachineState.UNKNOWN and s.value not in source.state_codes
    ]
    if missing:
        raise ValueError(f"machine {machine}: state_codes lacks {', '.join(missing)}")
