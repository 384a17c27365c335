"""The gateway against whole simulated factories, through a real broker.

The clocks of the simulators and the gateways are one manual clock that the test steps,
so a working day passes in seconds and every poll happens at a known simulated moment.
Utilization and part counts computed from the samples the gateway published are compared
with the simulators' ground truth.
"""

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from services import Mosquitto

from kyoso.contract import COUNTER_GOOD, COUNTER_REJECT, MachineState, SampleBatch
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.opcua import OpcuaSource
from kyoso.simulators.behaviour import MachineModel
from kyoso.simulators.clamp import ClampSensor
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import ModbusServers
from kyoso.simulators.mtconnect import MTConnectAgent, mtconnect_agents
from kyoso.simulators.opcua import OpcuaMachineServer, opcua_servers
from kyoso.simulators.runner import FactorySimulation
from kyoso.simulators.slmp import SlmpPlc, slmp_plcs

START = datetime(2026, 1, 7, 0, 0, tzinfo=UTC).timestamp()  # Wednesday 09:00 in Tokyo
HOURS = 6.0
POLL_S = 10.0
PUBLISH_S = 60.0


class ManualClock:
    """Simulated time that moves only when the test says so."""

    scale = 1.0

    def __init__(self, start: float) -> None:
        self.moment = start

    def now(self) -> float:
        return self.moment


class SampleCollector:
    """Subscribes to every sample topic and keeps what arrives."""

    def __init__(self, broker: Mosquitto) -> None:
        self.batches: list[SampleBatch] = []
        self._ready = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5
        )
        self._client.on_connect = lambda c, *_: c.subscribe("kyoso/v1/+/+/samples", qos=1)
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = lambda _c, _u, m: self.batches.append(
            SampleBatch.model_validate_json(m.payload)
        )
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        assert self._ready.wait(10)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _polled(config: dict[str, Any]) -> dict[str, Any]:
    """The configuration with its OPC UA machines read at each poll (not subscribed), the
    alarm from the simulator's alarm-code node rather than its alarm events (which come
    when they come): the clock is manual, and a poll must see the values of its moment."""
    for machine in config["machines"]:
        if "opcua" in machine["source"]:
            source = machine["source"]["opcua"]
            source["mode"] = "poll"
            source["fields"]["alarm_code"] = {"node": f"ns=2;s={machine['id']}.AlarmCode"}
    return config


async def _opcua_sessions(gateways: list[Gateway], servers: list[OpcuaMachineServer]) -> None:
    """Open the OPC UA sessions before the first poll; the servers' values are written by
    the test, at each moved clock (not by their own timers)."""
    for server in servers:
        server.update_s = None
    for source in (s for g in gateways for s in g.sources.values()):
        if isinstance(source, OpcuaSource):
            source.start()
            await asyncio.wait_for(source.connected.wait(), 30)


def _clamp_publisher(broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


@pytest.mark.integration
@pytest.mark.slow
def test_gateway_samples_match_the_ground_truth(mosquitto: Mosquitto, tmp_path: Path) -> None:
    factories = [load_factory(p) for p in shipped_factories()]
    clock = ManualClock(START)
    sims = {f.factory: FactorySimulation(f, START) for f in factories}
    collector = SampleCollector(mosquitto)
    clamp_client = _clamp_publisher(mosquitto)

    async def main() -> dict[str, list[float]]:
        servers = {
            name: ModbusServers(sim.config, sim.models, clock.now, host="127.0.0.1")
            for name, sim in sims.items()
        }
        agents = {
            name: mtconnect_agents(sim.config, sim.models, clock.now) for name, sim in sims.items()
        }
        plcs = {name: slmp_plcs(sim.config, sim.models, clock.now) for name, sim in sims.items()}
        opcua = {
            name: opcua_servers(sim.config, sim.models, clock.now) for name, sim in sims.items()
        }
        ua_servers = [s for servers_ in opcua.values() for s in servers_.values()]
        own_servers: dict[str, list[MTConnectAgent | SlmpPlc | OpcuaMachineServer]] = {
            name: [*agents[name].values(), *plcs[name].values(), *opcua[name].values()]
            for name in sims
        }
        clamps: list[ClampSensor] = []
        gateways: list[Gateway] = []
        for name, sim in sims.items():
            await servers[name].start()
            for own_server in own_servers[name]:
                await own_server.start()
            clamps.extend(sim.clamp_sensors())
            config = gateway_config(
                sim.config,
                {
                    **servers[name].endpoints,
                    **{m: a.endpoint for m, a in agents[name].items()},
                    **{m: p.endpoint for m, p in plcs[name].items()},
                    **{m: u.endpoint for m, u in opcua[name].items()},
                },
                gateway="gw-01",
                broker={"host": mosquitto.host, "port": mosquitto.port},
                outbox_path=tmp_path / f"{name}.sqlite3",
                sensor_broker={"host": mosquitto.host, "port": mosquitto.port},
                poll_interval_s=POLL_S,
                publish_interval_s=PUBLISH_S,
            )
            gateways.append(Gateway(GatewayConfig.model_validate(_polled(config)), clock=clock))
        for gateway in gateways:
            await gateway.start()
            await gateway.publisher.wait_connected()
            assert gateway.sensors is not None
        await _opcua_sessions(gateways, ua_servers)
        polls: dict[str, list[float]] = {}
        steps = int(HOURS * 3600 / POLL_S)
        for step in range(steps + 1):
            clock.moment = START + step * POLL_S
            await _publish_clamps(clamp_client, clamps, gateways, clock.moment)
            await asyncio.gather(*(ua_server.update() for ua_server in ua_servers))
            await asyncio.gather(*(g.poll(m) for g in gateways for m in g.machines))
            for gateway in gateways:
                for machine in gateway.machines:
                    polls.setdefault(machine, []).append(clock.moment)
            if step and clock.moment % PUBLISH_S == 0:
                for gateway in gateways:
                    gateway.emit(clock.moment)
        for gateway in gateways:
            await gateway.publisher.wait_drained()
            await gateway.stop()
        for server in servers.values():
            await server.stop()
        for name in sims:
            for own_server in own_servers[name]:
                await own_server.stop()
        return polls

    try:
        polls = asyncio.run(main())
        expected_batches_done = _wait_for_samples(collector, sims)
    finally:
        clamp_client.loop_stop()
        clamp_client.disconnect()
        collector.close()
    assert expected_batches_done
    _check_against_truth(collector.batches, sims, polls)


async def _publish_clamps(
    client: mqtt.Client, clamps: list[ClampSensor], gateways: list[Gateway], moment: float
) -> None:
    """Publish every clamp's reading at ``moment`` and wait until the gateways have it."""
    for clamp in clamps:
        client.publish(clamp.topic, clamp.payload(moment), qos=1).wait_for_publish(5)
    hubs = [g.sensors for g in gateways if g.sensors is not None]
    for _ in range(500):
        if all(
            hub.received_at(clamp.topic) == moment
            for hub in hubs
            for clamp in clamps
            if hub.watches(clamp.topic)
        ):
            return
        await asyncio.sleep(0.002)
    raise AssertionError("clamp readings did not reach the gateways")


async def poll_a_shift(
    gateway: Gateway,
    clock: ManualClock,
    machine: str,
    before_poll: Callable[[int], Awaitable[None]],
) -> dict[str, list[float]]:
    """Poll ``machine`` every POLL_S for HOURS of the test's clock from START, a sample
    published every PUBLISH_S, ``before_poll(step)`` awaited ahead of each poll (a device
    restarting mid-job, say); then drain and stop the gateway. The moments polled."""
    await gateway.start()
    await gateway.publisher.wait_connected()
    polls: list[float] = []
    for step in range(int(HOURS * 3600 / POLL_S) + 1):
        clock.moment = START + step * POLL_S
        await before_poll(step)
        await gateway.poll(machine)
        polls.append(clock.moment)
        if step and clock.moment % PUBLISH_S == 0:
            gateway.emit(clock.moment)
    await gateway.publisher.wait_drained()
    await gateway.stop()
    return {machine: polls}


def _wait_for_samples(collector: SampleCollector, sims: dict[str, FactorySimulation]) -> bool:
    machines = sum(len(s.models) for s in sims.values())
    expected = machines * int(HOURS * 3600 / PUBLISH_S)
    for _ in range(500):
        if sum(len(b.samples) for b in collector.batches) >= expected:
            return True
        threading.Event().wait(0.02)
    return False


def _check_against_truth(
    batches: list[SampleBatch], sims: dict[str, FactorySimulation], polls: dict[str, list[float]]
) -> None:
    worst = 0.0
    for factory, sim in sims.items():
        for machine, model in sim.models.items():
            samples = sorted(
                (
                    s
                    for b in batches
                    if b.factory == factory
                    for s in b.samples
                    if s.machine == machine
                ),
                key=lambda s: s.seq,
            )
            assert [s.seq for s in samples] == sorted({s.seq for s in samples}), "duplicates"
            start, end = START, polls[machine][-1]
            observed = dict.fromkeys(MachineState, 0.0)
            for sample in samples:
                for state, seconds in sample.durations_s.items():
                    observed[state] += seconds
            window = end - start
            assert sum(observed.values()) == pytest.approx(window, abs=0.01)
            truth = _truth_seconds(model, start, end)
            for state in MachineState:
                share, true_share = observed[state] / window, truth[state] / window
                assert abs(share - true_share) <= 0.01, (factory, machine, state, share, true_share)
                worst = max(worst, abs(share - true_share))
            good = sum(
                s.counters[COUNTER_GOOD].delta for s in samples if COUNTER_GOOD in s.counters
            )
            rejects = sum(
                s.counters[COUNTER_REJECT].delta for s in samples if COUNTER_REJECT in s.counters
            )
            first = polls[machine][0]
            true_good = model.totals_at(end)[0] - model.totals_at(first)[0]
            true_rejects = model.totals_at(end)[1] - model.totals_at(first)[1]
            assert (good, rejects) == (true_good, true_rejects), (factory, machine)
    print(f"largest deviation of a state's share from the ground truth: {100 * worst:.3f} pp")


def _truth_seconds(model: MachineModel, start: float, end: float) -> dict[MachineState, float]:
    totals = dict.fromkeys(MachineState, 0.0)
    for seg in [*model.completed(end), model.segment_at(end)]:
        overlap = min(seg.end, end) - max(seg.start, start)
        if overlap > 0:
            totals[seg.state] += overlap
    return totals
