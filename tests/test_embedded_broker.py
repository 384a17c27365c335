"""The demo's embedded broker (rumqttd through iotcore), against real paho-mqtt 2.x MQTT 5
clients and the real ingest: the broker behaviour the ingest's acknowledgement scheme and
the gateways' retained messages rely on."""

import asyncio
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from ingestkit import IngestThread, gateway_messages, running_ingest, wait_until
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kyoso.contract import MAX_MESSAGE_BYTES
from kyoso.demo.broker import EmbeddedBroker
from kyoso.ingest.config import IngestSettings, MqttConfig

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("embedded-broker")) as running:
        yield running


@pytest.fixture
def topic() -> str:
    return f"test/{uuid.uuid4().hex[:8]}"


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class _Client:
    """A synchronous MQTT 5 paho client that records what it receives."""

    def __init__(
        self,
        broker: EmbeddedBroker,
        client_id: str | None = None,
        *,
        persistent: bool = False,
        manual_ack: bool = False,
    ) -> None:
        self.broker = broker
        self.persistent = persistent
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
        )
        self.messages: list[mqtt.MQTTMessage] = []
        self.session_present: bool | None = None
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    def _on_connect(
        self, _: mqtt.Client, __: Any, flags: Any, reason: ReasonCode, ___: Any
    ) -> None:
        assert not reason.is_failure, reason
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_message(self, _: mqtt.Client, __: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def connect(self) -> "_Client":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self.persistent:
            properties.SessionExpiryInterval = 3600
        self.client.connect(
            self.broker.host,
            self.broker.port,
            clean_start=not self.persistent,
            properties=properties,
        )
        self.client.loop_start()
        assert self._connected.wait(5), "no CONNACK"
        return self

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def received(self, count: int, timeout: float = 5.0) -> list[mqtt.MQTTMessage]:
        """Wait for ``count`` messages, then a little longer for any extra one."""
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} messages")
        time.sleep(0.3)
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_starts_on_free_ports_and_releases_them(tmp_path: Path) -> None:
    embedded = EmbeddedBroker(tmp_path / "broker", mqtt311_port=0)
    assert embedded.port == 0
    with embedded:
        port, port311 = embedded.port, embedded.mqtt311_port
        assert port != 0
        assert port311 not in (None, 0, port)
        assert port311 is not None
        assert embedded.running
        assert _accepts(embedded.host, port)
        assert _accepts(embedded.host, port311)
        config = embedded.config_path.read_text()
        assert f"max_payload_size = {MAX_MESSAGE_BYTES}" in config
        assert "max_segment_size = 4194304\nmax_segment_count = 8" in config
        _Client(embedded).connect().close()  # MQTT 5 on the MQTT 5 listener
    assert not embedded.running
    assert not _accepts(embedded.host, port)
    assert not _accepts(embedded.host, port311)
    embedded.stop()  # a second stop is harmless

    async def restart() -> None:
        async with embedded as again:
            assert (again.port, again.mqtt311_port) == (port, port311)
            assert _accepts(again.host, port)

    asyncio.run(restart())
    assert not _accepts(embedded.host, port)
    with socket.socket() as sock:  # no listener holds it (TIME_WAIT needs SO_REUSEADDR)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((embedded.host, port))
        sock.listen()


def test_retained_message_reaches_late_subscriber_until_cleared(
    broker: EmbeddedBroker, topic: str
) -> None:
    publisher = _Client(broker).connect()
    publisher.publish(topic, b"online", retain=True)
    late = _Client(broker).connect()
    late.subscribe(topic)
    [message] = late.received(1)
    assert (message.payload, message.retain) == (b"online", True)
    late.close()

    publisher.publish(topic, b"", retain=True)  # an empty retained payload clears it
    publisher.close()
    later = _Client(broker).connect()
    later.subscribe(topic)
    time.sleep(0.5)
    assert later.messages == []
    later.close()


def test_unacknowledged_message_is_redelivered_after_reconnect(
    broker: EmbeddedBroker, topic: str
) -> None:
    client_id = f"acker-{uuid.uuid4().hex[:8]}"
    subscriber = _Client(broker, client_id, persistent=True, manual_ack=True).connect()
    subscriber.subscribe(topic)
    publisher = _Client(broker).connect()
    publisher.publish(topic, b"sample")
    [first] = subscriber.received(1)
    assert first.payload == b"sample"
    subscriber.close()  # without acknowledging it

    again = _Client(broker, client_id, persistent=True, manual_ack=True).connect()
    assert again.session_present
    [redelivered] = again.received(1)
    assert (redelivered.payload, redelivered.qos) == (b"sample", 1)
    again.client.ack(redelivered.mid, redelivered.qos)
    time.sleep(0.2)
    again.close()

    acknowledged = _Client(broker, client_id, persistent=True, manual_ack=True).connect()
    time.sleep(0.5)
    assert acknowledged.messages == []  # acknowledged once: not sent again
    acknowledged.close()
    publisher.close()


def test_messages_queued_while_persistent_subscriber_is_away(
    broker: EmbeddedBroker, topic: str
) -> None:
    client_id = f"away-{uuid.uuid4().hex[:8]}"
    subscriber = _Client(broker, client_id, persistent=True).connect()
    subscriber.subscribe(topic)
    subscriber.close()

    publisher = _Client(broker).connect()
    for i in range(20):
        publisher.publish(topic, f"m{i}".encode())
    publisher.close()

    back = _Client(broker, client_id, persistent=True).connect()
    assert back.session_present
    assert [m.payload for m in back.received(20)] == [f"m{i}".encode() for i in range(20)]
    back.close()


def _stored(path: Path) -> dict[str, tuple[int, int]]:
    """(rows, sum of seq) per machine in the SQLite store."""
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            rows = db.execute(
                "SELECT series.machine, COUNT(*), SUM(samples.seq) FROM samples"
                " JOIN series ON series.id = samples.series GROUP BY series.machine"
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return {}
    return {machine: (count, total) for machine, count, total in rows}


def _rows(path: Path) -> dict[str, int]:
    return {machine: count for machine, (count, _) in _stored(path).items()}


def test_ingest_stores_every_sample_once_through_the_embedded_broker(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The production ingest (persistent MQTT 5 session, manual in-order acknowledgements,
    SQLite store) through the embedded broker, with samples queued while it is away."""
    settings = IngestSettings(
        mqtt=MqttConfig(
            host=broker.host, port=broker.port, client_id=f"ingest-{uuid.uuid4().hex[:8]}"
        ),
        sqlite_path=tmp_path / "store.sqlite3",
        dead_letter_path=tmp_path / "dead-letters.sqlite3",
    )
    factory = f"f{uuid.uuid4().hex[:8]}"
    machines = {"gw-1": ["m1", "m2", "m3"], "gw-2": ["p1", "p2"]}
    intervals = 60
    messages = {
        gateway: gateway_messages(factory, gateway, names, intervals, NOW)
        for gateway, names in machines.items()
    }
    half = intervals // 2
    publisher = _Client(broker).connect()

    with running_ingest(settings) as worker:
        assert worker.ingest is not None
        for batch in messages.values():
            for topic, payload in batch[:half]:
                publisher.publish(topic, payload)
        ingest = worker.ingest
        wait_until(lambda: ingest.stats.acked == 2 * half, what="the first half stored")
        assert ingest.consumer.connects == 1  # rumqttd drops out-of-order ackers: none here

    for batch in messages.values():  # the ingest is away: the broker queues these
        for topic, payload in batch[half:]:
            publisher.publish(topic, payload)
    publisher.close()

    expected_rows = {m: intervals for names in machines.values() for m in names}
    worker = IngestThread(settings)
    worker.start()
    try:
        wait_until(lambda: _rows(settings.sqlite_path) == expected_rows, what="every sample stored")
        assert worker.ingest is not None
        resumed = worker.ingest
        # Acknowledged: the rest of the samples, and its own retained receipts, read back.
        rest = 2 * (intervals - half)
        wait_until(
            lambda: resumed.stats.acked == rest + resumed.stats.received["receipts"],
            what="the rest acked",
        )
        assert resumed.stats.received["samples"] == rest
        assert resumed.stats.received["receipts"] <= 2  # one per gateway at most
        assert resumed.stats.dead_letters == {}
        assert resumed.consumer.connects == 1
    finally:
        worker.stop()

    stored = _stored(settings.sqlite_path)
    for names in machines.values():  # seq runs across a gateway's machines, 1..n
        n = len(names)
        for position, machine in enumerate(names, start=1):
            seqs = [position + n * i for i in range(intervals)]
            assert stored[machine] == (intervals, sum(seqs))
