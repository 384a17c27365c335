"""Runs whole demo factories: Modbus, MTConnect and OPC UA servers, clamps, ground truth.

Simulation time is wall time by default. A time-scale factor compresses it for tests and
demos, and a backfill generates the past days at once so that a demo has meaningful
history from its first second. Everything derives from one clock, so the machines'
registers, the clamps' readings and the ground truth always agree.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from .behaviour import MachineModel, machine_seed
from .clamp import ClampPublisher, ClampSensor
from .config import (
    ClampSourceConfig,
    FactoryConfig,
    ModbusServerConfig,
    MTConnectSourceConfig,
    OpcuaSourceConfig,
    RegisterMapConfig,
    SlmpSourceConfig,
)
from .endpoints import AgentEndpoint, Endpoint, ServerEndpoint, SlmpEndpoint
from .groundtruth import GroundTruthWriter
from .modbus import Fault, ModbusServers
from .mtconnect import MTConnectAgent, mtconnect_agents
from .slmp import SlmpPlc, slmp_plcs

if TYPE_CHECKING:
    from .opcua import OpcuaMachineServer

log = logging.getLogger(__name__)


class SimClock:
    """Simulation time in epoch seconds, running ``scale`` times faster than the wall."""

    def __init__(self, start: float | None = None, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.start = time.time() if start is None else start
        self.scale = scale
        self._mono0 = time.monotonic()

    def now(self) -> float:
        """The current simulation time."""
        return self.start + (time.monotonic() - self._mono0) * self.scale


@dataclass(frozen=True, slots=True)
class SimulationOptions:
    """How to run a simulation; see ``kyoso simulate --help`` for the meaning of each."""

    backfill_s: float = 0.0
    host: str = "127.0.0.1"
    ephemeral_ports: bool = False
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    ground_truth_dir: Path | None = None
    flush_interval_s: float = 1.0
    faults: dict[str, Fault] = field(default_factory=dict)


class FactorySimulation:
    """One factory's machine models, built from its configuration from ``origin`` on."""

    def __init__(self, config: FactoryConfig, origin: float) -> None:
        self.config = config
        self.origin = origin
        self.models: dict[str, MachineModel] = {}
        for machine in config.machines:
            source = machine.source
            start, daily = (
                (source.counter_start, source.counter_reset_daily)
                if isinstance(source, RegisterMapConfig)
                else (0, False)
            )
            self.models[machine.id] = MachineModel(
                machine.id,
                machine.behaviour,
                config.calendars[machine.calendar],
                machine_seed(config.seed, machine.id),
                origin,
                counter_start=start,
                counter_reset_daily=daily,
            )

    def clamp_sensors(self) -> list[ClampSensor]:
        """The factory's current-clamp sensors."""
        return [
            ClampSensor(m.source, self.models[m.id], machine_seed(self.config.seed, m.id) ^ 1)
            for m in self.config.machines
            if isinstance(m.source, ClampSourceConfig)
        ]


class Simulation:
    """All factories at once, as an async context manager::

    async with Simulation(factories, clock, options) as sim:
        print(sim.endpoints)
        await stop.wait()
    """

    def __init__(
        self, factories: list[FactoryConfig], clock: SimClock, options: SimulationOptions
    ) -> None:
        names = [f.factory for f in factories]
        if len(set(names)) != len(names):
            raise ValueError("factory ids must be unique")
        self.clock = clock
        self.options = options
        origin = clock.start - options.backfill_s
        if options.ephemeral_ports:
            factories = [_ephemeral(f) for f in factories]
        self.factories = {f.factory: FactorySimulation(f, origin) for f in factories}
        self.servers: dict[str, ModbusServers] = {}
        self.agents: dict[str, dict[str, MTConnectAgent]] = {}
        self.opcua: dict[str, dict[str, OpcuaMachineServer]] = {}
        self.plcs: dict[str, dict[str, SlmpPlc]] = {}
        self.publishers: dict[str, ClampPublisher] = {}
        self._writers: dict[str, GroundTruthWriter] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def endpoints(
        self,
    ) -> dict[str, dict[str, Endpoint | AgentEndpoint | ServerEndpoint | SlmpEndpoint]]:
        """Where each Modbus, MTConnect, OPC UA or SLMP machine answers: factory -> machine
        -> endpoint."""
        found: dict[str, dict[str, Endpoint | AgentEndpoint | ServerEndpoint | SlmpEndpoint]] = {}
        for name, servers in self.servers.items():
            found.setdefault(name, {}).update(servers.endpoints)
        for name, agents in self.agents.items():
            found.setdefault(name, {}).update((m, a.endpoint) for m, a in agents.items())
        for name, opcua in self.opcua.items():
            found.setdefault(name, {}).update((m, s.endpoint) for m, s in opcua.items())
        for name, plcs in self.plcs.items():
            found.setdefault(name, {}).update((m, p.endpoint) for m, p in plcs.items())
        return found

    def model(self, factory: str, machine: str) -> MachineModel:
        """The behaviour model of one machine."""
        return self.factories[factory].models[machine]

    def set_fault(self, factory: str, machine: str, fault: Fault | None) -> None:
        """Inject a fault into a Modbus machine or an MTConnect agent (None clears it)."""
        agent = self.agents.get(factory, {}).get(machine) or self.plcs.get(factory, {}).get(machine)
        if agent is not None:
            agent.set_fault(fault)
            log.info("%s/%s: fault %s", factory, machine, fault)
        else:
            self.servers[factory].set_fault(machine, fault)

    def agent(self, factory: str, machine: str) -> MTConnectAgent:
        """The MTConnect agent of a machine, to restart it or take its machine away."""
        return self.agents[factory][machine]

    def opcua_server(self, factory: str, machine: str) -> "OpcuaMachineServer":
        """The OPC UA server of a machine, to restart it."""
        return self.opcua[factory][machine]

    def plc(self, factory: str, machine: str) -> SlmpPlc:
        """The SLMP PLC of a machine, to restart it."""
        return self.plcs[factory][machine]

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        opts = self.options
        if opts.ground_truth_dir is not None:
            for name, sim in self.factories.items():
                path = opts.ground_truth_dir / f"{name}.jsonl"
                self._writers[name] = GroundTruthWriter(path, name, sim.config.seed, sim.origin)
            self._flush()
        for name, sim in self.factories.items():
            if sim.config.modbus_servers:
                servers = ModbusServers(sim.config, sim.models, self.clock.now, host=opts.host)
                self.servers[name] = servers
                await servers.start()
            agents = mtconnect_agents(sim.config, sim.models, self.clock.now, host=opts.host)
            if agents:
                self.agents[name] = agents
                for agent in agents.values():
                    await agent.start()
            await self._start_opcua(name, sim)
            await self._start_plcs(name, sim)
            for machine, fault in opts.faults.items():
                if machine in sim.models:
                    self.set_fault(name, machine, fault)
            sensors = sim.clamp_sensors()
            if sensors:
                if opts.mqtt_host is None:
                    log.warning("%s: no MQTT broker given, clamp sensors stay silent", name)
                    continue
                publisher = ClampPublisher(
                    f"kyoso-sim-{name}",
                    sensors,
                    self.clock.now,
                    scale=self.clock.scale,
                    host=opts.mqtt_host,
                    port=opts.mqtt_port,
                )
                self.publishers[name] = publisher
                self._tasks.append(asyncio.create_task(publisher.run()))
        if self._writers:
            self._tasks.append(asyncio.create_task(self._flush_loop()))

    async def _start_opcua(self, name: str, sim: FactorySimulation) -> None:
        if not any(isinstance(m.source, OpcuaSourceConfig) for m in sim.config.machines):
            return
        # asyncua takes seconds to load on a Raspberry Pi: only for OPC UA machines.
        from .opcua import opcua_servers  # noqa: PLC0415

        opcua = opcua_servers(sim.config, sim.models, self.clock.now, host=self.options.host)
        if opcua:
            self.opcua[name] = opcua
            for server in opcua.values():
                await server.start()

    async def _start_plcs(self, name: str, sim: FactorySimulation) -> None:
        plcs = slmp_plcs(sim.config, sim.models, self.clock.now, host=self.options.host)
        if plcs:
            self.plcs[name] = plcs
            for plc in plcs.values():
                await plc.start()

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for servers in self.servers.values():
            await servers.stop()
        for agents in self.agents.values():
            for agent in agents.values():
                await agent.stop()
        for opcua in self.opcua.values():
            for server in opcua.values():
                await server.stop()
        for plcs in self.plcs.values():
            for plc in plcs.values():
                await plc.stop()
        if self._writers:
            self._flush()
        for writer in self._writers.values():
            writer.close()

    def _flush(self) -> None:
        now = self.clock.now()
        for name, writer in self._writers.items():
            writer.flush(self.factories[name].models, now)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.flush_interval_s)
            self._flush()


def _ephemeral(config: FactoryConfig) -> FactoryConfig:
    """The same factory with every Modbus server, MTConnect agent, OPC UA server and SLMP
    PLC on a free port."""
    servers = {name: ModbusServerConfig(port=0) for name in config.modbus_servers}
    machines = [
        m.model_copy(update={"source": m.source.model_copy(update={"port": 0})})
        if isinstance(m.source, MTConnectSourceConfig | OpcuaSourceConfig | SlmpSourceConfig)
        else m
        for m in config.machines
    ]
    return config.model_copy(update={"modbus_servers": servers, "machines": machines})
