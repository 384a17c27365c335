"""The gateway agent: polls every machine, derives samples, and hands them to the outbox.

One asyncio event loop, one task per machine, so that a dead or slow device delays only
itself (units behind one serial line share it, as they must). Every sample goes into the
durable outbox first; the publisher drains it to the regional broker. Samples close at the
end of every publish interval, and at once when a poll sees a machine's state change
(:mod:`kyoso.gateway.machine`), so that a change reaches the broker within a poll.

Time comes from a clock (wall time by default), so that tests and demos can run against
simulated factories faster than real time: every period in the configuration is in clock
seconds, and the agent sleeps ``period / clock.scale`` of wall time.
"""

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import ClassVar, Protocol

from kyoso.contract import MachineDescription, Sample

from .config import GatewayConfig, MachineConfig
from .machine import MachineTracker
from .modbus import ModbusConnections, ModbusSource
from .mtconnect import MtconnectSource
from .outbox import SqliteOutbox
from .publisher import MqttPublisher
from .sensors import SensorHub, SensorSource
from .slmp import SlmpSource
from .source import Source
from .sparkplug import SparkplugNode

log = logging.getLogger(__name__)


class Clock(Protocol):
    """Epoch seconds, and how many of them pass per wall-clock second."""

    @property
    def scale(self) -> float: ...

    def now(self) -> float: ...


class SystemClock:
    """Wall time."""

    scale = 1.0

    def now(self) -> float:
        """Epoch seconds."""
        return time.time()


class Gateway:
    """One gateway: its sources, trackers, outbox and publisher; see the module docstring."""

    def __init__(
        self, config: GatewayConfig, *, clock: Clock | None = None, session: str | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.machines = {m.id: m for m in config.machines}
        self.outbox = SqliteOutbox(config.outbox, session=session)
        self.publisher = MqttPublisher(config.broker, self.outbox, descriptions=self.descriptions())
        self.sparkplug = SparkplugNode(config, clock=self.clock.now) if config.sparkplug else None
        """The Sparkplug B edge node, if the configuration has a ``sparkplug`` section."""
        self.connections = ModbusConnections()
        self.sensors = (
            SensorHub(
                config.sensor_broker,
                [m.source.mqtt for m in config.machines if m.source.mqtt is not None],
                self.clock.now,
            )
            if config.sensor_broker is not None
            else None
        )
        self._closers: list[Callable[[], Awaitable[None]]] = [self.connections.aclose]
        """What :meth:`stop` closes: connections and the sources that own one."""
        self.sources: dict[str, Source] = {m.id: self._source(m) for m in config.machines}
        self.trackers: dict[str, MachineTracker] = {}
        self.polls = dict.fromkeys(self.sources, 0)
        self.poll_seconds: dict[str, float] = {}
        """How long each machine's last poll took (wall clock, for /metrics)."""
        """Polls per machine, whatever its source."""
        self.emit_failures = 0
        self.poll_failures = 0

    def _source(self, machine: MachineConfig) -> Source:
        """The source that reads ``machine``, by its configured kind."""
        return self._BUILDERS[machine.source.kind](self, machine)

    def _modbus_source(self, machine: MachineConfig) -> Source:
        assert machine.source.modbus is not None
        return ModbusSource(machine.source.modbus, self.connections.get(machine.source.modbus))

    def _mqtt_source(self, machine: MachineConfig) -> Source:
        assert machine.source.mqtt is not None
        assert self.sensors is not None  # the configuration has a sensor broker then
        return SensorSource(self.sensors, machine.source.mqtt)

    def _mtconnect_source(self, machine: MachineConfig) -> Source:
        assert machine.source.mtconnect is not None
        source = MtconnectSource(machine.source.mtconnect)
        self._closers.append(source.aclose)
        return source

    def _opcua_source(self, machine: MachineConfig) -> Source:
        # asyncua takes a second to load on a Raspberry Pi: only gateways that read OPC UA
        # load it.
        from .opcua import OpcuaSource  # noqa: PLC0415

        assert machine.source.opcua is not None
        source = OpcuaSource(machine.source.opcua)
        self._closers.append(source.aclose)
        return source

    def _slmp_source(self, machine: MachineConfig) -> Source:
        assert machine.source.slmp is not None
        source = SlmpSource(machine.source.slmp)
        self._closers.append(source.aclose)
        return source

    _BUILDERS: ClassVar[dict[str, Callable[["Gateway", MachineConfig], Source]]] = {
        "modbus": _modbus_source,
        "mqtt": _mqtt_source,
        "mtconnect": _mtconnect_source,
        "opcua": _opcua_source,
        "slmp": _slmp_source,
    }
    """A builder per source kind of :class:`~kyoso.gateway.config.SourceConfig`."""

    def descriptions(self) -> list[MachineDescription]:
        """The retained description of every machine."""
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        return [
            MachineDescription(
                factory=self.config.factory,
                gateway=self.config.gateway,
                machine=m.id,
                name=m.name,
                updated_at=now,
                capabilities=m.capabilities,
                ideal_cycle_time_s=m.ideal_cycle_time_s,
                calendar=self.config.calendars[m.calendar],
                sharing=m.sharing,
            )
            for m in self.config.machines
        ]

    async def start(self) -> None:
        """Connect the publisher and the sensors; trackers start counting from now."""
        start = self.clock.now()
        # Each poll reads when its task runs, late by a varying amount under load: the first
        # poll scheduled min_sample_s after an early close may read a little sooner than that
        # after it. Half a poll of slack lets it close (the guard holds on the schedule).
        min_sample_s = self.config.min_sample_s
        if min_sample_s is not None:
            min_sample_s = max(0.0, min_sample_s - self.config.poll_interval_s / 2)
        self.trackers = {
            m.id: MachineTracker(
                m, self.config.calendars[m.calendar], start, min_sample_s=min_sample_s
            )
            for m in self.config.machines
        }
        await self.publisher.start()
        if self.sparkplug is not None:
            await self.sparkplug.start()
        if self.sensors is not None:
            await self.sensors.start()

    async def stop(self) -> None:
        """Emit the partial interval, flush what the broker takes, close everything."""
        if self.trackers:
            self.emit(self.clock.now())
        await self.publisher.stop()
        if self.sparkplug is not None:
            await self.sparkplug.stop()
        if self.sensors is not None:
            await self.sensors.stop()
        for close in self._closers:
            await close()
        self.outbox.close()

    async def poll(self, machine: str) -> None:
        """Poll one machine once and feed its tracker; a sample that closed early because
        the state changed goes to the publisher at once."""
        at = self.clock.now()
        started = time.perf_counter()
        reading = await self.sources[machine].poll()
        self.poll_seconds[machine] = time.perf_counter() - started
        self.polls[machine] += 1
        changed = self.trackers[machine].observe(at, reading.values, set(reading.missing))
        if changed is not None:
            self._submit([changed])

    def emit(self, end: float) -> list[int]:
        """Close every machine's interval at ``end``; submit the samples; return their seqs."""
        samples = [s for t in self.trackers.values() if (s := t.sample(end)) is not None]
        return self._submit(samples) if samples else []

    def _submit(self, samples: list[Sample]) -> list[int]:
        """Hand samples to the Kyoso publisher and the Sparkplug node, as configured; return
        their Kyoso outbox seqs (none when Sparkplug replaces the Kyoso samples)."""
        if self.sparkplug is not None:
            self.sparkplug.submit(samples)
            if not self.sparkplug.config.kyoso_samples:
                return []
        return self.publisher.submit(samples)

    async def run(self, stop: asyncio.Event) -> None:
        """Start, poll and publish until ``stop`` is set, then stop cleanly."""
        await self.start()
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._poll_loop(m)) for m in self.config.machines]
                tasks.append(group.create_task(self._emit_loop()))
                await stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await self.stop()

    async def _sleep_until(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, (moment - self.clock.now()) / self.clock.scale))

    async def _poll_loop(self, machine: MachineConfig) -> None:
        period = self.config.poll_interval_s
        next_at = self.clock.now()
        while True:
            try:
                await self.poll(machine.id)
            except Exception:
                self.poll_failures += 1
                log.exception("poll of %s failed", machine.id)
            next_at += period
            now = self.clock.now()
            if next_at < now:  # fell behind: skip the missed polls rather than burst
                next_at += math.ceil((now - next_at) / period) * period
            await self._sleep_until(next_at)

    async def _emit_loop(self) -> None:
        period = self.config.publish_interval_s
        boundary = math.floor(self.clock.now() / period) * period
        while True:
            boundary += period
            await self._sleep_until(boundary)
            try:
                self.emit(boundary)
            except Exception:
                self.emit_failures += 1
                log.exception("emitting the samples ending %s failed", boundary)
