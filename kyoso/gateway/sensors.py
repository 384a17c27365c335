"""MQTT sensors on the shop's local broker, e.g. current clamps on legacy machines.

Sensors publish vendor-shaped JSON whenever they like; the hub keeps the latest payload of
each topic with the time it arrived, and a poll pulls values out of it by dotted paths.
A value older than the sensor's timeout, a path that is not there or a value that is not
a number counts as missing, never as a stale or invented reading.
"""

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .config import MqttSensorConfig, SensorBrokerConfig
from .modbus_decode import Value

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SensorReading:
    """A poll of one MQTT sensor (a :class:`~kyoso.gateway.source.Reading`)."""

    values: Mapping[str, Value]
    missing: Mapping[str, str]


class SensorSource:
    """One MQTT sensor as a :class:`~kyoso.gateway.source.Source`: the latest payload the
    hub holds for its topic, while it is fresh."""

    def __init__(self, hub: "SensorHub", sensor: MqttSensorConfig) -> None:
        self._hub = hub
        self._sensor = sensor

    async def poll(self) -> SensorReading:
        """The sensor's values now; never raises."""
        return self._hub.read(self._sensor)


def extract(payload: Any, path: str) -> Value | None:
    """The number at a dotted ``path`` (``ENERGY.Current``, ``COUNTER.C1``, ``a.0.b``)."""
    node = payload
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return node


class SensorHub:
    """Subscribes to every sensor topic and answers polls from the latest payloads."""

    def __init__(
        self,
        broker: SensorBrokerConfig,
        sensors: Iterable[MqttSensorConfig],
        clock: Callable[[], float],
    ) -> None:
        self._topics = sorted({s.topic for s in sensors})
        self._clock = clock
        self._latest: dict[str, tuple[float, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.malformed = 0
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
        )
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._broker = broker

    async def start(self) -> None:
        """Connect in the background; reconnects by itself."""
        self._loop = asyncio.get_running_loop()
        self._client.reconnect_delay_set(1, 10)
        self._client.connect_async(self._broker.host, self._broker.port)
        self._client.loop_start()

    async def stop(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    def read(self, sensor: MqttSensorConfig) -> SensorReading:
        """The sensor's values now, and why each other one is missing."""
        latest = self._latest.get(sensor.topic)
        if latest is None:
            return SensorReading({}, dict.fromkeys(sensor.values, "no payload yet"))
        if self._clock() - latest[0] > sensor.timeout_s:
            stale = f"no payload for more than {sensor.timeout_s:g} s"
            return SensorReading({}, dict.fromkeys(sensor.values, stale))
        values: dict[str, Value] = {}
        missing: dict[str, str] = {}
        for name, path in sensor.values.items():
            value = extract(latest[1], path)
            if value is None:
                missing[name] = f"no number at {path!r} in the payload"
            else:
                values[name] = value
        return SensorReading(values, missing)

    def watches(self, topic: str) -> bool:
        """Whether a configured sensor publishes on ``topic``."""
        return topic in self._topics

    def received_at(self, topic: str) -> float | None:
        """When the latest payload of ``topic`` arrived (clock time), or None."""
        latest = self._latest.get(topic)
        return latest[0] if latest is not None else None

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        for topic in self._topics:
            client.subscribe(topic, qos=0)

    def _on_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        try:
            payload = json.loads(message.payload)
        except (ValueError, RecursionError):
            self.malformed += 1
            log.warning("sensor %s: payload is not JSON", message.topic)
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._store, message.topic, payload)

    def _store(self, topic: str, payload: Any) -> None:
        self._latest[topic] = (self._clock(), payload)
