"""Reading Mitsubishi MELSEC PLCs over SLMP (the MC protocol): one :class:`SlmpSource` per PLC.

The frames are :mod:`kyoso.gateway.slmp_frames` (3E or 4E binary, batch reads in word and
bit units), the fields and the read plan :mod:`kyoso.gateway.slmp_config`. What it promises,
as the Modbus source does:

- **No value from a failed read.** An end code, a timeout, a lost connection or an answer
  that is not one makes the fields of that read *missing* with the reason (an end code with
  its number: ``end code 0xC056 (beyond the device range)``); nothing is carried over.
- **A dead PLC never delays the others.** Connecting and each request are bounded by
  ``timeout_s`` with asyncio; a poll gives up on the PLC at its first transport failure; after
  ``failures_to_open`` failed polls in a row the circuit breaker answers "circuit open" at
  once until ``open_s`` has passed, then one trial decides. Each PLC has its own connection.
- **One request in flight per connection**, as a 3E frame (which has no serial number)
  requires; a 4E answer must echo its request's serial, and over UDP an answer to an earlier
  request that arrives late is discarded, never taken for the current one.
- **Reconnection without a restart.** A timeout or a broken answer closes the connection (a
  late answer would shift every later one), and the next request connects again.

An end code is the PLC answering, so it is not a failure of the PLC: a read beyond a
device's range (0xC056) that merged several fields is split into one read per field for good,
so one wrong field does not take its neighbours with it.
"""

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Final, Self

from . import source
from .breaker import CircuitBreaker
from .modbus_decode import DecodeError, Value
from .slmp_config import SlmpConfig, SlmpEndpointConfig, SlmpRead, decode, plan_reads
from .slmp_frames import (
    HEAD_SIZE,
    Device,
    SlmpEndCodeError,
    SlmpError,
    SlmpFrameError,
    bits,
    checked_data,
    data_length,
    decode_response,
    encode_read,
    end_code_name,
    words,
)
from .source import Polled

log = logging.getLogger(__name__)

_BEYOND_RANGE: Final = 0xC056


class SlmpTimeoutError(SlmpError):
    """No answer (or no connection) within ``timeout_s``."""


class SlmpConnectionError(SlmpError):
    """The PLC refused or closed the connection, or the host is unreachable."""


class SlmpMissingReason(StrEnum):
    """Why a field has no value in a poll."""

    END_CODE = "end code"
    TIMEOUT = "timeout"
    CONNECTION = "plc unreachable"
    INVALID_RESPONSE = "invalid response"
    DECODE = "decode error"
    CIRCUIT_OPEN = "circuit open"


@dataclass(frozen=True, slots=True)
class Missing(source.Missing):
    """A field without a value, and why; a refusal with its end code."""

    reason: SlmpMissingReason
    end_code: int | None = None

    def __str__(self) -> str:
        if self.end_code is not None:
            return f"end code 0x{self.end_code:04X} ({end_code_name(self.end_code)})"
        return source.Missing.__str__(self)  # super() fails in a slotted dataclass


@dataclass(slots=True)
class SlmpStats:
    """Counters of one source, for metrics and tests; they only grow."""

    polls: int = 0
    requests: int = 0
    answers: int = 0
    connects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    circuit_opens: int = 0


class _Datagrams(asyncio.DatagramProtocol):
    """Received datagrams, queued for the one request waiting."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.lost: Exception | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.lost = exc  # e.g. ICMP port unreachable: the next wait reports it
        self.queue.put_nowait(b"")


class SlmpConnection:
    """One TCP connection or UDP socket to a PLC, one request at a time; see the module
    docstring. Errors: :class:`SlmpEndCodeError` (the PLC refused), SlmpTimeoutError,
    SlmpConnectionError, SlmpFrameError."""

    def __init__(self, config: SlmpEndpointConfig) -> None:
        self.config = config
        self.connects = 0
        self._lock = asyncio.Lock()
        self._serial = 0
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._udp: tuple[asyncio.DatagramTransport, _Datagrams] | None = None

    async def read(self, device: Device, start: int, points: int) -> list[int]:
        """Batch-read ``points`` words, or bits (0/1) of a bit device, from ``start``."""
        config = self.config
        async with self._lock:
            self._serial = (self._serial + 1) % 0x10000
            serial = self._serial if config.frame == "4e" else None
            request = encode_read(
                config.frame,
                device,
                start,
                points,
                route=config.route,
                serial=self._serial,
                timer_250ms=config.timer_250ms,
            )
            try:
                async with asyncio.timeout(config.timeout_s):
                    raw = await self._exchange(request, serial)
                data = checked_data(decode_response(config.frame, raw), serial)
                return [int(b) for b in bits(data, points)] if device.bits else words(data, points)
            except TimeoutError as exc:
                self._drop()
                raise SlmpTimeoutError(f"no answer within {config.timeout_s:g} s") from exc
            except (OSError, asyncio.IncompleteReadError) as exc:
                self._drop()
                detail = str(exc) or type(exc).__name__
                raise SlmpConnectionError(f"{config.endpoint}: {detail}") from exc
            except SlmpFrameError:
                self._drop()  # out of step with the PLC: start afresh
                raise

    async def _exchange(self, request: bytes, serial: int | None) -> bytes:
        if self.config.transport == "udp":
            return await self._udp_exchange(request, serial)
        return await self._tcp_exchange(request)

    async def _tcp_exchange(self, request: bytes) -> bytes:
        if self._stream is None:
            self._stream = await asyncio.open_connection(self.config.host, self.config.port)
            self.connects += 1
        reader, writer = self._stream
        writer.write(request)
        await writer.drain()
        size = HEAD_SIZE[self.config.frame]
        head = await reader.readexactly(size)
        return head + await reader.readexactly(data_length(self.config.frame, head))

    async def _udp_exchange(self, request: bytes, serial: int | None) -> bytes:
        if self._udp is None:
            loop = asyncio.get_running_loop()
            self._udp = await loop.create_datagram_endpoint(
                _Datagrams, remote_addr=(self.config.host, self.config.port)
            )
            self.connects += 1
        transport, datagrams = self._udp
        while not datagrams.queue.empty():  # late answers to requests that timed out
            datagrams.queue.get_nowait()
        transport.sendto(request)
        while True:
            raw = await datagrams.queue.get()
            if datagrams.lost is not None:
                lost, datagrams.lost = datagrams.lost, None
                raise lost if isinstance(lost, OSError) else OSError(str(lost))
            response = decode_response(self.config.frame, raw)
            if serial is None or response.serial == serial:
                return raw
            log.debug(
                "slmp %s: discarded the answer to serial %s", self.config.endpoint, response.serial
            )

    def _drop(self) -> None:
        """Forget the connection; the next request connects again."""
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None
        if self._udp is not None:
            self._udp[0].close()
            self._udp = None

    async def aclose(self) -> None:
        async with self._lock:
            stream = self._stream
            self._drop()
            if stream is not None:
                with contextlib.suppress(OSError):
                    await stream[1].wait_closed()


class SlmpSource:
    """One PLC as a :class:`~kyoso.gateway.source.Source`; see the module docstring.
    Polls run one at a time."""

    def __init__(self, config: SlmpConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.connection = SlmpConnection(config)
        self.plan: tuple[SlmpRead, ...] = plan_reads(config)
        self.stats = SlmpStats()
        self.breaker = CircuitBreaker.configured(config, clock)
        self._clock = clock
        self._polling = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.endpoint

    async def poll(self) -> Polled:
        """Read every field once; never raises for a PLC fault."""
        async with self._polling:
            self.stats.polls += 1
            reading = await self._poll()
            self.stats.connects = self.connection.connects
            return reading

    async def _poll(self) -> Polled:
        if not self.breaker.allow():
            left = Missing(
                SlmpMissingReason.CIRCUIT_OPEN, f"{self.breaker.remaining_s():.1f} s left"
            )
            self.stats.errors[left.key] += 1
            return Polled({}, dict.fromkeys(self.config.fields, left))
        values: dict[str, Value] = {}
        missing: dict[str, Missing] = {}
        pending = list(self.plan)
        while pending:
            read = pending.pop(0)
            self.stats.requests += 1
            try:
                data = await self.connection.read(read.device, read.start, read.points)
            except SlmpEndCodeError as exc:
                self.stats.answers += 1
                refusal = Missing(SlmpMissingReason.END_CODE, end_code=exc.end_code)
                self.stats.errors[refusal.key] += 1
                if exc.end_code == _BEYOND_RANGE and len(read.fields) > 1:
                    pending[:0] = self._split(read)
                else:
                    missing.update((name, refusal) for name, _ in read.fields)
                continue
            except SlmpError as exc:
                failure = _missing_for(exc)
                self.stats.errors[failure.key] += 1
                for name in self.config.fields:
                    if name not in values and name not in missing:
                        missing[name] = failure
                self._failed(failure)
                return Polled(values, missing)
            self.stats.answers += 1
            self._decode(read, data, values, missing)
        self.breaker.success()
        return Polled(values, missing)

    def _decode(
        self, read: SlmpRead, data: list[int], values: dict[str, Value], missing: dict[str, Missing]
    ) -> None:
        for name, f in read.fields:
            begin = f.address.number - read.start
            try:
                values[name] = decode(
                    f, name, data[begin : begin + f.points], self.config.word_order
                )
            except DecodeError as exc:
                missing[name] = Missing(SlmpMissingReason.DECODE, str(exc))

    def _split(self, read: SlmpRead) -> list[SlmpRead]:
        """A read that met 0xC056 as one read per field, in the plan for good."""
        parts = [
            SlmpRead(read.device, f.address.number, f.points, ((name, f),))
            for name, f in read.fields
        ]
        index = self.plan.index(read)
        self.plan = self.plan[:index] + tuple(parts) + self.plan[index + 1 :]
        log.info(
            "slmp %s: %s is beyond a device range; reading its fields one by one", self.name, read
        )
        return parts

    def _failed(self, failure: Missing) -> None:
        if self.breaker.failure():
            self.stats.circuit_opens += 1
            log.warning(
                "slmp %s: circuit open after %d failed polls (last: %s); trial in %g s",
                self.name,
                self.breaker.failures,
                failure,
                self.config.open_s,
            )

    async def aclose(self) -> None:
        """Close the connection."""
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


def _missing_for(exc: SlmpError) -> Missing:
    if isinstance(exc, SlmpTimeoutError):
        return Missing(SlmpMissingReason.TIMEOUT, str(exc))
    if isinstance(exc, SlmpConnectionError):
        return Missing(SlmpMissingReason.CONNECTION, str(exc))
    return Missing(SlmpMissingReason.INVALID_RESPONSE, str(exc))
