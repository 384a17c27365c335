"""Test helpers for the ingest: gateway-shaped messages, a QoS 1 publisher, and an ingest
running on its own event loop in a thread, so that tests can publish and look meanwhile."""

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from services import Mosquitto

from kyoso.contract import (
    Counter,
    MachineState,
    Sample,
    SampleBatch,
    encode,
    samples_topic,
)
from kyoso.ingest.command import ingest_store
from kyoso.ingest.config import IngestSettings, MqttConfig
from kyoso.ingest.deadletter import DeadLetterStore
from kyoso.ingest.service import Ingest
from kyoso.store import StoreWriter

__all__ = ["IngestThread", "Publisher", "gateway_messages", "settings_for", "wait_until"]

S = MachineState


def gateway_messages(
    factory: str,
    gateway: str,
    machines: Sequence[str],
    intervals: int,
    start: datetime,
    *,
    interval_s: float = 10.0,
    session: str | None = None,
) -> list[tuple[str, bytes]]:
    """What a gateway publishes live: one message per interval with a sample of each machine
    (sequence numbers running across machines, as the gateway numbers them)."""
    session = session or str(uuid.uuid4())
    topic = samples_topic(factory, gateway)
    messages: list[tuple[str, bytes]] = []
    seq = 0
    for i in range(intervals):
        ts = start + timedelta(seconds=interval_s * (i + 1))
        samples = []
        for machine in machines:
            seq += 1
            running = interval_s * (0.25 + 0.5 * ((seq * 7919) % 100) / 100)
            samples.append(
                Sample(
                    machine=machine,
                    seq=seq,
                    ts=ts,
                    interval_s=interval_s,
                    state=S.RUNNING,
                    durations_s={S.RUNNING: running, S.IDLE: interval_s - running},
                    counters={
                        "good": Counter(delta=seq % 3, total=seq),
                        "reject": Counter(delta=0),
                    },
                )
            )
        batch = SampleBatch(factory=factory, gateway=gateway, session=session, samples=samples)
        messages.append((topic, encode(batch)))
    return messages


class Publisher:
    """A plain MQTT 5 client publishing at QoS 1; :meth:`flush` waits for every PUBACK."""

    def __init__(self, broker: Mosquitto, client_id: str | None = None) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._infos: list[mqtt.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        self._infos.append(self.client.publish(topic, payload, qos=qos, retain=retain))

    def publish_all(self, messages: Sequence[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            self.publish(topic, payload)
        self.flush()

    def flush(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self._infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        self._infos.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """A plain MQTT 5 client collecting what it receives on ``topic_filter`` (retained
    messages included), as a gateway reading its receipts would."""

    def __init__(self, broker: Mosquitto, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic_filter, qos=1)
        if not subscribed.wait(30):
            raise TimeoutError(f"no SUBACK for {topic_filter}")

    def _on_message(self, _: mqtt.Client, __: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def settings_for(broker: Mosquitto, tmp: Any, **overrides: Any) -> IngestSettings:
    """Ingest settings for a test broker, files in ``tmp``; ``mqtt`` overrides merge."""
    mqtt_options = {
        "host": broker.host,
        "port": broker.port,
        "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
        **overrides.pop("mqtt", {}),
    }
    return IngestSettings(
        mqtt=MqttConfig(**mqtt_options),
        sqlite_path=tmp / "store.sqlite3",
        dead_letter_path=tmp / "dead-letters.sqlite3",
        **overrides,
    )


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class IngestThread:
    """An :class:`Ingest` on its own event loop in a thread, with its store and dead letters."""

    def __init__(self, settings: IngestSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.dead_letters = DeadLetterStore(settings.dead_letter_path)
        self.loop = asyncio.new_event_loop()
        self.ingest: Ingest | None = None
        self.store: StoreWriter | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._started = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported by stop()
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with ingest_store(self.settings) as store:
            self.store = store
            self.ingest = Ingest(self.settings, store, self.dead_letters, clock=self.clock)
            self._started.set()
            await self.ingest.run(self._stop)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the ingest's loop (e.g. a store read) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def start(self) -> Ingest:
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None:
            raise self._failure
        assert self.ingest is not None
        wait_until(
            lambda: self.ingest is not None and self.ingest.consumer.connected_event.is_set(),
            what="the ingest to subscribe",
        )
        return self.ingest

    def stop(self) -> None:
        if self._stop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        self.dead_letters.close()
        if self._failure is not None:
            raise self._failure


@contextmanager
def running_ingest(settings: IngestSettings) -> Iterator[IngestThread]:
    """Start an :class:`IngestThread` on the store its settings name; stop it after the block."""
    worker = IngestThread(settings)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
