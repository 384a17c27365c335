"""Current-clamp sensors on legacy machines, publishing vendor-shaped JSON over MQTT.

Old machines report nothing, so factories clip a current clamp with a small MQTT firmware
on the supply cable and wire the part-counter pulse (and a scrap button) to its inputs.
The payload mimics such firmware (Tasmota's ``tele/SENSOR`` shape): local time without an
offset, amps rather than a state, raw pulse counters. The gateway must derive the state
itself; the simulator only tells the truth in the ground-truth log.
"""

import asyncio
import json
import logging
import random
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from kyoso.contract import MachineState

from .behaviour import COUNTER_MODULUS, MachineModel
from .config import ClampSourceConfig

log = logging.getLogger(__name__)


def sensor_topic(sensor: str) -> str:
    """The local topic a clamp sensor publishes on."""
    return f"sensors/{sensor}/tele/SENSOR"


class ClampSensor:
    """One clamp: turns the machine's state into a noisy current reading."""

    def __init__(self, source: ClampSourceConfig, model: MachineModel, noise_seed: int) -> None:
        self.source = source
        self.model = model
        self.topic = sensor_topic(source.sensor)
        self._zone = ZoneInfo(model.calendar.timezone)
        self._noise = random.Random(noise_seed)

    def payload(self, moment: float) -> bytes:
        """The sensor's message at ``moment`` (simulation epoch seconds)."""
        snap = self.model.snapshot(moment)
        level = self.source.amps.get(snap.state.value, 0.0)
        noise = self._noise.uniform(-self.source.noise_a, self.source.noise_a)
        amps = 0.0 if snap.state == MachineState.PLANNED_STOP else max(0.0, level + noise)
        local = datetime.fromtimestamp(moment, self._zone).replace(tzinfo=None)
        body = {
            "Time": local.isoformat(timespec="seconds"),
            "ENERGY": {
                "Voltage": 200 if amps else 0,
                "Current": round(amps, 3),
                "Power": round(amps * 200 * 0.85),
            },
            "COUNTER": {
                "C1": snap.good_total % COUNTER_MODULUS,
                "C2": snap.reject_total % COUNTER_MODULUS,
            },
        }
        return json.dumps(body, separators=(",", ":")).encode()


class ClampPublisher:
    """Publishes every clamp of a factory at its period, in simulation time.

    Sensors do not buffer: once connected, readings taken while the local broker is
    unreachable are lost, as with the real firmware; they are counted and logged once per
    outage. Before the first connection a sensor is still booting and takes no reading, so
    nothing is lost then: a broker that cannot be reached is logged as such instead.
    """

    def __init__(
        self,
        client_id: str,
        sensors: list[ClampSensor],
        now: Callable[[], float],
        *,
        scale: float,
        host: str,
        port: int,
    ) -> None:
        self.sensors = sensors
        self.now = now
        self.scale = scale
        self.lost = 0
        self.published = 0
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect_fail = self._on_connect_fail
        self._address = (host, port)
        self._outage = False
        self._unreachable = False

    async def run(self) -> None:
        """Publish until cancelled, from the first connection to the broker on."""
        loop = asyncio.get_running_loop()
        connected = asyncio.Event()

        def on_connect(*_: object) -> None:
            self._unreachable = False
            loop.call_soon_threadsafe(connected.set)

        self._client.on_connect = on_connect
        self._client.connect_async(*self._address, keepalive=30)
        self._client.loop_start()
        try:
            await connected.wait()
            async with asyncio.TaskGroup() as group:
                for sensor in self.sensors:
                    group.create_task(self._publish_loop(sensor))
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect_fail(self, *_: object) -> None:
        """Called by paho's thread when a connection attempt fails (it retries)."""
        if not self._unreachable:
            log.warning("clamps: cannot reach broker %s:%d, retrying", *self._address)
        self._unreachable = True

    async def _publish_loop(self, sensor: ClampSensor) -> None:
        wall_period = sensor.source.period_s / self.scale
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            info = self._client.publish(sensor.topic, sensor.payload(self.now()), qos=0)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.published += 1
                self._outage = False
            else:
                if not self._outage:
                    log.warning("clamps: broker %s:%d unreachable, readings lost", *self._address)
                self._outage = True
                self.lost += 1
            next_at += wall_period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
