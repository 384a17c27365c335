"""The simulated MTConnect agent: the standard's requests, and the ground truth it shows.

Every test drives the agent's clock by hand and reads it over real HTTP, so a day passes
in a moment and every observation has a known time.
"""

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import Mosquitto
from simfactory import mtconnect_machine, small_factory
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
from kyoso.simulators.behaviour import MachineModel
from kyoso.simulators.config import FactoryConfig, MTConnectSourceConfig
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.groundtruth import GroundTruthWriter, read_ground_truth
from kyoso.simulators.modbus import Fault, FaultKind
from kyoso.simulators.mtconnect import STATE_VIEW, MTConnectAgent, mtconnect_agents
from kyoso.simulators.runner import FactorySimulation

START = datetime(2026, 1, 7, 5, 0, tzinfo=UTC).timestamp()  # before the 06:00 shift
STREAMS = "{urn:mtconnect.org:MTConnectStreams:2.0}"
DEVICES = "{urn:mtconnect.org:MTConnectDevices:2.0}"
ERROR = "{urn:mtconnect.org:MTConnectError:2.0}"
INVERSE = {view[:2]: state for state, view in STATE_VIEW.items()}


def _factory(buffer_size: int = 1024, timezone: str = "UTC") -> FactoryConfig:
    machine = mtconnect_machine("mc-01", buffer_size)
    config = small_factory("mt-works", 1901, [], [machine]).model_dump()
    config["calendars"]["days"]["timezone"] = timezone
    return FactoryConfig.model_validate(config)


def _run(
    test: Callable[[MTConnectAgent, httpx.AsyncClient, ManualClock], Awaitable[None]],
    factory: FactoryConfig | None = None,
) -> None:
    factory = factory or _factory()
    clock = ManualClock(START)
    sim = FactorySimulation(factory, START)

    async def main() -> None:
        [agent] = mtconnect_agents(factory, sim.models, clock.now).values()
        await agent.start()
        try:
            async with httpx.AsyncClient(base_url=agent.endpoint.url, timeout=5) as client:
                await test(agent, client, clock)
        finally:
            await agent.stop()

    asyncio.run(main())


async def _get(client: httpx.AsyncClient, path: str, **query: Any) -> ET.Element:
    response = await client.get(path, params=query)
    assert response.headers["content-type"].startswith("application/xml")
    return _xml(response.content)


def _xml(document: bytes) -> ET.Element:
    return ET.fromstring(document)  # noqa: S314  # the simulator's own answer


def _header(root: ET.Element) -> dict[str, int]:
    header = root.find(f"{STREAMS}Header")
    assert header is not None
    return {k: int(v) for k, v in header.attrib.items() if k.endswith(("Sequence", "Id"))}


def _observations(root: ET.Element) -> list[tuple[int, str, str, ET.Element]]:
    """(sequence, dataItemId, value, element) in sequence order."""
    found = [
        (int(e.attrib["sequence"]), e.attrib["dataItemId"], e.text or e.tag[len(STREAMS) :], e)
        for e in root.iter()
        if "sequence" in e.attrib
    ]
    return sorted(found, key=lambda o: o[0])


def test_probe_describes_the_device() -> None:
    async def test(agent: MTConnectAgent, client: httpx.AsyncClient, _: ManualClock) -> None:
        root = await _get(client, "/probe")
        assert root.tag == f"{DEVICES}MTConnectDevices"
        [device] = root.iter(f"{DEVICES}Device")
        assert device.attrib["name"] == "mc-01"
        items = {e.attrib["id"]: e.attrib for e in device.iter(f"{DEVICES}DataItem")}
        assert {i["type"] for i in items.values()} >= {
            "AVAILABILITY", "EXECUTION", "CONTROLLER_MODE", "PART_COUNT", "SYSTEM", "PROGRAM",
            "ROTARY_VELOCITY",
        }  # fmt: skip
        assert items["system"]["category"] == "CONDITION"
        assert items["spindle"]["category"] == "SAMPLE"
        assert {items["part_good"]["subType"], items["part_bad"]["subType"]} == {"GOOD", "BAD"}
        same = await _get(client, "/mc-01/probe")
        assert [e.attrib for e in same.iter(f"{DEVICES}DataItem")] == list(items.values())
        unknown = await client.get("/lathe-9/current")
        assert unknown.status_code == 404
        assert b'errorCode="NO_DEVICE"' in unknown.content

    _run(test)


def test_current_and_sample_follow_the_buffer() -> None:
    async def test(agent: MTConnectAgent, client: httpx.AsyncClient, clock: ManualClock) -> None:
        current = await _get(client, "/current")
        header = _header(current)
        assert header["firstSequence"] == 1
        assert header["nextSequence"] == header["lastSequence"] + 1
        values = {o[1]: o[2] for o in _observations(current)}
        assert values["avail"] == "AVAILABLE"
        assert values["exec"] == "STOPPED"  # before the shift
        clock.moment += 8 * 3600
        next_sequence = header["nextSequence"]
        seen: list[int] = []
        while True:
            page = await _get(client, "/sample", **{"from": next_sequence, "count": 7})
            observations = _observations(page)
            assert len(observations) <= 7
            seen.extend(o[0] for o in observations)
            assert _header(page)["nextSequence"] == next_sequence + len(observations)
            next_sequence = _header(page)["nextSequence"]
            if not observations:
                break
        assert seen == list(range(header["nextSequence"], next_sequence))
        assert next_sequence == _header(await _get(client, "/current"))["nextSequence"]
        assert len(seen) > 50  # a working morning: states, parts, programs

    _run(test)


def test_a_sample_older_than_the_buffer_is_out_of_range() -> None:
    async def test(agent: MTConnectAgent, client: httpx.AsyncClient, clock: ManualClock) -> None:
        clock.moment += 12 * 3600
        header = _header(await _get(client, "/current"))
        assert header["firstSequence"] > 1
        assert header["lastSequence"] - header["firstSequence"] + 1 == 16
        for start in (header["firstSequence"] - 1, header["nextSequence"] + 1):
            response = await client.get("/sample", params={"from": start})
            assert response.status_code == 400
            error = _xml(response.content)
            assert error.tag == f"{ERROR}MTConnectError"
            [code] = [e.attrib["errorCode"] for e in error.iter(f"{ERROR}Error")]
            assert code == "OUT_OF_RANGE"
        oldest = await _get(client, "/sample", **{"from": header["firstSequence"]})
        assert _observations(oldest)[0][0] == header["firstSequence"]

    _run(test, _factory(buffer_size=16))


def test_a_restart_brings_a_new_instance_and_a_lost_machine_is_unavailable() -> None:
    async def test(agent: MTConnectAgent, client: httpx.AsyncClient, clock: ManualClock) -> None:
        clock.moment += 3 * 3600
        before = _header(await _get(client, "/current"))
        await agent.restart()
        clock.moment += 1
        after = _header(await _get(client, "/current"))
        assert after["instanceId"] != before["instanceId"]
        assert after["firstSequence"] == 1
        agent.set_available(False)
        values = {o[1]: o for o in _observations(await _get(client, "/current"))}
        assert values["avail"][2] == "UNAVAILABLE"
        assert values["exec"][2] == "UNAVAILABLE"
        assert values["system"][3].tag == f"{STREAMS}Unavailable"
        clock.moment += 600
        agent.set_available(True)
        values = {o[1]: o for o in _observations(await _get(client, "/current"))}
        assert values["avail"][2] == "AVAILABLE"
        assert values["exec"][2] in {"ACTIVE", "READY", "INTERRUPTED", "STOPPED"}

    _run(test)


def test_faults_per_request() -> None:
    async def test(agent: MTConnectAgent, client: httpx.AsyncClient, _: ManualClock) -> None:
        agent.set_fault(Fault(FaultKind.BUSY))
        assert (await client.get("/current")).status_code == 503
        agent.set_fault(Fault(FaultKind.JUNK))
        with pytest.raises(ET.ParseError):
            _xml((await client.get("/current")).content)
        agent.set_fault(Fault(FaultKind.NO_RESPONSE))
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/current", timeout=0.3)
        agent.set_fault(Fault(FaultKind.DROP))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/current")
        agent.set_fault(None)
        assert (await client.get("/current")).status_code == 200

    _run(test)


def test_observations_follow_the_ground_truth(tmp_path: Path) -> None:
    """Each state change at its segment's start, each part at the moment it was finished."""
    factory = _factory(buffer_size=4096)
    hours = 30
    end = START + hours * 3600
    # The ground truth of an independent model with the same seed.
    truth_sim = FactorySimulation(factory, START)
    with GroundTruthWriter(tmp_path / "truth.jsonl", factory.factory, 1901, START) as writer:
        writer.flush(truth_sim.models, end)
    truth = read_ground_truth(tmp_path / "truth.jsonl")["mc-01"]
    model: MachineModel = truth_sim.models["mc-01"]

    async def test(agent: MTConnectAgent, client: httpx.AsyncClient, clock: ManualClock) -> None:
        current = await _get(client, "/current")
        latest = {o[1]: o for o in _observations(current)}
        next_sequence = _header(current)["nextSequence"]
        observed: list[tuple[int, str, str, ET.Element]] = []
        while clock.moment < end:
            clock.moment = min(end, clock.moment + 997)  # polls that fall anywhere
            page = await _get(client, "/sample", **{"from": next_sequence, "count": 1000})
            observed.extend(_observations(page))
            next_sequence = _header(page)["nextSequence"]
        # The state timeline, rebuilt from Execution and ControllerMode.
        shown = {"exec": latest["exec"][2], "mode": latest["mode"][2]}
        at_each: dict[float, tuple[str, str]] = {}  # a change's items share its timestamp
        for _, item, value, element in observed:
            if item in shown:
                shown[item] = value
                at = datetime.fromisoformat(element.attrib["timestamp"]).timestamp()
                at_each[at] = (shown["exec"], shown["mode"])
        timeline: list[tuple[float, MachineState]] = []
        for at, view in at_each.items():
            if not timeline or timeline[-1][1] is not INVERSE[view]:
                timeline.append((at, INVERSE[view]))
        segments = [(s.start.timestamp(), s.state, s.alarm, s.good + s.reject) for s in truth]
        ongoing = model.segment_at(end)  # not in the log until it ends
        if ongoing.start >= segments[-1][0]:
            parts = sum(ongoing.parts_until(end))
            segments.append((ongoing.start, ongoing.state, ongoing.alarm, parts))
        expected = [(at, state) for at, state, _, _ in segments if at > START]
        merged = [p for i, p in enumerate(expected) if i == 0 or expected[i - 1][1] is not p[1]]
        assert [(round(a, 3), s) for a, s in timeline] == [(round(a, 3), s) for a, s in merged]
        # Alarms: the Fault's native code is the breakdown's alarm.
        faults = [int(e.attrib["nativeCode"]) for _, i, _, e in observed if e.tag.endswith("Fault")]
        down = [alarm for at, state, alarm, _ in segments if state is MachineState.DOWN]
        assert faults
        assert faults == down[-len(faults) :]
        # Parts: the last counts are the truth's, and each part arrived once.
        good = [int(v) for _, i, v, _ in observed if i == "part_good"]
        bad = [int(v) for _, i, v, _ in observed if i == "part_bad"]
        assert (good[-1], bad[-1]) == model.totals_at(end)
        first_good, first_bad = (int(latest["part_good"][2]), int(latest["part_bad"][2]))
        assert good == list(range(first_good + 1, good[-1] + 1))
        assert bad == list(range(first_bad + 1, bad[-1] + 1))
        truth_parts = sum(parts for *_, parts in segments)
        assert len(good) + len(bad) == truth_parts - first_good - first_bad

    _run(test, factory)


def test_the_factory_file_accepts_mtconnect_machines() -> None:
    config = _factory()
    assert isinstance(config.machines[0].source, MTConnectSourceConfig)
    doubled = config.model_dump()
    doubled["modbus_servers"] = {"cell": {"port": 5024}}
    doubled["machines"][0]["source"]["port"] = 5024
    with pytest.raises(ValueError, match="machine mc-01: port 5024 already used"):
        FactoryConfig.model_validate(doubled)


@pytest.mark.integration
def test_the_gateway_reads_the_ground_truth_through_the_agent(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """Like the Modbus machines (tests/test_gateway_acceptance.py): the gateway polls the
    agent in simulated time, and the states and parts it publishes are the truth's."""
    factory = _factory(timezone="Asia/Tokyo")  # at work from 06:00 JST, before that window
    clock = ManualClock(GATEWAY_START)
    sims = {factory.factory: FactorySimulation(factory, GATEWAY_START)}
    collector = SampleCollector(mosquitto)

    async def main() -> dict[str, list[float]]:
        [agent] = mtconnect_agents(factory, sims[factory.factory].models, clock.now).values()
        await agent.start()
        config = gateway_config(
            factory,
            {"mc-01": agent.endpoint},
            gateway="gw-01",
            broker={"host": mosquitto.host, "port": mosquitto.port},
            outbox_path=tmp_path / "outbox.sqlite3",
            poll_interval_s=POLL_S,
            publish_interval_s=PUBLISH_S,
        )
        gateway = Gateway(GatewayConfig.model_validate(config), clock=clock)

        async def before_poll(step: int) -> None:
            if step == 900:  # the agent restarts mid-job: nothing is counted twice
                await agent.restart()

        polls = await poll_a_shift(gateway, clock, "mc-01", before_poll)
        await agent.stop()
        return polls

    try:
        polls = asyncio.run(main())
        assert _wait_for_samples(collector, sims)
    finally:
        collector.close()
    _check_against_truth(collector.batches, sims, polls)
