"""Acceptance of the ingest into a real InfluxDB: exactly once through crashes and an outage,
one bad line in a batch, and hostile input that never crashes it nor leaves the schema."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingestkit import (
    IngestThread,
    Publisher,
    gateway_messages,
    running_ingest,
    settings_for,
    wait_until,
)
from services import InfluxDB, Mosquitto

from kyoso.contract import MachineState, samples_topic
from kyoso.influx.client import InfluxConfig
from kyoso.ingest.deadletter import DeadLetterStore

pytestmark = pytest.mark.integration

START = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
SCHEMA_FIELD = re.compile(
    r"(seq|session|interval_s|state|start_ns|received_ns|zero_states|alarm|missing"
    r"|(running|setup|down|idle|planned_stop|unknown)_s"
    r"|[a-z0-9][a-z0-9_-]*_(delta|total|last|mean|min|max|count))$"
)
ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}$")


def _count(influx: InfluxDB, database: str) -> dict[str, tuple[int, int]]:
    """(points, sum of seq) per machine."""
    answer = influx.query('SELECT COUNT("seq"), SUM("seq") FROM samples GROUP BY machine', database)
    rows: dict[str, tuple[int, int]] = {}
    for series in answer["results"][0].get("series", []):
        [[_, count, total]] = series["values"]
        rows[series["tags"]["machine"]] = (count, total)
    return rows


def _databases(influx: InfluxDB, prefix: str) -> list[str]:
    answer = influx.query("SHOW DATABASES")
    names = [row[0] for row in answer["results"][0]["series"][0]["values"]]
    return sorted(n for n in names if n.startswith(prefix))


# --- exactly once ---------------------------------------------------------------------------


class _PacedPublisher(threading.Thread):
    """Publishes messages at a steady rate over ``seconds``, then waits for every PUBACK."""

    def __init__(self, broker: Mosquitto, messages: list[tuple[str, bytes]], seconds: float):
        super().__init__(daemon=True)
        self.publisher = Publisher(broker)
        self.messages = messages
        self.seconds = seconds
        self.done = threading.Event()

    def run(self) -> None:
        begin = time.monotonic()
        for i, (topic, payload) in enumerate(self.messages):
            due = begin + self.seconds * i / len(self.messages)
            time.sleep(max(0.0, due - time.monotonic()))
            self.publisher.publish(topic, payload)
        self.publisher.close()
        self.done.set()


def _ingest_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kyoso.cli", "ingest"], env=env, stdout=out, stderr=out
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "outage_s",
    [
        pytest.param(30, id="outage-30s"),
        pytest.param(120, id="outage-2min", marks=pytest.mark.long),
    ],
)
def test_100k_samples_exactly_once_through_three_crashes_and_an_influxdb_outage(
    mosquitto_factory: Callable[..., Mosquitto],
    influxdb_factory: Callable[..., InfluxDB],
    tmp_path: Path,
    outage_s: int,
) -> None:
    """F1 (the ingest SIGKILLed three times mid-stream) and F2 (InfluxDB stopped for
    ``outage_s``): every one of 100,000 samples stored exactly once, nothing dead-lettered."""
    broker = mosquitto_factory()
    influx = influxdb_factory()
    fleet = [
        ("okada", "gw-1"),
        ("okada", "gw-2"),
        ("sato", "gw-1"),
        ("mori", "gw-1"),
        ("ueda", "gw-9"),
    ]
    machines = [f"m{i:02d}" for i in range(20)]
    messages: list[tuple[str, bytes]] = []
    for factory, gateway in fleet:
        # Gateways of one factory name their machines apart, as a factory's ids are unique.
        names = [f"{gateway}-{m}" for m in machines]
        messages += gateway_messages(factory, gateway, names, 1000, START)
    messages.sort(key=lambda m: json.loads(m[1])["samples"][0]["ts"])  # interleave gateways
    assert sum(len(json.loads(p)["samples"]) for _, p in messages) == 100_000

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KYOSO_INGEST_STORE": "influxdb",
        "KYOSO_INGEST_INFLUX__URL": influx.url,
        "KYOSO_INGEST_INFLUX__MAX_RETRY_TIME_S": "2",
        "KYOSO_INGEST_MQTT__HOST": broker.host,
        "KYOSO_INGEST_MQTT__PORT": str(broker.port),
        "KYOSO_INGEST_MQTT__CLIENT_ID": "acceptance-ingest",
        "KYOSO_INGEST_BATCH__RETRY_MAX_S": "2",
        "KYOSO_INGEST_DEAD_LETTER_PATH": str(tmp_path / "dead-letters.sqlite3"),
        "KYOSO_INGEST_HTTP__PORT": "0",
    }
    log = tmp_path / "ingest.log"
    ingest = _ingest_process(env, log)
    wait_until(lambda: "(session new)" in log.read_text(), what="the ingest to connect")
    publisher = _PacedPublisher(broker, messages, seconds=40)
    publisher.start()
    try:
        for _ in range(3):  # killed mid-stream, three times, and started again
            time.sleep(6)
            ingest.send_signal(signal.SIGKILL)
            ingest.wait(10)
            time.sleep(1)
            ingest = _ingest_process(env, log)
        time.sleep(5)
        influx.stop()
        time.sleep(outage_s)
        influx.start()
        assert publisher.done.wait(120)

        databases = ["kyoso_mori", "kyoso_okada", "kyoso_sato", "kyoso_ueda"]

        def total() -> int:
            present = _databases(influx, "kyoso_")
            return sum(n for db in present for n, _ in _count(influx, db).values())

        wait_until(lambda: total() >= 100_000, timeout=180, what="every sample in InfluxDB")
    finally:
        ingest.send_signal(signal.SIGTERM)
        code = ingest.wait(60)
    assert code == 0, log.read_text()[-3000:]
    assert _databases(influx, "kyoso_") == databases
    expected_seq_sum = sum(range(1, 20 * 1000 + 1))  # seq runs over a gateway's machines
    for factory in ("mori", "okada", "sato", "ueda"):
        counts = _count(influx, f"kyoso_{factory}")
        gateways = [g for f, g in fleet if f == factory]
        assert sorted(counts) == sorted(f"{g}-{m}" for g in gateways for m in machines)
        assert all(n == 1000 for n, _ in counts.values()), counts
        assert sum(s for _, s in counts.values()) == expected_seq_sum * len(gateways)
    text = log.read_text()
    assert text.count("(session resumed)") >= 3, "the restarts must resume the session"
    assert "retrying" in text, "the outage must have been noticed and retried"
    assert not (tmp_path / "dead-letters.sqlite3").exists() or _no_letters(
        tmp_path / "dead-letters.sqlite3"
    )


def _no_letters(path: Path) -> bool:
    store = DeadLetterStore(path)
    try:
        return store.counts() == {}
    finally:
        store.close()


# --- one bad line ---------------------------------------------------------------------------


@pytest.fixture
def influx_config(influxdb: InfluxDB) -> Iterator[InfluxConfig]:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield InfluxConfig(url=influxdb.url, database_prefix=prefix)
    for name in _databases(influxdb, prefix):
        influxdb.drop_database(name)


class _Overloaded(ThreadingHTTPServer):
    """InfluxDB behind a proxy that answers the first write 503 with ``Retry-After``."""

    def __init__(self, upstream: str, retry_after_s: int) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.retry_after_s = retry_after_s
        self.writes: list[tuple[float, int]] = []  # (monotonic time, status answered)
        super().__init__(("127.0.0.1", 0), _Forward)


class _Forward(BaseHTTPRequestHandler):
    server: _Overloaded

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/write") and not self.server.writes:
            self.server.writes.append((time.monotonic(), 503))
            self.send_response(503)
            self.send_header("Retry-After", str(self.server.retry_after_s))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection(self.server.upstream.netloc, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        upstream.request(self.command, self.path, body, headers)
        answer = upstream.getresponse()
        data = answer.read()
        if self.path.startswith("/write"):
            self.server.writes.append((time.monotonic(), answer.status))
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_ingest_waits_as_long_as_influxdb_asks_and_counts_the_retry(
    mosquitto_factory: Callable[..., Mosquitto],
    influx_config: InfluxConfig,
    tmp_path: Path,
) -> None:
    """One place times the retries: the writer makes one attempt, the ingest waits at least
    the Retry-After InfluxDB names (a lower bound: a loaded machine only waits longer)."""
    broker = mosquitto_factory()
    proxy = _Overloaded(influx_config.url, retry_after_s=2)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        influx = influx_config.model_copy(update={"url": url})
        settings = settings_for(broker, tmp_path, store="influxdb", influx=influx)
        messages = gateway_messages("okada", "gw-1", ["m1", "m2"], 5, START)
        publisher = Publisher(broker)
        with running_ingest(settings) as worker:
            ingest = worker.ingest
            assert ingest is not None
            publisher.publish_all(messages)
            wait_until(lambda: ingest.stats.acked == len(messages), what="every acknowledgement")
            assert ingest.stats.samples_written == 10
            assert ingest.stats.store_retries == 1
            assert ingest.stats.store_errors == {"StoreUnavailableError": 1}
        publisher.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
    (first, refused), *after = proxy.writes
    assert refused == 503
    assert after
    assert after[0][0] - first >= 2.0  # not before the time InfluxDB named


def test_one_line_influxdb_refuses_is_dead_lettered_and_the_rest_written(
    mosquitto_factory: Callable[..., Mosquitto],
    influxdb: InfluxDB,
    influx_config: InfluxConfig,
    tmp_path: Path,
) -> None:
    broker = mosquitto_factory()
    database = f"{influx_config.database_prefix}okada"
    influxdb.create_database(database)
    # `odd_delta` exists as a string in the samples' shard (field types are per shard): an
    # integer odd_delta in a sample is a type conflict.
    seed_ns = int(START.timestamp()) * 10**9 + 1
    influxdb.write(database, f'samples,gateway=gw-0,machine=seed odd_delta="text" {seed_ns}')
    messages = gateway_messages("okada", "gw-1", ["m1", "m2", "m3"], 10, START)
    odd = json.loads(messages[4][1])
    odd["samples"][1]["counters"]["odd"] = {"delta": 1}
    messages[4] = (messages[4][0], json.dumps(odd).encode())
    settings = settings_for(broker, tmp_path, store="influxdb", influx=influx_config)
    publisher = Publisher(broker)
    with running_ingest(settings) as worker:
        ingest = worker.ingest
        assert ingest is not None
        publisher.publish_all(messages)
        wait_until(lambda: ingest.stats.acked == len(messages), what="every acknowledgement")
        letters = worker.dead_letters.letters()
    publisher.close()
    assert [letter.reason for letter in letters] == ["store"]
    assert "machine=m2 seq=14" in letters[0].detail
    assert "conflict" in letters[0].detail
    counts = _count(influxdb, database)
    assert {m: n for m, (n, _) in counts.items() if m != "seed"} == {"m1": 10, "m2": 9, "m3": 10}


# --- hostile input --------------------------------------------------------------------------

_NASTY = st.sampled_from([",", " ", "=", '"', "'", "\n", "\\", "\r", "\x00", "é", "#", "/"])
_NASTY_TEXT = st.lists(st.one_of(_NASTY, st.sampled_from("ab1-_")), min_size=1, max_size=12).map(
    "".join
)
# A topic level: no wildcards, separators or control characters (the broker would drop the
# publisher's connection), but everything that matters to line protocol.
_NASTY_LEVEL = st.lists(
    st.sampled_from([",", " ", "=", '"', "'", "\\", "é", "A", "a", "1"]), min_size=1, max_size=12
).map("".join)


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def _hostile(draw: st.DrawFn) -> tuple[str, bytes]:
    """A topic under the ingest's subscriptions and a payload meant to break something."""
    factory = draw(st.one_of(st.just("okada"), _NASTY_LEVEL))
    topic = samples_topic("okada", "gw-1").replace("okada", factory, 1)
    base = json.loads(gateway_messages("okada", "gw-1", ["m1"], 1, START)[0][1])
    sample = base["samples"][0]
    kind = draw(st.sampled_from(["bytes", "deep", "giant", "ids", "names", "values"]))
    if kind == "bytes":
        return topic, draw(st.binary(max_size=2000))
    if kind == "deep":
        return topic, _deep(draw(st.integers(10, 100_000)))
    if kind == "giant":
        sample["machine"] = "m" * draw(st.integers(64, 300_000))
    elif kind == "ids":
        for key in draw(st.sets(st.sampled_from(["factory", "gateway", "session"]), min_size=1)):
            base[key] = draw(_NASTY_TEXT)
        sample["machine"] = draw(st.one_of(st.just("m1"), _NASTY_TEXT))
    elif kind == "names":
        sample["counters"] = {draw(_NASTY_TEXT): {"delta": 1}}
        sample["signals"] = {
            draw(_NASTY_TEXT): {"last": 1.0, "mean": 1.0, "min": 1.0, "max": 1.0, "count": 1}
        }
        sample["missing"] = [draw(_NASTY_TEXT)]
    else:
        sample["durations_s"] = {draw(_NASTY_TEXT): sample["interval_s"]}
        sample["state"] = draw(
            st.one_of(_NASTY_TEXT, st.sampled_from([s.value for s in MachineState]))
        )
        sample["interval_s"] = draw(st.one_of(st.floats(), st.integers(), st.text(max_size=5)))
    return topic, json.dumps(base, allow_nan=True).encode(errors="surrogatepass")


@pytest.fixture
def hostile_target(
    mosquitto_factory: Callable[..., Mosquitto], influx_config: InfluxConfig, tmp_path: Path
) -> Iterator[tuple[IngestThread, Publisher, InfluxConfig]]:
    broker = mosquitto_factory()
    settings = settings_for(broker, tmp_path, store="influxdb", influx=influx_config)
    publisher = Publisher(broker)
    with running_ingest(settings) as worker:
        yield worker, publisher, influx_config
    publisher.close()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=st.lists(_hostile(), min_size=1, max_size=5))
def test_hostile_input_never_crashes_the_ingest_nor_leaves_the_schema(
    hostile_target: tuple[IngestThread, Publisher, InfluxConfig],
    influxdb: InfluxDB,
    messages: list[tuple[str, bytes]],
) -> None:
    worker, publisher, config = hostile_target
    ingest = worker.ingest
    assert ingest is not None
    for topic, payload in messages:
        publisher.publish(topic, payload)
    # A good message after them is written: the ingest is alive and not stuck.
    marker = f"s{uuid.uuid4().hex[:8]}"
    good = gateway_messages(
        "okada", "gw-1", ["m1"], 1, START + timedelta(seconds=1), session=marker
    )
    publisher.publish_all(good)
    database = f"{config.database_prefix}okada"
    query = f"SELECT COUNT(seq) FROM samples WHERE session = '{marker}'"  # noqa: S608 (hex)
    wait_until(
        lambda: bool(influxdb.query(query, database, check=False)["results"][0].get("series")),
        what="the good message after the hostile ones",
    )
    for name in _databases(influxdb, config.database_prefix):
        assert ID.match(name.removeprefix(config.database_prefix)), name
        results = influxdb.query("SHOW MEASUREMENTS; SHOW TAG KEYS; SHOW FIELD KEYS", name)[
            "results"
        ]
        measurements = {v[0] for s in results[0].get("series", []) for v in s["values"]}
        assert measurements <= {"samples", "machines", "gateway_status", "gaps"}, measurements
        tags = {v[0] for s in results[1].get("series", []) for v in s["values"]}
        assert tags <= {"gateway", "machine"}, tags
        fields = {
            v[0]
            for s in results[2].get("series", [])
            for v in s["values"]
            if s["name"] == "samples"
        }
        assert all(SCHEMA_FIELD.match(f) for f in fields), fields
        for tag in ("gateway", "machine"):
            answer = influxdb.query(f'SHOW TAG VALUES WITH KEY = "{tag}"', name)["results"][0]
            values = {v[1] for s in answer.get("series", []) for v in s["values"]}
            assert all(ID.match(v) for v in values), values
