"""The InfluxDB writer and reader against a real InfluxDB 1.6.7.

Everything here talks to the real server (fixtures from tests/services.py), including the
status codes it can be made to return: 400 partial writes, 401/403, 404, 413 (a small
``max-body-size``) and 503 (its write throttle, held by a stalled request). A scripted
local HTTP stub is used only for what InfluxDB 1.x never sends: ``429`` and the
``Retry-After`` header (in seconds and as an HTTP date), and for the ``Authorization:
Token`` header of 2.x/3.x, which 1.x refuses.
"""

import asyncio
import email.utils
import gzip
import http.server
import logging
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError
from services import InfluxDB, free_port

from kyoso.contract import Counter, MachineState, Sample, SignalStats
from kyoso.influx.client import (
    InfluxAuthError,
    InfluxConfig,
    InfluxPermanentError,
    InfluxQueryError,
    InfluxRetryableError,
    InfluxWriter,
    WriteResult,
    _loopback,
)
from kyoso.influx.lineprotocol import line, sample_point, timestamp_ns

T = TypeVar("T")
T0 = datetime(2026, 1, 12, 23, 0, tzinfo=UTC)
SESSION = "0f8e6c1a-4b7d-4e2a-9c35-7a1d2b3c4d5e"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def config(url: str, **overrides: Any) -> InfluxConfig:
    settings: dict[str, Any] = {
        "url": url,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.5,
        "max_retry_time_s": 30.0,
    }
    return InfluxConfig(**(settings | overrides))


def sample(seq: int, machine: str = "imm-01", alarm: int | None = 240) -> Sample:
    return Sample(
        machine=machine,
        seq=seq,
        ts=T0 + timedelta(minutes=seq),
        interval_s=60.0,
        state=MachineState.RUNNING,
        durations_s={MachineState.RUNNING: 52.5, MachineState.DOWN: 7.5},
        counters={"good": Counter(delta=seq, total=2**64 - 1)},
        signals={"power_kw": SignalStats(last=3.1, mean=12.4, min=3.1, max=15.2, count=60)},
        alarm=alarm,
    )


def sample_lines(count: int, start: int = 0) -> list[str]:
    return [sample_point("mori", "gw-01", SESSION, sample(start + i)) for i in range(count)]


async def write(cfg: InfluxConfig, database: str, lines: list[str]) -> WriteResult:
    async with InfluxWriter(cfg) as writer:
        return await writer.write(database, lines)


def count(influxdb: InfluxDB, database: str) -> int:
    answer = influxdb.query('SELECT count("seq") FROM "samples"', database)
    series = answer["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


# --- round trips ------------------------------------------------------------------------


@pytest.mark.integration
def test_samples_round_trip_exactly(influxdb: InfluxDB, influxdb_database: str) -> None:
    points = [sample(1), sample(2, machine="cnc-02", alarm=None)]

    async def scenario() -> tuple[WriteResult, list[dict[str, Any]], list[dict[str, Any]]]:
        # Compressed both ways, as to an InfluxDB on another machine.
        async with InfluxWriter(config(influxdb.url, gzip=True)) as writer:
            lines = [sample_point("mori", "gw-01", SESSION, s) for s in points]
            result = await writer.write(influxdb_database, lines)
            rows = await writer.query(
                influxdb_database,
                "SELECT * FROM samples WHERE gateway = $gw GROUP BY machine",
                {"gw": "gw-01"},
            )
            rfc3339 = await writer.query(
                influxdb_database, "SELECT seq FROM samples WHERE machine = 'imm-01'", epoch=None
            )
            return result, rows, rfc3339

    result, rows, rfc3339 = run(scenario())
    assert result == WriteResult(written=2, rejected=(), requests=1)
    by_machine = {row["machine"]: row for row in rows}
    imm = by_machine["imm-01"]
    assert imm["time"] == timestamp_ns(points[0].ts)
    assert (imm["seq"], imm["session"], imm["state"], imm["alarm"]) == (1, SESSION, "running", 240)
    assert (float(imm["interval_s"]), imm["running_s"], imm["down_s"]) == (60.0, 52.5, 7.5)
    assert (imm["good_delta"], imm["good_total"]) == (1, -1)  # 2**64 - 1, reinterpreted
    assert [imm[f"power_kw_{k}"] for k in ("last", "mean", "min", "max", "count")] == [
        3.1,
        12.4,
        3.1,
        15.2,
        60,
    ]
    assert by_machine["cnc-02"]["alarm"] is None
    assert rfc3339 == [{"time": "2026-01-12T23:01:00Z", "seq": 1}]


@pytest.mark.integration
def test_rewriting_a_point_overwrites_it(influxdb: InfluxDB, influxdb_database: str) -> None:
    lines = sample_lines(5)
    cfg = config(influxdb.url)
    run(write(cfg, influxdb_database, lines))
    run(write(cfg, influxdb_database, lines[2:] + lines))
    assert count(influxdb, influxdb_database) == 5


@pytest.mark.integration
def test_writes_are_chunked_by_lines_and_bytes(influxdb: InfluxDB, influxdb_database: str) -> None:
    lines = sample_lines(35)
    by_lines = run(write(config(influxdb.url, max_batch_lines=10), influxdb_database, lines))
    assert (by_lines.written, by_lines.requests) == (35, 4)
    limit, total, longest = 2048, sum(len(x) + 1 for x in lines), max(len(x) + 1 for x in lines)
    by_bytes = run(write(config(influxdb.url, max_batch_bytes=limit), influxdb_database, lines))
    assert by_bytes.written == 35
    assert -(-total // limit) <= by_bytes.requests <= -(-total // (limit - longest))
    assert count(influxdb, influxdb_database) == 35


# --- partial writes ---------------------------------------------------------------------

CONFLICT = (
    'partial write: field type conflict: input field "alarm" on measurement "samples" '
    "is type string, already exists as type integer dropped=1"
)


@pytest.mark.integration
def test_partial_write_rejects_exactly_the_bad_lines(
    influxdb: InfluxDB, influxdb_database: str
) -> None:
    """A type conflict hides parse errors from 1.x's answer; both are still found."""
    cfg = config(influxdb.url)
    run(write(cfg, influxdb_database, sample_lines(1)))  # alarm is an integer field now
    lines = sample_lines(10, start=100)
    conflicting = line(
        "samples", {"gateway": "gw-01", "machine": "x"}, {"seq": 1, "alarm": "E-240"}, T0
    )
    lines.insert(3, conflicting)
    lines.insert(7, "samples,gateway=gw-01 seq=")
    result = run(write(cfg, influxdb_database, lines))
    assert result.written == 10
    assert [(r.index, r.line) for r in result.rejected] == [
        (3, conflicting),
        (7, "samples,gateway=gw-01 seq="),
    ]
    assert result.rejected[0].reason == CONFLICT
    assert result.rejected[1].reason == "unable to parse: missing field value"
    assert result.requests > 1  # found by halves
    assert count(influxdb, influxdb_database) == 11


@pytest.mark.integration
def test_lines_named_by_the_server_cost_no_extra_request(
    influxdb: InfluxDB, influxdb_database: str
) -> None:
    lines = sample_lines(5)
    bad = ["samples,gateway=gw-01 seq=", "garbage", 'samples s="it\'s": ok" 1']
    result = run(write(config(influxdb.url), influxdb_database, [bad[0], *lines, *bad[1:]]))
    assert (result.written, result.requests) == (5, 1)
    assert [(r.index, r.reason) for r in result.rejected] == [
        (0, "unable to parse: missing field value"),
        (6, "unable to parse: missing fields"),
        (7, "unable to parse: bad timestamp"),
    ]
    only_bad = run(write(config(influxdb.url), influxdb_database, bad[:2]))
    assert (only_bad.written, len(only_bad.rejected), only_bad.requests) == (0, 2, 1)
    assert count(influxdb, influxdb_database) == 5


def test_broken_lines_are_rejected_before_sending() -> None:
    cfg = config(f"http://127.0.0.1:{free_port()}", max_retry_time_s=0)
    result = run(write(cfg, "db", ["", "a f=1i\nb f=2i", "a f=\ud800"]))
    assert (result.written, result.requests) == (0, 0)
    assert [r.index for r in result.rejected] == [0, 1, 2]


# --- 413, 404 ---------------------------------------------------------------------------


@pytest.mark.integration
def test_413_splits_the_batch_and_rejects_a_line_too_large_alone(
    influxdb_factory: Callable[..., InfluxDB],
) -> None:
    server = influxdb_factory(overrides={"http": {"max-body-size": 2000}})
    server.create_database("d")
    lines = sample_lines(40)  # about 12 kB
    huge = line("samples", {"gateway": "gw-01", "machine": "big"}, {"note": "x" * 3000}, T0)
    plain = config(server.url, gzip=False)
    result = run(write(plain, "d", [*lines[:20], huge, *lines[20:]]))
    assert result.written == 40
    assert [(r.index, r.reason) for r in result.rejected] == [
        (20, "HTTP 413, line too large: Request Entity Too Large")
    ]
    assert result.requests > 2
    assert count(server, "d") == 40

    # 1.6.7 applies max-body-size to the bytes on the wire: the same lines gzipped fit in
    # one request, which shows that the body was compressed and the server took it.
    zipped = run(write(config(server.url, gzip=True), "d", sample_lines(40, start=1000)))
    assert (zipped.written, zipped.requests) == (40, 1)
    assert len(gzip.compress("\n".join(lines).encode(), 1)) < 2000 < len("\n".join(lines))
    assert count(server, "d") == 80


@pytest.mark.integration
def test_a_missing_database_is_created_or_refused(influxdb: InfluxDB) -> None:
    database = f"test_{uuid.uuid4().hex}"
    refused = config(influxdb.url, create_databases=False)
    with pytest.raises(InfluxPermanentError, match="does not exist") as error:
        run(write(refused, database, sample_lines(1)))
    assert error.value.status == 404
    try:
        result = run(write(config(influxdb.url), database, sample_lines(3)))
        assert (result.written, result.requests) == (3, 2)  # 404, CREATE DATABASE, 204
        assert count(influxdb, database) == 3
    finally:
        influxdb.drop_database(database)


EDGE_SEQ = 8700
"""``sample(EDGE_SEQ).ts`` is 2026-01-19T00:00Z, where two 7-day shard groups meet (1.x
aligns them on Mondays)."""


@pytest.mark.integration
def test_first_writes_racing_to_new_databases_lose_nothing(influxdb: InfluxDB) -> None:
    """Every point a write reports written is stored, however the first writes to a new
    database interleave with each other's 404s and CREATE DATABASE statements.

    In each round two writers (two ingest workers) race to three new databases. Per
    database, a first wave of calls from both starts within a few milliseconds: 404s,
    CREATE DATABASE from each writer, the writes again (a later call may find the database
    made). A second wave starts as soon as one call of the first has returned: it goes
    straight in while the others may still be creating the database. A late CREATE
    DATABASE lands on the database being written. The calls write the same series at
    disjoint times on both sides of a shard-group edge (one call straddles it), so shard
    groups, shards and series are created by racing calls too. Rounds alternate gzip
    between the writers, and the default retention policy with an explicit ``autogen``.
    """
    rounds, databases, first_wave, second_wave, size = 20, 3, 6, 4, 60
    calls = first_wave + second_wave
    jitter = random.Random(20260112)  # spreads some calls; the checks do not depend on it
    # Call k writes slot (3 k) mod 10 of ten slots around the edge: each wave has both sides,
    # and slot 5 straddles the edge.
    starts = [EDGE_SEQ + ((3 * k) % calls - calls // 2) * size - size // 2 for k in range(calls)]
    seqs = [range(start, start + size) for start in starts]
    batches = [
        [sample_point("mori", "gw-01", SESSION, sample(seq, f"m{seq % 10}")) for seq in slot]
        for slot in seqs
    ]
    created: list[str] = []

    async def call(
        writer: InfluxWriter, database: str, k: int, landed: asyncio.Event
    ) -> WriteResult:
        if k >= first_wave:
            await landed.wait()
        if k >= 4:  # the first four start together, the others a few milliseconds apart
            await asyncio.sleep(jitter.uniform(0, 0.005))
        result = await writer.write(database, batches[k])
        landed.set()
        return result

    async def late_create(writer: InfluxWriter, database: str, landed: asyncio.Event) -> None:
        await landed.wait()
        await asyncio.sleep(jitter.uniform(0, 0.005))
        await writer.ensure_database(database)

    async def race(n: int, names: list[str]) -> list[list[WriteResult]]:
        rp = "autogen" if n % 4 >= 2 else None
        zipped = n % 2 == 0
        async with (
            InfluxWriter(config(influxdb.url, gzip=zipped, retention_policy=rp)) as a,
            InfluxWriter(config(influxdb.url, gzip=not zipped, retention_policy=rp)) as b,
        ):

            async def one(database: str) -> list[WriteResult]:
                landed = asyncio.Event()
                late = asyncio.create_task(late_create(b, database, landed))
                writes = (call((a, b)[k % 2], database, k, landed) for k in range(calls))
                results = await asyncio.gather(*writes)
                await late
                return results

            return await asyncio.gather(*(one(database) for database in names))

    raced_creates = 0
    try:
        for n in range(rounds):
            names = [f"race_{uuid.uuid4().hex}" for _ in range(databases)]
            created += names
            for database, results in zip(names, run(race(n, names)), strict=True):
                reported = sum(result.written for result in results)
                stored = count(influxdb, database)
                if stored != reported:
                    answer = influxdb.query('SELECT "seq" FROM "samples"', database)
                    series = answer["results"][0].get("series", [])
                    kept = {row[1] for row in series[0]["values"]} if series else set()
                    pytest.fail(
                        f"round {n}: {database} holds {stored} of the {reported} points "
                        "reported written; missing by call: "
                        f"{ {k: len(set(s) - kept) for k, s in enumerate(seqs) if set(s) - kept} }"
                        f"; requests by call: {[r.requests for r in results]}"
                    )
                assert [(r.written, r.rejected) for r in results] == [(size, ())] * calls
                # The race happened: the first request met no database; the second wave
                # went straight in.
                assert any(r.requests >= 2 for r in results[:first_wave])
                assert [r.requests for r in results[first_wave:]] == [1] * second_wave
                raced_creates += sum(r.requests >= 2 for r in results) >= 2
    finally:
        for database in created:
            influxdb.drop_database(database)
    assert raced_creates > 0  # some database saw two CREATE DATABASE race each other


# --- credentials ------------------------------------------------------------------------


@pytest.mark.integration
def test_credentials(influxdb_factory: Callable[..., InfluxDB]) -> None:
    server = influxdb_factory(auth_enabled=True)
    server.create_database("kyoso_mori")
    server.query("CREATE USER mori WITH PASSWORD 'mori-pw'")
    server.query('GRANT READ ON "kyoso_mori" TO mori')
    admin = config(server.url, username="admin", password=server.admin_password)
    assert run(write(admin, "kyoso_mori", sample_lines(2))).written == 2

    for wrong in (
        config(server.url, username="admin", password="wrong"),  # noqa: S106
        config(server.url, username="nobody", password="x"),  # noqa: S106
        config(server.url),
    ):
        with pytest.raises(InfluxAuthError) as error:
            run(write(wrong, "kyoso_mori", sample_lines(1)))
        assert error.value.status == 401
        assert not isinstance(error.value, InfluxPermanentError)  # never dead-letter

    reader = config(server.url, username="mori", password="mori-pw")  # noqa: S106
    with pytest.raises(InfluxAuthError, match="not authorized to write") as denied:
        run(write(reader, "kyoso_mori", sample_lines(1)))
    assert denied.value.status == 403
    with pytest.raises(InfluxPermanentError, match="may not be created"):
        run(write(reader, "kyoso_other", sample_lines(1)))

    async def read(database: str) -> list[dict[str, Any]]:
        async with InfluxWriter(reader) as writer:
            return await writer.query(database, "SELECT seq FROM samples")

    assert [row["seq"] for row in run(read("kyoso_mori"))] == [0, 1]
    server.create_database("kyoso_okada")
    with pytest.raises(InfluxAuthError, match="requires READ on kyoso_okada"):
        run(read("kyoso_okada"))


# --- an unavailable server --------------------------------------------------------------


@pytest.mark.integration
def test_a_write_outlasts_a_restart(
    influxdb: InfluxDB, influxdb_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[WriteResult, float]:
        async with InfluxWriter(config(influxdb.url)) as writer:
            await writer.write(influxdb_database, sample_lines(1))  # a kept-alive connection
            influxdb.stop()
            restart = threading.Timer(2.0, influxdb.start)
            restart.start()
            try:
                started = time.monotonic()
                result = await writer.write(influxdb_database, sample_lines(10, start=1))
                return result, time.monotonic() - started
            finally:
                restart.join()

    try:
        with caplog.at_level(logging.WARNING, logger="kyoso.influx.client"):
            result, elapsed = run(scenario())
    finally:
        if not influxdb.running:
            influxdb.start()
    assert result.written == 10
    assert result.requests > 1
    assert elapsed >= 1.5
    assert "ConnectionRefusedError" in caplog.text
    assert count(influxdb, influxdb_database) == 11


def test_giving_up_after_max_retry_time() -> None:
    cfg = config(f"http://127.0.0.1:{free_port()}", max_retry_time_s=1.0)  # nothing listens
    started = time.monotonic()
    with pytest.raises(InfluxRetryableError, match="ConnectionRefusedError") as error:
        run(write(cfg, "db", sample_lines(1)))
    assert 0.5 < time.monotonic() - started < 3.0
    assert error.value.status is None


@pytest.mark.integration
def test_503_from_the_write_throttle_is_retried(
    influxdb_factory: Callable[..., InfluxDB], caplog: pytest.LogCaptureFixture
) -> None:
    """1.x's throttle answers 503 while a stalled request holds its only write slot."""
    throttle = {
        "max-concurrent-write-limit": 1,
        "max-enqueued-write-limit": 1,
        "enqueued-write-timeout": "100ms",
    }
    server = influxdb_factory(overrides={"http": throttle})
    server.create_database("d")
    body = b"hog f=1i 1"

    async def scenario() -> WriteResult:
        with socket.create_connection((server.host, server.port)) as hog:
            hog.sendall(
                b"POST /write?db=d HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:4]
            )
            await asyncio.sleep(0.3)
            async with InfluxWriter(config(server.url)) as writer:
                task = asyncio.create_task(writer.write("d", sample_lines(3)))
                await asyncio.sleep(1.0)
                assert not task.done()
                hog.sendall(body[4:])
                assert hog.recv(100).startswith(b"HTTP/1.1 204")
                return await task

    with caplog.at_level(logging.WARNING, logger="kyoso.influx.client"):
        result = run(scenario())
    assert result.written == 3
    assert result.requests >= 3
    assert "HTTP 503: request throttled, exceeds timeout" in caplog.text
    assert count(server, "d") == 3


# --- what only a stub can show ----------------------------------------------------------


class _Stub:
    """A scripted HTTP server: each request gets the next (status, headers, body)."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stub.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, answer = stub.script.pop(0) if stub.script else (204, {}, b"")
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def stub() -> Iterator[Callable[[list[tuple[int, dict[str, str], bytes]]], _Stub]]:
    started: list[_Stub] = []

    def make(script: list[tuple[int, dict[str, str], bytes]]) -> _Stub:
        server = _Stub(script)
        server.thread.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.server.shutdown()
        server.server.server_close()


def test_retry_after_is_honoured_in_seconds_and_as_a_date(
    stub: Callable[[list[tuple[int, dict[str, str], bytes]]], _Stub],
) -> None:
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    server = stub(
        [
            (429, {"Retry-After": "1"}, b'{"error":"slow down"}'),
            (503, {"Retry-After": soon}, b"busy"),
        ]
    )
    cfg = config(server.url, initial_backoff_s=0.01, max_backoff_s=0.01)
    started = time.monotonic()
    result = run(write(cfg, "db", sample_lines(2)))
    elapsed = time.monotonic() - started
    assert (result.written, result.requests) == (2, 3)
    assert elapsed >= 1.9  # 1 s, then until the date (2-3 s after the start, whole seconds)
    assert elapsed < 6.0


def test_a_retry_after_beyond_the_retry_time_gives_up_at_once(
    stub: Callable[[list[tuple[int, dict[str, str], bytes]]], _Stub],
) -> None:
    server = stub([(429, {"Retry-After": "120"}, b"")])
    started = time.monotonic()
    with pytest.raises(InfluxRetryableError) as error:
        run(write(config(server.url, max_retry_time_s=10), "db", sample_lines(1)))
    assert time.monotonic() - started < 2.0
    assert (error.value.status, error.value.retry_after_s) == (429, 120.0)


def test_token_rp_and_gzip_on_the_wire(
    stub: Callable[[list[tuple[int, dict[str, str], bytes]]], _Stub],
) -> None:
    server = stub([])
    cfg = config(
        server.url + "/influx/",
        token="s3cret",  # noqa: S106
        retention_policy="two weeks",
        gzip=True,
    )
    assert run(write(cfg, "kyoso_mori-plastics", sample_lines(2))).written == 2
    [(method, path, headers, body)] = server.requests
    assert (method, path) == (
        "POST",
        "/influx/write?db=kyoso_mori-plastics&precision=ns&rp=two+weeks",
    )
    assert headers["Authorization"] == "Token s3cret"
    assert headers["Content-Encoding"] == headers["Accept-Encoding"] == "gzip"
    assert gzip.decompress(body).decode() == "\n".join(sample_lines(2))


def test_gzip_auto_compresses_only_off_this_machine(
    stub: Callable[[list[tuple[int, dict[str, str], bytes]]], _Stub],
) -> None:
    """Compressing for a loopback InfluxDB costs CPU on both ends and saves nothing."""
    server = stub([])
    assert config(server.url).gzip == "auto"  # the default
    assert run(write(config(server.url), "d", sample_lines(2))).written == 2
    [(_, _, headers, body)] = server.requests
    assert "Content-Encoding" not in headers
    assert headers["Accept-Encoding"] == "identity"
    assert body.decode() == "\n".join(sample_lines(2))
    here = ["localhost", "db.localhost", "127.0.0.1", "127.8.9.10", "::1"]
    away = ["influxdb", "10.0.0.5", "192.168.1.20", "fe80::1", "db.example.org", "localhost.org"]
    assert [_loopback(h) for h in here] == [True] * len(here)
    assert [_loopback(h) for h in away] == [False] * len(away)


# --- queries ----------------------------------------------------------------------------


@pytest.mark.integration
def test_query_errors_raise(influxdb: InfluxDB, influxdb_database: str) -> None:
    async def scenario(q: str) -> list[dict[str, Any]]:
        async with InfluxWriter(config(influxdb.url)) as writer:
            return await writer.query(influxdb_database, q)

    assert run(scenario("SELECT * FROM nothing_here")) == []
    with pytest.raises(InfluxQueryError, match="not compatible"):
        run(scenario("SELECT * FROM samples WHERE time > 'abc'"))
    with pytest.raises(InfluxQueryError, match="HTTP 400"):
        run(scenario("SELEKT 1"))


@pytest.mark.integration
def test_a_query_says_when_it_is_sent(influxdb: InfluxDB, influxdb_database: str) -> None:
    # Called in the thread that sends it, once it has one (not when asked: a caller that
    # counts its data's age from the read does not count the wait for a thread).
    sent: list[str] = []

    async def scenario() -> list[list[dict[str, Any]]]:
        async with InfluxWriter(config(influxdb.url)) as writer:
            return await writer.query_each(
                influxdb_database,
                "SELECT * FROM nothing_here; SELECT * FROM nor_here",
                on_send=lambda: sent.append(threading.current_thread().name),
            )

    assert run(scenario()) == [[], []]
    assert len(sent) == 1
    assert sent[0].startswith("influx-http")


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"token": "t", "username": "u"},
        {"password": "p"},
        {"url": "ftp://host"},
        {"initial_backoff_s": 5, "max_backoff_s": 1},
        {"retry": 3},
    ],
)
def test_bad_configurations_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        InfluxConfig(**settings)


def test_every_setting_has_a_default_and_a_description() -> None:
    for name, info in InfluxConfig.model_fields.items():
        assert info.description, name
        assert not info.is_required(), name
