"""The simulated OPC UA machine server: the umati-like address space, the ground truth it
shows, and the gateway reading it through Mosquitto against that truth.

The server's clock is moved by hand and its nodes are written when the test says so
(``update_s=None``), so a day passes in a moment and every value is known.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asyncua.client.client import Client
from services import Mosquitto
from simfactory import opcua_machine, small_factory
from test_gateway_acceptance import (
    POLL_S,
    PUBLISH_S,
    ManualClock,
    SampleCollector,
    _check_against_truth,
    _wait_for_samples,
    poll_a_shift,
)
from test_gateway_acceptance import START as GATEWAY_START

from kyoso.contract import MachineState
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.opcua import OpcuaSource
from kyoso.gateway.opcua_config import OpcuaConfig
from kyoso.simulators.config import (
    FactoryConfig,
    OpcuaSourceConfig,
    load_factory,
    shipped_factories,
)
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.mtconnect import STATE_VIEW as AGENT_VIEW
from kyoso.simulators.opcua import STATE_VIEW, OpcuaMachineServer, opcua_servers
from kyoso.simulators.runner import FactorySimulation

START = 1_767_772_800.0  # 2026-01-07 08:00 UTC, in the 06:00-22:00 shift
WAIT_S = 30.0


def _factory(timezone: str = "UTC") -> FactoryConfig:
    config = small_factory("ua-works", 2701, [], [opcua_machine("mill-01")]).model_dump()
    config["calendars"]["days"]["timezone"] = timezone
    return FactoryConfig.model_validate(config)


def test_the_factory_files_accept_opcua_machines_and_mori_mill_speaks_it() -> None:
    config = _factory()
    assert isinstance(config.machines[0].source, OpcuaSourceConfig)
    doubled = config.model_dump()
    doubled["modbus_servers"] = {"cell": {"port": 4840}}
    doubled["machines"][0]["source"]["port"] = 4840
    with pytest.raises(ValueError, match="machine mill-01: port 4840 already used"):
        FactoryConfig.model_validate(doubled)
    [mori] = [load_factory(p) for p in shipped_factories() if p.stem == "mori-plastics"]
    mill = next(m for m in mori.machines if m.id == "mill-01")
    assert mill.source == OpcuaSourceConfig(port=4840)
    assert "mill-01" not in mori.modbus_servers


def test_the_address_space_shows_the_ground_truth() -> None:
    """Read with a plain asyncua client, by browse path and by node id, at the middle of
    each segment of a day: every state, its alarm, and the part counts are the truth's."""
    factory = _factory()
    moment = [START]
    simulation = FactorySimulation(factory, START)
    model = simulation.models["mill-01"]

    async def scenario() -> None:
        [server] = opcua_servers(factory, simulation.models, lambda: moment[0]).values()
        server.update_s = None
        await server.start()
        endpoint = server.endpoint
        client = Client(endpoint.url, timeout=5)
        await client.connect()
        try:
            mt = await client.get_namespace_index("http://opcfoundation.org/UA/MachineTool/")
            machine = await client.nodes.root.get_child(endpoint.machine_path)
            mon = [f"{mt}:Monitoring"]
            mode = await machine.get_child([*mon, f"{mt}:MachineTool", f"{mt}:OperationMode"])
            channel = await machine.get_child([*mon, f"{mt}:Channel1", f"{mt}:ChannelState"])
            program = await machine.get_child(
                [f"{mt}:Production", f"{mt}:ActiveProgram", f"{mt}:State", "0:CurrentState"]
            )
            lights = [*mon, f"{mt}:Stacklight"]
            lamps = {
                lamp: await machine.get_child([*lights, f"{mt}:{lamp}", f"{mt}:SignalOn"])
                for lamp in ("Red", "Yellow", "Green")
            }
            names = ("PartsGood", "PartsBad", "AlarmCode", "SpindleSpeed")
            vendor = [client.get_node(endpoint.node(n)) for n in names]
            model.advance(START + 86_400)
            seen = set()
            for segment in model.segments:
                if segment.start < START or segment.end > START + 86_400:
                    continue
                moment[0] = (segment.start + segment.end) / 2
                await server.update()
                snap = model.snapshot(moment[0])
                view = STATE_VIEW[segment.state]
                shown = await client.read_values([mode, channel, program])
                assert (shown[0], shown[1], shown[2].Text) == view[:3]
                lit = {lamp for lamp, node in lamps.items() if await node.read_value()}
                assert lit == ({view[3]} if view[3] else set())
                good, bad, alarm, rpm = await client.read_values(vendor)
                assert (good, bad) == (snap.good_total, snap.reject_total)
                assert alarm == (segment.alarm if segment.state is MachineState.DOWN else 0)
                assert rpm == AGENT_VIEW[segment.state][2]
                seen.add(segment.state)
            assert seen == set(MachineState) - {MachineState.UNKNOWN}
        finally:
            await client.disconnect()
            await server.stop()

    asyncio.run(scenario())


async def _settle(source: OpcuaSource, notifications: int, events: int = 0) -> None:
    """Wait until ``source`` has received ``notifications`` data changes and ``events``
    alarm events in all."""
    async with asyncio.timeout(WAIT_S):
        while source.stats.notifications < notifications or source.stats.events < events:  # noqa: ASYNC110
            await asyncio.sleep(0.002)


async def _ready(
    source: OpcuaSource, server: OpcuaMachineServer, sessions: int = 1
) -> tuple[int, int]:
    """Wait until the ``sessions``-th session is open and every field has a value (the alarm
    the server shows, when read): how many notifications and events that took."""
    source.start()

    async def behind() -> bool:
        reading = await source.poll()
        alarm = reading.values.get("alarm_code", server.alarm)
        opened = source.stats.sessions >= sessions
        return not opened or bool(reading.missing) or alarm != server.alarm

    async with asyncio.timeout(WAIT_S):
        while await behind():  # noqa: ASYNC110  # the session opens apart
            await asyncio.sleep(0.01)
    return source.stats.notifications, source.stats.events


@pytest.mark.integration
def test_the_gateway_reads_the_ground_truth_through_the_server(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Like the Modbus machines (tests/test_gateway_acceptance.py): the gateway polls the
    subscribed cache in simulated time, each change having arrived before the poll; the
    server restarts mid-job, the session comes back by itself, and the states and parts
    published are the truth's, nothing counted twice."""
    factory = _factory(timezone="Asia/Tokyo")  # at work from 06:00 JST, before that window
    clock = ManualClock(GATEWAY_START)
    sims = {factory.factory: FactorySimulation(factory, GATEWAY_START)}
    collector = SampleCollector(mosquitto)

    async def main() -> dict[str, list[float]]:
        [server] = opcua_servers(factory, sims[factory.factory].models, clock.now).values()
        server.update_s = None
        await server.start()
        config: dict[str, Any] = gateway_config(
            factory,
            {"mill-01": server.endpoint},
            gateway="gw-01",
            broker={"host": mosquitto.host, "port": mosquitto.port},
            outbox_path=tmp_path / "outbox.sqlite3",
            poll_interval_s=POLL_S,
            publish_interval_s=PUBLISH_S,
        )
        options = {"publishing_interval_ms": 10, "default_sampling_ms": 0, "reconnect_min_s": 0.05}
        config["machines"][0]["source"]["opcua"].update(options)
        gateway = Gateway(GatewayConfig.model_validate(config), clock=clock)
        source = gateway.sources["mill-01"]
        assert isinstance(source, OpcuaSource)
        alarm = server.endpoint.node("Alarm")
        expected = events = 0

        async def before_poll(step: int) -> None:
            nonlocal expected, events
            if step in (0, 900):  # the server restarts mid-job: a new session, no double count
                if step:
                    await server.restart()
                expected, events = await _ready(source, server, sessions=1 + (step > 0))
            written = await server.update()
            expected += len(source.watched.intersection(written))
            events += sum(node.to_string() == alarm for node in written)
            await _settle(source, expected, events)

        polls = await poll_a_shift(gateway, clock, "mill-01", before_poll)
        await server.stop()
        assert (source.stats.losses, source.stats.sessions) == (1, 2)
        return polls

    try:
        polls = asyncio.run(main())
        assert _wait_for_samples(collector, sims)
    finally:
        collector.close()
    _check_against_truth(collector.batches, sims, polls)


def test_every_node_write_is_one_notification() -> None:
    """What the truth test relies on: an update writes only changed nodes, and each write
    reaches a subscribed source once."""
    factory = _factory()
    moment = [START]
    simulation = FactorySimulation(factory, START)

    async def scenario() -> None:
        [server] = opcua_servers(factory, simulation.models, lambda: moment[0]).values()
        server.update_s = None
        await server.start()
        fields = {"good": {"node": server.endpoint.node("PartsGood")}}
        config = {"endpoint": server.endpoint.url, "fields": fields, "publishing_interval_ms": 10}
        source = OpcuaSource(OpcuaConfig.model_validate(config))
        try:
            expected, _ = await _ready(source, server)
            assert await server.update() == []  # nothing changed
            model = simulation.models["mill-01"]
            model.advance(START + 86_400)
            running = next(s for s in model.segments if s.parts > 2 and s.start > START)
            moment[0] = running.first_part + running.cycle_s / 2
            written = await server.update()
            assert server.endpoint.node("PartsGood") in {n.to_string() for n in written}
            await _settle(source, expected + len(source.watched.intersection(written)))
            reading = await source.poll()
            assert reading.values["good"] == model.totals_at(moment[0])[0]
        finally:
            await source.aclose()
            await server.stop()

    asyncio.run(scenario())
