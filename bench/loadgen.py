"""The load of the API benchmarks: kept-alive HTTP/1.1 connections from one asyncio process
(tens of microseconds of CPU a request), an open loop that sends each request at its
scheduled time and counts latency from then (no coordinated omission), a closed loop, and
each phase's figures (latency quantiles, the server's and this process's CPU)."""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from procstat import cpu_seconds

OK: Final = frozenset({200})


class Connection:
    """One kept-alive HTTP/1.1 connection that sends GETs and reads whole answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> tuple[int, int, str]:
        """The status, body length and ETag of the answer to ``request``."""
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionResetError("the server closed the connection")
        status = int(status_line.split()[1])
        length, etag = 0, ""
        while (line := await self.reader.readline()) not in {b"\r\n", b""}:
            name, _, value = line.partition(b":")
            match name.lower():
                case b"content-length":
                    length = int(value)
                case b"etag":
                    etag = value.strip().decode()
                case b"transfer-encoding":
                    raise ValueError("a chunked answer: not one of the answers measured here")
        if length:
            await self.reader.readexactly(length)
        return status, length, etag

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Connections to the server: an idle one if there is one, else a new one, up to
    ``limit`` open at once (then a request waits for one: its latency still counts from
    when it was due)."""

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self.idle: list[Connection] = []
        self.opened = 0
        self._slots = asyncio.Semaphore(limit)

    async def send(self, request: bytes) -> tuple[int, int, str]:
        async with self._slots:
            if self.idle:
                reused = self.idle.pop()
                try:
                    return await self._send(reused, request)
                except ConnectionResetError:
                    pass  # the server closed it while idle (keep-alive timeout): a new one
            return await self._send(await self._open(), request)

    async def _send(self, connection: Connection, request: bytes) -> tuple[int, int, str]:
        try:
            answer = await connection.send(request)
        except BaseException:
            connection.close()
            raise
        self.idle.append(connection)
        return answer

    async def _open(self) -> Connection:
        self.opened += 1
        return await Connection.open(self.port)

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def get(path: str, port: int, key: str | None = None, etag: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if etag:
        lines.append(f"If-None-Match: {etag}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    latencies_s: list[float] = field(default_factory=list)
    """Of the answers with an expected status."""
    answers: Counter[str] = field(default_factory=Counter)
    """By status, or by the error instead of an answer."""
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    late_s: float = 0.0
    """Open loop: the most a request was sent after its scheduled time."""

    def figures(self) -> dict[str, Any]:
        """The row's figures, for ``--json``."""
        ordered = sorted(self.latencies_s)

        def at(q: float) -> float | None:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None

        return {
            "name": self.name,
            "requests_per_s": len(ordered) / self.wall_s,
            "p50_s": at(0.5),
            "p99_s": at(0.99),
            "max_s": ordered[-1] if ordered else None,
            "server_cpu_pct": 100 * self.server_cpu_s / self.wall_s,
            "client_cpu_pct": 100 * self.client_cpu_s / self.wall_s,
            "answers": dict(self.answers),
            "late_s": self.late_s,
        }

    def row(self) -> str:
        ordered = sorted(self.latencies_s)

        def ms(q: float) -> str:
            return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:8.1f}"

        done = len(ordered)
        figures = f"{ms(0.5)} {ms(0.99)} {1000 * ordered[-1]:8.1f}" if done else " " * 26
        answers = " ".join(f"{k}:{v}" for k, v in sorted(self.answers.items()))
        return (
            f"{self.name:<44} {done / self.wall_s:8.1f} {figures} "
            f"{self.server_cpu_s / self.wall_s:8.0%} {self.client_cpu_s / self.wall_s:8.0%}"
            f"  {answers}"
        )


async def measured(name: str, pid: int, run: Callable[[Phase], Awaitable[None]]) -> Phase:
    phase = Phase(name)
    server, client, wall = cpu_seconds(pid), time.process_time(), time.monotonic()
    await run(phase)
    phase.wall_s = time.monotonic() - wall
    phase.server_cpu_s = cpu_seconds(pid) - server
    phase.client_cpu_s = time.process_time() - client
    return phase


async def timed(
    pool: Pool, request: bytes, phase: Phase, since: float, expected: frozenset[int] = OK
) -> None:
    try:
        async with asyncio.timeout(30):
            status, _, _ = await pool.send(request)
    except (OSError, TimeoutError, ValueError) as exc:
        phase.answers[type(exc).__name__] += 1
        return
    phase.answers[str(status)] += 1
    if status in expected:
        phase.latencies_s.append(time.monotonic() - since)


def open_loop(
    pool: Pool, request: bytes, rate: float, seconds: float
) -> Callable[[Phase], Awaitable[None]]:
    async def run(phase: Phase) -> None:
        start = time.monotonic() + 0.05
        async with asyncio.TaskGroup() as tasks:
            for i in range(int(rate * seconds)):
                scheduled = start + i / rate
                if (delay := scheduled - time.monotonic()) > 0:
                    await asyncio.sleep(delay)
                phase.late_s = max(phase.late_s, time.monotonic() - scheduled)
                tasks.create_task(timed(pool, request, phase, scheduled))

    return run


def closed_loop(
    pool: Pool, request: bytes, connections: int, seconds: float, expected: frozenset[int]
) -> Callable[[Phase], Awaitable[None]]:
    async def worker(phase: Phase, deadline: float) -> None:
        while (now := time.monotonic()) < deadline:
            await timed(pool, request, phase, now, expected)

    async def run(phase: Phase) -> None:
        deadline = time.monotonic() + seconds
        async with asyncio.TaskGroup() as tasks:
            for _ in range(connections):
                tasks.create_task(worker(phase, deadline))

    return run
