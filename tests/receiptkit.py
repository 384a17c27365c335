"""Test helpers for the store receipts: an injected clock, a stand-in for the ingest's side of
the contract (it publishes receipts) and an ingest session that can go away.

Shared by the gateway's receipt and restart tests.
"""

import asyncio
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from services import Mosquitto

from kyoso.contract import (
    SampleBatch,
    SessionReceipt,
    StoreReceipt,
    decode,
    encode,
    samples_topic,
    stored_topic,
)

T0 = datetime(2026, 1, 12, 23, 15, tzinfo=UTC).timestamp()
BOUND_S = 20.0
"""How long any one wait may take on a loaded machine before the test fails."""


class FakeClock:
    """Epoch seconds that move only when the test moves them."""

    def __init__(self, at: float = T0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


class Ingest:
    """Plays the ingest's side of the contract: publishes store receipts, retained, QoS 1."""

    def __init__(self, broker: Mosquitto, **login: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"ingest-{uuid.uuid4().hex[:12]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if login:
            self.client.username_pw_set(login["username"], login["password"])
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert connected.wait(10), "the ingest stand-in could not connect"

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish retained at QoS 1 and return once the broker has acknowledged it."""
        info = self.client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def receipt(
        self,
        factory: str,
        gateway: str,
        worker: str,
        sessions: Mapping[str, Sequence[tuple[int, int]]],
    ) -> None:
        """Publish ``worker``'s receipt: these seq ranges of these sessions are stored."""
        message = StoreReceipt(
            factory=factory,
            gateway=gateway,
            worker=worker,
            ts=datetime.now(UTC),
            sessions=[SessionReceipt(session=s, ranges=list(r)) for s, r in sessions.items()],
        )
        self.publish(stored_topic(factory, gateway, worker), encode(message))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class OfflineSubscriber:
    """An ingest's persistent MQTT 3.1.1 session (Mosquitto 2.0.11 restores those, not MQTT 5
    ones) that goes away and comes back; the broker queues samples for it meanwhile."""

    def __init__(self, broker: Mosquitto, factory: str, gateway: str) -> None:
        self.broker, self.topic = broker, samples_topic(factory, gateway)
        self.client_id = f"ingest-{uuid.uuid4().hex[:12]}"
        self._seqs: list[int] = []
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    def connect(self) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=False,
        )
        subscribed = threading.Event()
        client.on_connect = lambda c, *args: c.subscribe(self.topic, qos=1)
        client.on_subscribe = lambda *args: subscribed.set()
        client.on_message = self._on_message
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        self._client = client
        assert subscribed.wait(10), "the subscriber could not subscribe"

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def seqs(self) -> list[int]:
        with self._lock:
            return list(self._seqs)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        batch = decode(message.topic, bytes(message.payload))
        assert isinstance(batch, SampleBatch)
        with self._lock:
            self._seqs += [sample.seq for sample in batch.samples]


async def in_thread(call: Callable[..., None], *args: Any) -> None:
    """Run a blocking MQTT call off the event loop, so the publisher keeps working."""
    await asyncio.to_thread(call, *args)
