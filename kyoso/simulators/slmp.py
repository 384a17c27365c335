"""A simulated Mitsubishi MELSEC PLC answering SLMP, one per machine (docs/simulators.md).

It answers batch reads (command 0x0401) in word units (subcommand 0x0000) and bit units
(0x0001), in the frame it is asked in (3E or 4E binary, the 4E serial echoed), over TCP and
UDP on one port. The machine's Modbus register map (kyoso/simulators/registers.py) is laid
onto devices, so a gateway reads the same ground truth as from the Modbus twin:

====================  ==================================================================
D0-D19                holding registers 0-19 (state, alarm, counters, load, power, ...)
D1000-D1124           input register *n* at D(1000 + *n*): identification and the test
                      pattern; strings with the first character in a word's low byte,
                      as MELSEC stores them
M0                    coil 0 (alarm acknowledge)
X0, X1, X2            discrete inputs 0-2 (running, alarm, door closed)
====================  ==================================================================

32/64-bit values follow the machine's word order (default CDAB, MELSEC's low word first).
Every other point of X, Y, M, B (0-8191), D (0-12287), W (0-8191), R (0-32767) and
ZR (0-65535) reads 0. Refusals carry the end codes of the SLMP reference manual: 0xC059 for
another command or subcommand, 0xC05C for a device code this PLC lacks or bits of a word
device, 0xC056 beyond a device's range, 0xC051/0xC052 for too many bits/words,
0xC061 for a request whose length does not match. Faults (kyoso/simulators/modbus.py) apply
per request: no_response and busy stay silent (SLMP has no busy answer), slow answers late,
drop closes the TCP connection, junk answers a well-framed header with garbage after it.
"""

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Final, cast

from .behaviour import MachineModel
from .config import FactoryConfig, SlmpSourceConfig
from .endpoints import SlmpEndpoint
from .modbus import Fault, FaultKind
from .registers import (
    MODEL_NAME_ADDRESS,
    MODEL_NAME_REGISTERS,
    TEST_STRING_ADDRESS,
    TEST_STRING_REGISTERS,
    MeterReader,
    RegisterImage,
    register_image,
)

log = logging.getLogger(__name__)

INPUT_BASE: Final = 1000
"""Input register n is D(INPUT_BASE + n)."""

_DEVICES: Final[dict[int, tuple[str, bool, int]]] = {
    0x9C: ("X", True, 0x2000),
    0x9D: ("Y", True, 0x2000),
    0x90: ("M", True, 8192),
    0xA0: ("B", True, 0x2000),
    0xA8: ("D", False, 12288),
    0xB4: ("W", False, 0x2000),
    0xAF: ("R", False, 32768),
    0xB0: ("ZR", False, 65536),
}
"""Device code -> name, bit device, points."""
_STRING_INPUTS: Final = frozenset(
    {
        *range(MODEL_NAME_ADDRESS, MODEL_NAME_ADDRESS + MODEL_NAME_REGISTERS),
        *range(TEST_STRING_ADDRESS, TEST_STRING_ADDRESS + TEST_STRING_REGISTERS),
    }
)
_HEAD: Final = {0x50: 9, 0x54: 13}
"""Request subheader byte -> bytes up to and including the length field (3E, 4E)."""
_WORD_LIMIT: Final = 960
_BIT_LIMIT: Final = 7168


class _RefusedError(Exception):
    """A request the PLC answers with an end code."""

    def __init__(self, end_code: int) -> None:
        super().__init__(f"end code 0x{end_code:04X}")
        self.end_code = end_code


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, plc: "SlmpPlc") -> None:
        self.plc = plc
        self.transport: asyncio.DatagramTransport | None = None
        self._answering: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self.plc.answer_datagram(data, addr, self))
        self._answering.add(task)  # kept until done: the loop holds tasks weakly
        task.add_done_callback(self._answering.discard)


class SlmpPlc:
    """The PLC of one machine; ``now`` returns the simulation time in epoch seconds."""

    def __init__(
        self,
        machine: str,
        source: SlmpSourceConfig,
        model: MachineModel,
        now: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        rng: random.Random | None = None,
    ) -> None:
        self.machine = machine
        self.source = source
        self.model = model
        self.host = host
        self.port: int | None = None
        self.requests = 0
        self._now = now
        self._rng = rng or random.Random()
        self._meters = MeterReader(model)
        self._fault: Fault | None = None
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def endpoint(self) -> SlmpEndpoint:
        """Where the PLC answers; known once it is started."""
        if self.port is None:
            raise RuntimeError(f"the SLMP PLC of {self.machine} is not started")
        return SlmpEndpoint(self.host, self.port, self.source.transport, self.source.frame)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the configured port (again, after :meth:`stop`), TCP and UDP."""
        loop = asyncio.get_running_loop()
        for _ in range(20):  # port 0: a free TCP port whose UDP twin may be taken
            server = await asyncio.start_server(
                self._serve, self.host, self.port or self.source.port
            )
            port = server.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(self.host, port)
                )
            except OSError:
                server.close()
                await server.wait_closed()
                if self.port or self.source.port:
                    raise
                continue
            self._server, self._udp, self.port = server, udp, port
            log.info("%s: SLMP PLC on %s:%d (TCP and UDP)", self.machine, self.host, port)
            return
        raise OSError("no port free for both TCP and UDP")

    async def stop(self) -> None:
        """Close both listeners and every connection; the port is kept for a restart."""
        server, self._server = self._server, None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if server is not None:
            server.close()
        for writer in self._connections.values():
            writer.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restart(self) -> None:
        """A power cycle: connections lost, the same port again."""
        await self.stop()
        await self.start()

    def set_fault(self, fault: Fault | None) -> None:
        """Answer requests with ``fault`` from the next one on; None clears it."""
        self._fault = fault

    # -- transport ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:
                first = await reader.readexactly(2)
                size = _HEAD.get(first[0])
                if size is None or first[1] != 0:
                    return  # not SLMP binary: a PLC closes the connection
                head = first + await reader.readexactly(size - 2)
                request = head + await reader.readexactly(int.from_bytes(head[-2:], "little"))
                fault = self._drawn_fault()
                if fault is not None and fault.kind is FaultKind.DROP:
                    return
                reply = await self._reply(request, fault)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def answer_datagram(
        self, data: bytes, addr: tuple[str, int], protocol: _Datagrams
    ) -> None:
        size = _HEAD.get(data[0]) if data else None
        if (
            size is None
            or len(data) < size
            or len(data) != size + int.from_bytes(data[size - 2 : size], "little")
        ):
            return  # not one whole SLMP binary request: ignored
        fault = self._drawn_fault()
        if fault is not None and fault.kind is FaultKind.DROP:
            return
        reply = await self._reply(data, fault)
        if (
            reply is not None
            and protocol.transport is not None
            and not protocol.transport.is_closing()
        ):
            protocol.transport.sendto(reply, addr)

    def _drawn_fault(self) -> Fault | None:
        fault = self._fault
        if fault is not None and self._rng.random() >= fault.probability:
            return None
        return fault

    async def _reply(self, request: bytes, fault: Fault | None) -> bytes | None:
        self.requests += 1
        if fault is not None:
            if fault.kind in (FaultKind.NO_RESPONSE, FaultKind.BUSY):
                return None
            if fault.kind is FaultKind.SLOW:
                await asyncio.sleep(fault.delay_s)
        reply = self.respond(request)
        if fault is not None and fault.kind is FaultKind.JUNK:
            size = _HEAD[request[0]]  # success, then three bytes no read can answer
            return reply[: size - 2] + (2 + 3).to_bytes(2, "little") + b"\0\0\xff\xff\xff"
        return reply

    # -- the protocol ---------------------------------------------------------------------

    def respond(self, request: bytes) -> bytes:
        """The answer to one whole binary request (3E or 4E, as asked)."""
        size = _HEAD[request[0]]
        route = request[size - 7 : size - 2]
        body = request[size:]
        head = b"\xd0\x00" if size == 9 else b"\xd4\x00" + request[2:4] + b"\0\0"
        command = body[2:6] if len(body) >= 6 else b"\0\0\0\0"
        try:
            data = self._execute(body)
            end_code = 0
        except _RefusedError as refusal:
            data, end_code = route + command, refusal.end_code
        payload = end_code.to_bytes(2, "little") + data
        return head + route + len(payload).to_bytes(2, "little") + payload

    def _execute(self, body: bytes) -> bytes:
        if len(body) < 6:
            raise _RefusedError(0xC061)
        command = int.from_bytes(body[2:4], "little")
        subcommand = int.from_bytes(body[4:6], "little")
        if command != 0x0401 or subcommand not in (0x0000, 0x0001):
            raise _RefusedError(0xC059)
        if len(body) != 12:
            raise _RefusedError(0xC061)
        start = int.from_bytes(body[6:9], "little")
        code = body[9]
        points = int.from_bytes(body[10:12], "little")
        device = _DEVICES.get(code)
        in_bits = subcommand == 0x0001
        if device is None or (in_bits and not device[1]):
            raise _RefusedError(0xC05C)
        _, bit_device, size = device
        if in_bits and not 1 <= points <= _BIT_LIMIT:
            raise _RefusedError(0xC051)
        if not in_bits and not 1 <= points <= _WORD_LIMIT:
            raise _RefusedError(0xC052)
        span = points if in_bits or not bit_device else points * 16
        if start + span > size:
            raise _RefusedError(0xC056)
        image = self.image()
        if in_bits:
            values = [self._bit(image, code, start + i) for i in range(points)]
            values += [False] * (points % 2)
            return bytes(values[i] << 4 | values[i + 1] for i in range(0, len(values), 2))
        if bit_device:  # word units of a bit device: 16 points a word, the first in bit 0
            found = []
            for w in range(points):
                bits = (self._bit(image, code, start + 16 * w + b) for b in range(16))
                found.append(sum(bit << b for b, bit in enumerate(bits)))
        else:
            found = [self._word(image, code, start + i) for i in range(points)]
        return b"".join(w.to_bytes(2, "little") for w in found)

    def image(self) -> RegisterImage:
        """The machine's registers at the current simulation time."""
        moment = self._now()
        return register_image(
            self.model.snapshot(moment),
            self.source,
            name=self.machine,
            meters=self._meters.at(moment),
        )

    @staticmethod
    def _word(image: RegisterImage, code: int, number: int) -> int:
        if code != 0xA8:
            return 0
        if number < INPUT_BASE:
            return image.holding.get(number, 0)
        address = number - INPUT_BASE
        word = image.input.get(address, 0)
        if address in _STRING_INPUTS:  # MELSEC: the first character in the low byte
            word = (word & 0xFF) << 8 | word >> 8
        return word

    @staticmethod
    def _bit(image: RegisterImage, code: int, number: int) -> bool:
        if code == 0x90:
            return image.coils.get(number, False)
        if code == 0x9C:
            return image.discrete_inputs.get(number, False)
        return False


def slmp_plcs(
    factory: FactoryConfig,
    models: Mapping[str, MachineModel],
    now: Callable[[], float],
    *,
    host: str = "127.0.0.1",
    fault_seed: int | None = None,
) -> dict[str, SlmpPlc]:
    """The PLCs of a factory's SLMP machines, not started; their faults draw from one stream
    seeded with ``fault_seed`` (None: from the system)."""
    rng = random.Random(fault_seed)
    return {
        m.id: SlmpPlc(m.id, m.source, models[m.id], now, host=host, rng=rng)
        for m in factory.machines
        if isinstance(m.source, SlmpSourceConfig)
    }
