"""The service fixtures give real, restartable Mosquitto and InfluxDB instances."""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import services
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from services import (
    InfluxDB,
    InfluxDBError,
    MissingBinaryError,
    Mosquitto,
    ServiceStartError,
)

WAIT = 10.0


class Mqtt5Client:
    """A paho-mqtt 2.x MQTT 5 client on its own network thread, recording what happens."""

    def __init__(
        self, broker: Mosquitto, client_id: str | None = None, session_expiry: int | None = None
    ) -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"kyoso-test-{uuid.uuid4().hex[:12]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        connect_properties: Any = None
        if session_expiry is not None:
            # A persistent session: the broker keeps subscriptions and queues QoS 1 messages.
            connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_properties.SessionExpiryInterval = session_expiry
        self.client.connect(
            broker.host,
            broker.port,
            keepalive=10,
            clean_start=session_expiry is None,
            properties=connect_properties,
        )
        self.client.loop_start()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connacks.put(reason_code)
        if not reason_code.is_failure:
            self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        self.disconnects.put(reason_code)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self.subacks.put(reason_codes)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def wait_connected(self) -> None:
        reason = self.connacks.get(timeout=WAIT)
        assert not reason.is_failure, f"CONNACK {reason}"
        assert self.connected.wait(WAIT)

    def subscribe_qos1(self, topic: str) -> None:
        result, _ = self.client.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS
        granted = self.subacks.get(timeout=WAIT)
        assert [code.value for code in granted] == [1]  # "Granted QoS 1"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt5_client() -> Iterator[Callable[[Mosquitto], Mqtt5Client]]:
    clients: list[Mqtt5Client] = []

    def make(broker: Mosquitto) -> Mqtt5Client:
        client = Mqtt5Client(broker)
        clients.append(client)
        client.wait_connected()
        return client

    yield make
    for client in clients:
        client.close()


def refuses_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


# --- Mosquitto ----------------------------------------------------------------------------


@pytest.mark.integration
def test_mqtt5_qos1_round_trip_through_the_broker(
    mosquitto: Mosquitto,
    mqtt_topic_root: str,
    mqtt5_client: Callable[[Mosquitto], Mqtt5Client],
) -> None:
    subscriber = mqtt5_client(mosquitto)
    publisher = mqtt5_client(mosquitto)
    subscriber.subscribe_qos1(f"{mqtt_topic_root}/#")

    # paho's properties module is untyped: MQTT 5 properties are dynamic attributes.
    properties: Any = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.ContentType = "application/json"
    properties.UserProperty = [("schema", "kyoso/v1")]
    info = publisher.client.publish(
        f"{mqtt_topic_root}/f1/m1", b'{"n": 1}', qos=1, properties=properties
    )
    info.wait_for_publish(timeout=WAIT)
    assert info.is_published()

    message = subscriber.messages.get(timeout=WAIT)
    assert message.topic == f"{mqtt_topic_root}/f1/m1"
    assert message.payload == b'{"n": 1}'
    assert message.qos == 1
    # MQTT 5 properties only survive an MQTT 5 broker.
    received: Any = message.properties
    assert received is not None
    assert received.ContentType == "application/json"
    assert received.UserProperty == [("schema", "kyoso/v1")]
    assert subscriber.messages.empty()


@pytest.mark.integration
def test_broker_stops_and_starts_on_the_same_port_and_clients_reconnect(
    mosquitto: Mosquitto,
    mqtt_topic_root: str,
    mqtt5_client: Callable[[Mosquitto], Mqtt5Client],
) -> None:
    client = mqtt5_client(mosquitto)
    port, first_pid = mosquitto.port, mosquitto.pid
    try:
        mosquitto.stop()
        assert not mosquitto.running
        assert refuses_connections(mosquitto.host, port)
        client.disconnects.get(timeout=WAIT)
        assert not client.client.is_connected()

        time.sleep(1.5)  # the client retries (and fails) at least once while the broker is down
        assert not client.connected.is_set()

        mosquitto.start()
        assert mosquitto.running
        assert mosquitto.port == port
        assert mosquitto.pid != first_pid
    finally:
        if not mosquitto.running:
            mosquitto.start()

    client.wait_connected()  # paho's own reconnect, to the same host and port
    client.subscribe_qos1(f"{mqtt_topic_root}/after-restart")
    info = client.client.publish(f"{mqtt_topic_root}/after-restart", b"back", qos=1)
    info.wait_for_publish(timeout=WAIT)
    assert client.messages.get(timeout=WAIT).payload == b"back"


@pytest.mark.integration
def test_persistent_broker_keeps_queued_messages_across_restart(
    mosquitto_factory: Callable[..., Mosquitto], mqtt_topic_root: str
) -> None:
    broker = mosquitto_factory(persistence=True)
    ingest_id = f"ingest-{uuid.uuid4().hex[:12]}"

    ingest = Mqtt5Client(broker, client_id=ingest_id, session_expiry=3600)
    ingest.wait_connected()
    ingest.subscribe_qos1(f"{mqtt_topic_root}/#")
    ingest.close()

    publisher = Mqtt5Client(broker)
    publisher.wait_connected()
    info = publisher.client.publish(f"{mqtt_topic_root}/m1", b"queued while offline", qos=1)
    info.wait_for_publish(timeout=WAIT)
    publisher.close()

    broker.stop()  # a clean stop saves the session and its queue to the persistence file
    broker.start()

    ingest = Mqtt5Client(broker, client_id=ingest_id, session_expiry=3600)
    try:
        ingest.wait_connected()
        message = ingest.messages.get(timeout=WAIT)
    finally:
        ingest.close()
    assert message.payload == b"queued while offline"
    assert message.topic == f"{mqtt_topic_root}/m1"
    assert message.qos == 1


@pytest.mark.integration
def test_broker_startup_failure_reports_the_log(tmp_path: Any) -> None:
    broker = Mosquitto(tmp_path / "broken", extra_config=["no_such_option 1"])
    with pytest.raises(ServiceStartError, match=r"(?s)exited with code.*no_such_option"):
        broker.start()
    assert not broker.running


# --- InfluxDB -----------------------------------------------------------------------------


def select_points(influxdb: InfluxDB, database: str, query: str) -> list[list[Any]]:
    answer = influxdb.query(query, db=database, epoch="ns")
    series = answer["results"][0].get("series", [])
    assert len(series) <= 1
    return list(series[0]["values"]) if series else []


@pytest.mark.integration
def test_influxdb_write_then_select(influxdb: InfluxDB, influxdb_database: str) -> None:
    influxdb.write(
        influxdb_database,
        [
            'machine_state,factory=f1,machine=m1 state="running",parts=17i 1700000000000000000',
            'machine_state,factory=f1,machine=m2 state="idle",parts=3i 1700000001000000000',
        ],
    )
    points = select_points(
        influxdb,
        influxdb_database,
        "SELECT state, parts FROM machine_state WHERE factory = 'f1' ORDER BY time",
    )
    assert points == [
        [1700000000000000000, "running", 17],
        [1700000001000000000, "idle", 3],
    ]
    assert select_points(
        influxdb, influxdb_database, "SELECT parts FROM machine_state WHERE machine = 'm2'"
    ) == [[1700000001000000000, 3]]


@pytest.mark.integration
def test_influxdb_stops_and_starts_on_the_same_port_keeping_data(
    influxdb: InfluxDB, influxdb_database: str
) -> None:
    url, first_pid = influxdb.url, influxdb.pid
    influxdb.write(influxdb_database, "spindle,machine=m1 rpm=1200 1700000000000000000")
    try:
        influxdb.stop()
        assert not influxdb.running
        assert not influxdb.ping()
        with pytest.raises(ConnectionRefusedError):
            influxdb.write(influxdb_database, "spindle,machine=m1 rpm=1 1700000001000000000")
        influxdb.start()
        assert influxdb.url == url
        assert influxdb.pid != first_pid
    finally:
        if not influxdb.running:
            influxdb.start()

    assert select_points(influxdb, influxdb_database, "SELECT rpm FROM spindle") == [
        [1700000000000000000, 1200]
    ]


@pytest.mark.integration
def test_influxdb_with_auth_requires_credentials(
    influxdb_factory: Callable[..., InfluxDB],
) -> None:
    server = influxdb_factory(auth_enabled=True)
    with pytest.raises(InfluxDBError) as refused:
        server.query("SHOW DATABASES", username="")
    assert refused.value.status == 401

    server.create_database("factory1")  # as the admin the first start created
    secret = uuid.uuid4().hex
    server.query(f"CREATE USER f1 WITH PASSWORD '{secret}'")
    server.query('GRANT WRITE ON "factory1" TO "f1"')
    server.write("factory1", "x v=1i 1", username="f1", password=secret)
    with pytest.raises(InfluxDBError) as wrong:
        server.write("factory1", "x v=2i 2", username="f1", password=secret[::-1])
    assert wrong.value.status == 401
    assert server.query("SELECT v FROM x", db="factory1", epoch="ns")["results"][0]["series"][0][
        "values"
    ] == [[1, 1]]


# --- helpers ------------------------------------------------------------------------------


def test_missing_binary_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(services, "_SYSTEM_DIRS", ("/nonexistent",))
    with pytest.raises(MissingBinaryError, match=r"apt-get install -y influxdb"):
        InfluxDB()
    with pytest.raises(MissingBinaryError, match=r"apt-get install -y mosquitto"):
        Mosquitto()


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = [services.free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    for port in ports:
        with socket.socket() as sock:
            sock.bind((services.LOOPBACK, port))
