"""The MQTT publisher against a real Mosquitto: delivery, outages, last will, refusals, TLS.

Every broker test reads what the broker delivered with its own MQTT 5 subscriber (the
``Collector``) and validates each message with the contract's ``decode``. Gateways get a
fresh factory id per test, so tests sharing the session broker never see each other. No
ingest publishes store receipts here, so the samples the broker took stay in the outbox as
sent (test_gateway_receipts.py: how receipts let them go).
"""

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError
from services import Mosquitto, free_port
from test_gateway_outbox import make_sample

from kyoso.contract import (
    MAX_MESSAGE_BYTES,
    Capability,
    GatewayStatus,
    MachineDescription,
    Process,
    Sample,
    SampleBatch,
    ShiftCalendar,
    decode,
    encode,
    machine_topic,
    status_topic,
)
from kyoso.gateway.batches import encode_batches
from kyoso.gateway.outbox import OutboxConfig, OutboxRow, SqliteOutbox
from kyoso.gateway.publisher import MqttPublisher, PublisherConfig
from kyoso.mqtt import TlsConfig

TESTS = Path(__file__).parent


# --- helpers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    topic: str
    payload: bytes
    retain: bool


class Collector:
    """A subscriber to one gateway's topics that keeps everything it receives.

    ``persistent`` keeps its session (and so the messages queued for it) across a restart
    of a broker with persistence. That takes MQTT 3.1.1: Mosquitto 2.0.11 does not restore
    MQTT 5 sessions (clean start off, session expiry set) from its persistence file, so an
    MQTT 5 subscriber misses what is published after a restart until it subscribes again.
    """

    def __init__(
        self,
        broker: Mosquitto,
        factory: str,
        gateway: str,
        *,
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:12]}",
            protocol=MQTTProtocolVersion.MQTTv311 if persistent else MQTTProtocolVersion.MQTTv5,
            clean_session=False if persistent else None,
        )
        self.client.reconnect_delay_set(1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        topic = f"kyoso/v1/{factory}/{gateway}/#"

        def on_connect(client: mqtt.Client, *args: Any) -> None:
            client.subscribe(topic, qos=1)

        def on_subscribe(*args: Any) -> None:
            self.subscribed.set()

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            item = Received(time.monotonic(), message.topic, bytes(message.payload), message.retain)
            with self._lock:
                self.messages.append(item)

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "collector could not subscribe"

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.messages)

    def batches(self) -> list[tuple[float, SampleBatch]]:
        out = []
        for item in self.received():
            if item.topic.endswith("/samples"):
                message = decode(item.topic, item.payload)  # the ingest's validator
                assert isinstance(message, SampleBatch)
                out.append((item.at, message))
        return out

    def seqs(self) -> list[int]:
        return [s.seq for _, batch in self.batches() for s in batch.samples]

    def statuses(self) -> list[GatewayStatus]:
        out = []
        for item in self.received():
            if item.topic.endswith("/status"):
                message = decode(item.topic, item.payload)
                assert isinstance(message, GatewayStatus)
                out.append(message)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_status(
    broker: Mosquitto, factory: str, gateway: str, **login: str
) -> GatewayStatus | None:
    """The retained status as a new subscriber sees it, or None if there is none."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    if login:
        client.username_pw_set(login["username"], login["password"])
    client.on_connect = lambda c, *a: c.subscribe(status_topic(factory, gateway), qos=1)
    client.on_subscribe = lambda *a: done.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            got.append(bytes(message.payload))

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(5)
        deadline = time.monotonic() + 1.0  # retained messages follow the SUBACK at once
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        client.disconnect()
        client.loop_stop()
    if not got:
        return None
    status = decode(status_topic(factory, gateway), got[-1])
    assert isinstance(status, GatewayStatus)
    return status


async def until(condition: Callable[[], bool], limit_s: float, what: str) -> float:
    """Poll ``condition`` (test code only) until true; return the time it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def new_ids() -> tuple[str, str]:
    return f"test-{uuid.uuid4().hex[:10]}", "gw-01"


def config_for(broker: Mosquitto, factory: str, gateway: str, **options: Any) -> PublisherConfig:
    return PublisherConfig.model_validate(
        {"factory": factory, "gateway": gateway, "host": broker.host, "port": broker.port} | options
    )


def description(factory: str, gateway: str, machine: str = "imm-01") -> MachineDescription:
    return MachineDescription.model_validate(
        {
            "factory": factory,
            "gateway": gateway,
            "machine": machine,
            "name": "180 t injection moulding machine",
            "updated_at": "2026-01-12T22:58:04Z",
            "capabilities": [Capability(process=Process.INJECTION_MOULDING)],
            "calendar": ShiftCalendar(timezone="Asia/Tokyo"),
        }
    )


# --- batches and configuration (no broker) --------------------------------------------------


def test_batches_are_the_contract_encoding_and_respect_every_limit(tmp_path: Path) -> None:
    samples = [make_sample(i, f"m{i % 3}") for i in range(23)]
    rows: list[OutboxRow] = []
    for session, chunk in (("boot-1", samples[:9]), ("boot-2", samples[9:])):
        with SqliteOutbox(OutboxConfig(path=tmp_path / "o.sqlite3"), session=session) as outbox:
            outbox.append(chunk)
            rows = outbox.pending(100)
    row_size = len(rows[0].payload)
    batches = encode_batches(rows, factory="mori", gateway="gw-01", max_samples=5)
    assert [len(b.seqs) for b in batches] == [5, 4, 5, 5, 4]  # split at the session change
    assert [b.session for b in batches] == ["boot-1"] * 2 + ["boot-2"] * 3
    assert [s for b in batches for s in b.seqs] == list(range(23))
    by_seq = {row.seq: row for row in rows}
    for batch in batches:
        expected = SampleBatch(
            factory="mori",
            gateway="gw-01",
            session=batch.session,
            samples=[Sample.model_validate_json(by_seq[s].payload) for s in batch.seqs],
        )
        assert batch.payload == encode(expected)
        assert decode("kyoso/v1/mori/gw-01/samples", batch.payload) == expected
    # The byte limit: 3 samples fit in the head plus 3 rows and 2 commas, not 4.
    head = len(batches[0].payload) - 5 * row_size - 4 - 2  # batch 0: 5 rows of one size
    limit = head + 3 * row_size + 2 + 2
    small = encode_batches(rows[:9], factory="mori", gateway="gw-01", max_bytes=limit)
    assert [len(b.seqs) for b in small] == [3, 3, 3]
    assert all(len(b.payload) <= limit for b in small)
    assert [len(b.payload) for b in small] == [limit] * 3
    # A row too big on its own gets a batch of its own (the publisher refuses it).
    assert [len(b.seqs) for b in encode_batches(rows[:2], factory="m", gateway="g", max_bytes=9)]
    assert MAX_MESSAGE_BYTES // row_size > 1000  # 1000 such samples fit the wire limit


def test_config_is_strict_and_documented() -> None:
    base = {"factory": "mori", "gateway": "gw-01"}
    config = PublisherConfig.model_validate(base)
    assert config.port == 1883
    assert config.max_inflight == 20
    with pytest.raises(ValidationError):
        PublisherConfig.model_validate(base | {"replay_rate": 5})
    with pytest.raises(ValidationError):
        PublisherConfig.model_validate(base | {"gateway": "GW 01"})  # not a contract id
    with pytest.raises(ValidationError):
        PublisherConfig.model_validate(base | {"max_samples_per_batch": 1001})
    with pytest.raises(ValidationError, match="key_file needs"):
        TlsConfig(key_file=Path("client.key"))
    with pytest.raises(ValidationError):
        config.port = 1  # type: ignore[misc]
    for model in (PublisherConfig, TlsConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
            assert not field.is_required() or name in ("factory", "gateway"), name


# --- against a real broker ------------------------------------------------------------------


@pytest.mark.integration
def test_every_sample_arrives_exactly_once_in_seq_order(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    collector = Collector(mosquitto, factory, gateway)
    config = config_for(mosquitto, factory, gateway, max_samples_per_batch=20, max_inflight=3)
    in_flight: list[int] = []

    async def scenario() -> None:
        with SqliteOutbox(OutboxConfig(path=tmp_path / "outbox.sqlite3")) as outbox:
            publisher = MqttPublisher(config, outbox, descriptions=[description(factory, gateway)])
            async with publisher:
                async with asyncio.timeout(10):
                    await publisher.wait_connected()
                stop = asyncio.Event()

                async def watch() -> None:
                    while not stop.is_set():
                        in_flight.append(publisher.stats.in_flight_batches)
                        await asyncio.sleep(0.001)

                watcher = asyncio.create_task(watch())
                # A burst that fills the window, then a steady trickle.
                publisher.submit([make_sample(k, f"m{k % 4}") for k in range(300)])
                for i in range(15, 30):
                    publisher.submit([make_sample(20 * i + k, f"m{k % 4}") for k in range(20)])
                    await asyncio.sleep(0.002 if i % 3 else 0)
                async with asyncio.timeout(20):
                    await publisher.wait_drained()
                stop.set()
                await watcher
                stats = publisher.stats
                assert stats.acked_samples == stats.published_samples == 600
                publisher.set_description(description(factory, gateway, "blow-01"))
                publisher.remove_description("imm-01")
                stopping = time.monotonic()
                assert stats.refused_samples == stats.replayed_samples == 0
                assert stats.last_publish_latency_s is not None
            assert time.monotonic() - stopping < 1.0  # offline status acknowledged at once
            assert outbox.depth() == outbox.unconfirmed() == 600  # no receipt: all kept

    asyncio.run(scenario())
    try:
        asyncio.run(until(lambda: len(collector.seqs()) >= 600, 10, "600 samples"))
        time.sleep(0.3)  # anything extra (a duplicate) would arrive now
        assert collector.seqs() == list(range(600))  # exactly once, in seq order
        assert all(len(batch.samples) <= 20 for _, batch in collector.batches())
        assert max(in_flight) <= 3, "more batches in flight than the window"
        assert max(in_flight) >= 2, "the window was never used: the check proves nothing"
        topics = [m.topic for m in collector.received()]
        first_sample = topics.index(f"kyoso/v1/{factory}/{gateway}/samples")
        # Online status, then the machine description, then samples; offline at the end.
        assert topics[:2] == [
            status_topic(factory, gateway),
            machine_topic(factory, gateway, "imm-01"),
        ]
        assert first_sample == 2
        received = collector.received()
        assert [(m.topic, m.payload) for m in received[-3:-1]] == [
            (
                machine_topic(factory, gateway, "blow-01"),
                encode(description(factory, gateway, "blow-01")),
            ),
            (machine_topic(factory, gateway, "imm-01"), b""),  # deletes the retained description
        ]
        online, offline = collector.statuses()
        assert (online.status, online.reason) == ("online", "connected")
        assert (offline.status, offline.reason) == ("offline", "shutdown")  # not the will
        assert online.session == offline.session
        assert retained_status(mosquitto, factory, gateway) == offline
    finally:
        collector.close()


@pytest.mark.integration
def test_broker_outage_loses_nothing_and_live_data_overtakes_the_replay(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    # Persistence keeps the collector's session, so it misses nothing while reconnecting.
    broker = mosquitto_factory(persistence=True)
    factory, gateway = new_ids()
    collector = Collector(broker, factory, gateway, persistent=True)
    rate = 20.0
    config = config_for(
        broker,
        factory,
        gateway,
        replay_rate_samples_per_s=rate,
        max_samples_per_batch=10,
        reconnect_min_delay_s=1,
        reconnect_max_delay_s=1,
    )
    appended: list[tuple[float, int]] = []
    marks: dict[str, float] = {}
    backlog_size = 60
    live_least = 20
    # Counts and order, not rates: on a loaded machine the producer runs late, and a test
    # that expects so many samples in so many seconds fails for no fault of the publisher.

    async def scenario() -> None:
        # No receipt comes: a confirmation timeout longer than the test keeps the samples
        # acknowledged before the outage from being sent again meanwhile.
        outbox_config = OutboxConfig(path=tmp_path / "outbox.sqlite3", confirm_timeout_s=3600)
        with SqliteOutbox(outbox_config) as outbox:
            async with MqttPublisher(config, outbox) as publisher:

                async def produce(count: int) -> None:
                    for _ in range(count):
                        [seq] = publisher.submit([make_sample(len(appended))])
                        appended.append((time.monotonic(), seq))
                        await asyncio.sleep(0.05)

                async def produce_live(replayed: asyncio.Event) -> None:
                    """Live samples all through the replay, and at least ``live_least``."""
                    produced = 0
                    while produced < live_least or not replayed.is_set():
                        await produce(1)
                        produced += 1

                async with asyncio.timeout(10):
                    await publisher.wait_connected()
                await produce(20)
                marks["stop"] = time.monotonic()
                await asyncio.to_thread(broker.stop)
                await until(lambda: not publisher.stats.connected, 5, "the disconnect")
                published = publisher.stats.published_batches
                await produce(backlog_size)
                assert publisher.stats.published_batches == published  # nothing sent offline
                assert outbox.depth() >= backlog_size
                await asyncio.to_thread(broker.start)
                marks["restart"] = time.monotonic()
                replayed = asyncio.Event()
                producer = asyncio.create_task(produce_live(replayed))
                await until(lambda: publisher.stats.connected, 10, "the reconnect")
                marks["reconnected"] = time.monotonic()
                await until(
                    lambda: publisher.stats.replayed_samples >= backlog_size, 60, "the replay"
                )
                replayed.set()
                await producer
                async with asyncio.timeout(60):
                    await publisher.wait_drained()
                assert publisher.stats.reconnects == 1
                assert publisher.stats.replayed_samples >= backlog_size
                assert publisher.stats.resent_samples == 0
            assert outbox.depth() == outbox.unconfirmed() == len(appended)
            assert outbox.dropped == outbox.refused_total == 0

    asyncio.run(scenario())
    try:
        every = {seq for _, seq in appended}
        with contextlib.suppress(AssertionError):
            asyncio.run(until(lambda: every <= set(collector.seqs()), 30, "every sample"))
        missing = sorted(every - set(collector.seqs()))
        when = {seq: round(t - marks["stop"], 2) for t, seq in appended if seq in missing}
        assert not missing, f"never delivered (s after the stop): {when}; marks {marks}"
        batches = collector.batches()
        # Backlog: numbered while the broker was away. Live: numbered after the reconnect.
        backlog = {s for t, s in appended if marks["stop"] <= t < marks["restart"]}
        live = {s for t, s in appended if t > marks["reconnected"]}
        assert len(backlog) == backlog_size
        assert len(live) >= live_least
        after = [(at, [s.seq for s in b.samples]) for at, b in batches if at > marks["restart"]]
        replayed = [(at, seqs) for at, seqs in after if set(seqs) <= backlog]
        replay_order = [s for _, seqs in replayed for s in seqs]
        assert replay_order == sorted(set(replay_order)), "backlog replayed out of seq order"
        first_live = min(at for at, seqs in after if set(seqs) & live)
        last_replayed = max(at for at, _ in replayed)
        # Live samples flow again during the replay, before the backlog is done.
        assert first_live < last_replayed
        # The backlog took at least as long as its rate allows (one burst of `rate` aside):
        # a lower bound, which a slow machine only makes easier to meet.
        least = (len(backlog) - rate) / rate
        assert last_replayed - marks["reconnected"] >= 0.9 * least
        print(
            f"\nrestart -> first live sample delivered: {first_live - marks['restart']:.2f} s; "
            f"backlog of {len(backlog)} replayed in {last_replayed - marks['reconnected']:.2f} s"
        )
    finally:
        collector.close()


CHILD = """
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from test_gateway_outbox import make_sample
from kyoso.gateway.outbox import OutboxConfig, SqliteOutbox
from kyoso.gateway.publisher import MqttPublisher, PublisherConfig


async def main() -> None:
    config = PublisherConfig.model_validate_json(sys.argv[2])
    with SqliteOutbox(OutboxConfig(path=Path(sys.argv[3]))) as outbox:
        async with MqttPublisher(config, outbox) as publisher:
            await publisher.wait_connected()
            print("connected", outbox.session, flush=True)
            for i in range(10**9):
                publisher.submit([make_sample(i)])
                await asyncio.sleep(0.05)


asyncio.run(main())
"""


@pytest.mark.integration
def test_a_killed_gateway_is_marked_offline_by_its_last_will(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    script = tmp_path / "gateway.py"
    script.write_text(CHILD)
    config = config_for(mosquitto, factory, gateway)
    child = subprocess.Popen(
        [sys.executable, str(script), str(TESTS), config.model_dump_json(), str(tmp_path / "o")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert line[:1] == ["connected"], line
        session = line[1]
        online = retained_status(mosquitto, factory, gateway)
        assert online is not None
        assert (online.status, online.session) == ("online", session)
        time.sleep(0.3)  # mid-stream
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 5
    will = retained_status(mosquitto, factory, gateway)
    while will == online and time.monotonic() < deadline:
        will = retained_status(mosquitto, factory, gateway)
    assert will is not None
    assert (will.status, will.reason, will.session) == ("offline", "connection_lost", session)
    assert will.ts <= online.ts  # composed with the CONNECT, before the online status


@pytest.mark.integration
def test_a_refused_publish_is_kept_counted_and_not_retried(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    user, reader = f"{factory}.{gateway}", "kyoso-ingest"
    secret = secrets.token_hex(8)
    passwords = tmp_path / "passwords"
    for name, index in ((user, 0), (reader, 1)):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwords), name, secret], check=True
        )
    acl = tmp_path / "acl"
    # The gateway may write its status and descriptions, but not samples (and read its
    # factory, receipts included). Mosquitto 2.0.11 answers each sample batch with PUBACK
    # 0x87 and then drops the connection.
    acl.write_text(
        f"user {user}\n"
        f"topic write kyoso/v1/{factory}/{gateway}/status\n"
        f"topic write kyoso/v1/{factory}/{gateway}/machines/#\n"
        f"topic read kyoso/v1/{factory}/#\n"
        f"user {reader}\ntopic read kyoso/v1/#\n"
    )
    broker = mosquitto_factory(
        allow_anonymous=False,
        extra_config=[f"password_file {passwords}", f"acl_file {acl}"],
        probe_username=reader,
        probe_password=secret,
    )
    config = config_for(
        broker, factory, gateway, username=user, password=secret, max_samples_per_batch=10
    )

    async def scenario() -> None:
        with SqliteOutbox(OutboxConfig(path=tmp_path / "outbox.sqlite3")) as outbox:
            async with MqttPublisher(config, outbox) as publisher:
                async with asyncio.timeout(10):
                    await publisher.wait_connected()
                seqs = publisher.submit([make_sample(i) for i in range(30)])
                await until(lambda: outbox.refused_total == 30, 10, "30 refusals")
                await asyncio.sleep(1.0)  # would any be re-sent?
                stats = publisher.stats
                assert stats.published_batches == 3
                assert stats.refused_samples == 30
                assert stats.acked_samples == stats.refused_control == 0
                assert outbox.depth() == 0
                refused = outbox.refused()
                assert [r.seq for r in refused] == seqs
                assert {r.reason for r in refused} == {"Not authorized (0x87)"}
                assert [Sample.model_validate_json(r.payload).seq for r in refused] == seqs
                # The broker drops the connection after a refusal: stop once connected again,
                # so that the shutdown status is published (on a loaded machine the
                # reconnection may take longer than the second above).
                await until(lambda: publisher.connected, 30, "connected again")

    asyncio.run(scenario())
    status = retained_status(broker, factory, gateway, username=reader, password=secret)
    assert status is not None
    assert (status.status, status.reason) == ("offline", "shutdown")  # status was allowed


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certificates(directory: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=kyoso-test-ca", cwd=directory)  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=gw-01")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=directory)  # fmt: skip
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *extra,
                 cwd=directory)  # fmt: skip


@pytest.mark.integration
def test_tls_with_a_ca_only_and_with_a_client_certificate(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    _make_certificates(tmp_path)
    ca_port, mutual_port = free_port(), free_port()
    server = [
        f"cafile {tmp_path / 'ca.pem'}",
        f"certfile {tmp_path / 'server.pem'}",
        f"keyfile {tmp_path / 'server.key'}",
    ]
    broker = mosquitto_factory(
        extra_config=[
            f"listener {ca_port} 127.0.0.1",
            *server,
            f"listener {mutual_port} 127.0.0.1",
            *server,
            "require_certificate true",
        ]
    )
    factory, gateway = new_ids()
    collector = Collector(broker, factory, gateway)  # on the plain listener
    ca_only = TlsConfig(ca_file=tmp_path / "ca.pem")
    mutual = TlsConfig(
        ca_file=tmp_path / "ca.pem",
        cert_file=tmp_path / "client.pem",
        key_file=tmp_path / "client.key",
    )

    async def scenario(port: int, tls: TlsConfig, delivers: bool) -> str:
        config = config_for(broker, factory, gateway, port=port, tls=tls)
        with SqliteOutbox(OutboxConfig(path=tmp_path / f"{uuid.uuid4().hex}.sqlite3")) as outbox:
            async with MqttPublisher(config, outbox) as publisher:
                publisher.submit([make_sample(i) for i in range(10)])
                with contextlib.nullcontext() if delivers else pytest.raises(TimeoutError):
                    async with asyncio.timeout(10 if delivers else 2):
                        await publisher.wait_drained()
            assert outbox.depth() == 10  # no receipt: kept, whether sent or not
            assert outbox.unconfirmed() == (10 if delivers else 0)
            return outbox.session

    try:
        sessions = [
            asyncio.run(scenario(ca_port, ca_only, delivers=True)),
            asyncio.run(scenario(mutual_port, mutual, delivers=True)),
        ]
        # This listener requires a client certificate: without one, nothing leaves.
        asyncio.run(scenario(mutual_port, ca_only, delivers=False))
        asyncio.run(until(lambda: len(collector.seqs()) == 20, 5, "20 samples over TLS"))
        assert [(b.session, [s.seq for s in b.samples]) for _, b in collector.batches()] == [
            (session, list(range(10))) for session in sessions
        ]
    finally:
        collector.close()


def test_without_a_broker_samples_wait_and_stop_is_prompt(tmp_path: Path) -> None:
    config = PublisherConfig(factory="mori", gateway="gw-01", host="127.0.0.1", port=free_port())

    async def scenario() -> None:
        with SqliteOutbox(OutboxConfig(path=tmp_path / "outbox.sqlite3")) as outbox:
            publisher = MqttPublisher(config, outbox)
            await publisher.start()
            assert publisher.submit([make_sample(i) for i in range(5)]) == [0, 1, 2, 3, 4]
            await asyncio.sleep(1.5)  # paho tries, is refused, waits, tries again
            started = time.monotonic()
            await publisher.stop()
            assert time.monotonic() - started < 2.0
            stats = publisher.stats
            assert not stats.connected
            assert stats.published_batches == stats.connects == 0
            assert outbox.depth() == 5

    asyncio.run(scenario())


def test_reason_code_names_used_for_refusals() -> None:
    # The reason string stored with a refused row comes from paho's names.
    code = ReasonCode(PacketTypes.PUBACK, identifier=0x87)
    assert code.is_failure
    assert f"{code.getName()} (0x{code.value:02x})" == "Not authorized (0x87)"
    assert not ReasonCode(PacketTypes.PUBACK, identifier=0x10).is_failure
