"""The MTConnect source against a real HTTP agent on loopback serving real MTConnect XML:
sequence continuity, resync after an agent restart or a buffer overrun without counting
anything twice, missing values with their reason, the circuit breaker, the probe.

The agent here is a small one written for these tests (asyncio streams, no framework): it
keeps a buffer of observations with sequence numbers as cppagent does, and can restart,
hang, answer garbage or go away on demand.
"""

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from simfactory import mtconnect_machine, small_factory
from test_gateway_config import refusal

from kyoso.gateway import mtconnect_probe
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import ConfigError, load_config
from kyoso.gateway.machine import CounterTracker
from kyoso.gateway.mtconnect import MtconnectMissingReason, MtconnectSource
from kyoso.gateway.mtconnect_xml import IDLE, INTERRUPTED, RUNNING, SETUP, MtconnectConfig
from kyoso.gateway.source import Polled
from kyoso.simulators.modbus import Fault, FaultKind
from kyoso.simulators.mtconnect import mtconnect_agents
from kyoso.simulators.runner import FactorySimulation

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"
NAMESPACES = {
    "1.3": "urn:mtconnect.org:MTConnectStreams:1.3",
    "2.2": "urn:mtconnect.org:MTConnectStreams:2.2",
}
ITEMS = {  # id -> (name, category, type, subType, units, first value)
    "avail": ("avail", "EVENT", "AVAILABILITY", None, None, "AVAILABLE"),
    "exec": ("execution", "EVENT", "EXECUTION", None, None, "READY"),
    "mode": ("mode", "EVENT", "CONTROLLER_MODE", None, None, "AUTOMATIC"),
    "pc": ("PartCountAct", "EVENT", "PART_COUNT", "ALL", None, "10"),
    "Sload": ("Sload", "SAMPLE", "LOAD", None, "PERCENT", "12.5"),
    "system": (None, "CONDITION", "SYSTEM", None, None, "Normal"),
    "logic": (None, "CONDITION", "LOGIC_PROGRAM", None, None, "Normal"),
}
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<MTConnectStreams><Header instanceId="1" nextSequence="1"/>&lol2;</MTConnectStreams>"""


def _camel(type_: str) -> str:
    return "".join(p.capitalize() for p in type_.split("_"))


class Agent:
    """An MTConnect agent for one device, ``vmc-1``: a buffer of ``buffer`` observations,
    ``/probe``, ``/current`` and ``/sample``, and faults on demand (``mode``)."""

    def __init__(self, version: str = "2.2", buffer: int = 64) -> None:
        self.version = version
        self.buffer = buffer
        self.mode = "ok"
        """ok, hang (accept, never answer), garbage, doctype."""
        self.requests: list[str] = []
        self.two_devices = False
        """Stream a second device, vmc-2, beside vmc-1 (as an agent for a whole cell)."""
        self._server: asyncio.Server | None = None
        self.port = 0
        self.restart()

    def restart(self) -> None:
        """A new instanceId, sequence numbers from 1, every data item observed again."""
        self.instance = str(uuid.uuid4().int % 10**9)
        self.log: list[tuple[int, str, str, str]] = []  # sequence, item, value, native code
        self.current: dict[str, dict[str, tuple[int, str]]] = {}  # item -> code -> seq, value
        for item, spec in ITEMS.items():
            self.set(item, spec[5])

    def set(self, item: str, value: str, native_code: str = "") -> None:
        """Observe ``value`` (a condition's level: Normal, Warning, Fault, Unavailable)."""
        sequence = self.log[-1][0] + 1 if self.log else 1
        self.log = [*self.log, (sequence, item, value, native_code)][-self.buffer :]
        active = self.current.setdefault(item, {})
        if ITEMS[item][1] != "CONDITION" or value == "Unavailable" or not native_code:
            active.clear()
        elif value == "Normal":
            active.pop(native_code, None)
        else:
            active.pop("", None)
        if value not in ("Normal", "Unavailable") and native_code:
            active[native_code] = (sequence, value)
        elif not active:
            active[""] = (sequence, value)

    def observations(self) -> list[tuple[int, str, str, str]]:
        """What /current shows: every data item's value, every active condition."""
        return sorted(
            (seq, item, value, code)
            for item, active in self.current.items()
            for code, (seq, value) in active.items()
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ")[1].decode()
            self.requests.append(target)
            if self.mode == "hang":
                await asyncio.sleep(3600)
            status, body = self._answer(target)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _answer(self, target: str) -> tuple[str, bytes]:
        broken = {"garbage": b"<MTConnectStreams><Header instanceId=", "doctype": BILLION_LAUGHS}
        if self.mode in broken:
            return "200 OK", broken[self.mode]
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.removeprefix("/vmc-1")
        if path == "/probe":
            return "200 OK", self._probe()
        if path == "/current":
            return "200 OK", self._streams(self.observations())
        if path == "/sample":
            first = self.log[0][0]
            start = int(query.get("from", first))
            if not first <= start <= self.log[-1][0] + 1:
                return "400 Bad Request", self._error("OUT_OF_RANGE", f"from {start}")
            count = int(query.get("count", 100))
            chosen = [e for e in self.log if e[0] >= start][:count]
            return "200 OK", self._streams(chosen, next_=chosen[-1][0] + 1 if chosen else start)
        return "404 Not Found", self._error("INVALID_REQUEST", path)

    def _header(self, next_: int) -> str:
        return (
            f'<Header creationTime="2026-01-07T00:00:00Z" sender="test" '
            f'instanceId="{self.instance}" version="{self.version}" bufferSize="{self.buffer}" '
            f'firstSequence="{self.log[0][0]}" lastSequence="{self.log[-1][0]}" '
            f'nextSequence="{next_}"/>'
        )

    def _streams(self, observations: list[tuple[int, str, str, str]], next_: int = 0) -> bytes:
        groups: dict[str, list[str]] = {"SAMPLE": [], "EVENT": [], "CONDITION": []}
        for sequence, item, value, code in observations:
            name, category, type_, *_ = ITEMS[item]
            common = f'dataItemId="{item}" sequence="{sequence}" timestamp="2026-01-07T00:00:00Z"'
            if name:
                common += f' name="{name}"'
            if category == "CONDITION":
                native = f' nativeCode="{code}"' if code else ""
                groups[category].append(f'<{value} {common} type="{type_}"{native}/>')
            else:
                groups[category].append(f"<{_camel(type_)} {common}>{value}</{_camel(type_)}>")
        tags = {"SAMPLE": "Samples", "EVENT": "Events", "CONDITION": "Condition"}
        body = "".join(f"<{tags[c]}>{''.join(g)}</{tags[c]}>" for c, g in groups.items() if g)
        ns = NAMESPACES[self.version]
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><MTConnectStreams xmlns="{ns}">'
            f"{self._header(next_ or self.log[-1][0] + 1)}<Streams>"
            f'<DeviceStream name="vmc-1" uuid="vmc-1-uuid"><ComponentStream component="Controller" '
            f'name="controller" componentId="c1">{body}</ComponentStream></DeviceStream>'
            f"{self._second() if self.two_devices else ''}</Streams></MTConnectStreams>"
        ).encode()

    @staticmethod
    def _second() -> str:
        return '<DeviceStream name="vmc-2" uuid="vmc-2-uuid"/>'

    def _probe(self) -> bytes:
        items = "".join(
            f'<DataItem id="{i}" category="{c}" type="{t}"'
            + (f' name="{n}"' if n else "")
            + (f' subType="{s}"' if s else "")
            + (f' units="{u}"' if u else "")
            + "/>"
            for i, (n, c, t, s, u, _) in ITEMS.items()
        )
        ns = NAMESPACES[self.version].replace("Streams", "Devices")
        return (
            f'<?xml version="1.0"?><MTConnectDevices xmlns="{ns}">{self._header(1)}<Devices>'
            f'<Device id="d1" name="vmc-1" uuid="vmc-1-uuid"><DataItems>{items}</DataItems>'
            f"</Device></Devices></MTConnectDevices>"
        ).encode()

    def _error(self, code: str, text: str) -> bytes:
        ns = NAMESPACES[self.version].replace("Streams", "Error")
        return (
            f'<?xml version="1.0"?><MTConnectError xmlns="{ns}">{self._header(1)}'
            f'<Errors><Error errorCode="{code}">{text}</Error></Errors></MTConnectError>'
        ).encode()


@asynccontextmanager
async def serving(version: str = "2.2", buffer: int = 64) -> AsyncIterator[Agent]:
    agent = Agent(version, buffer)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


FIELDS: dict[str, Any] = {
    "state": {"preset": "state"},
    "faults": {"preset": "faults"},
    "parts": {"data_item": "PartCount"},
    "load": {"data_item": "Sload"},
    "exec": {"data_item": "execution"},
    "system": {"data_item": "system"},
}


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.at = 1000.0

    def __call__(self) -> float:
        return self.at


def source(agent: Agent, clock: Clock | None = None, **options: Any) -> MtconnectSource:
    config = MtconnectConfig.model_validate(
        {"agent": agent.url, "device": "vmc-1", "fields": FIELDS, **options}
    )
    return MtconnectSource(config, clock=clock or Clock())


def reasons(reading: Polled) -> set[StrEnum]:
    return {m.reason for m in reading.missing.values()}


@pytest.mark.parametrize("version", sorted(NAMESPACES))
def test_current_once_then_samples_from_the_next_sequence(version: str) -> None:
    async def scenario() -> None:
        async with serving(version) as agent, source(agent) as mt:
            first = await mt.poll()
            assert first.missing == {}
            assert first.values == {
                "state": IDLE, "faults": 0, "parts": 10, "load": 12.5, "exec": 2, "system": 0,
            }  # fmt: skip
            agent.set("exec", "ACTIVE")
            agent.set("pc", "11")
            agent.set("Sload", "80.25")
            second = await mt.poll()
            assert (second.values["state"], second.values["parts"]) == (RUNNING, 11)
            assert second.values["load"] == 80.25
            third = await mt.poll()  # nothing new: nothing applied, the state holds
            assert third.values == second.values
            paths = [r.partition("?")[0] for r in agent.requests]
            assert paths == ["/vmc-1/current", "/vmc-1/sample", "/vmc-1/sample"]
            assert agent.requests[1].startswith(f"/vmc-1/sample?from={len(ITEMS) + 1}&count=1000")
            assert (mt.stats.resyncs, mt.stats.observations) == (1, 3)

    asyncio.run(scenario())


def test_the_state_preset_follows_execution_mode_and_availability() -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent) as mt:
            seen = []
            for item, value in [
                ("exec", "ACTIVE"), ("mode", "MANUAL"), ("exec", "READY"),
                ("mode", "AUTOMATIC"), ("exec", "FEED_HOLD"), ("exec", "PROGRAM_STOPPED"),
                ("exec", "STOPPED"),
            ]:  # fmt: skip
                agent.set(item, value)
                seen.append((await mt.poll()).values["state"])
            assert seen == [RUNNING, RUNNING, SETUP, IDLE, INTERRUPTED, INTERRUPTED, IDLE]
            agent.set("avail", "UNAVAILABLE")
            off = await mt.poll()
            assert off.missing["state"].reason is MtconnectMissingReason.UNAVAILABLE
            assert off.values["parts"] == 10  # other data items keep their own values

    asyncio.run(scenario())


def test_unavailable_and_unmapped_values_are_missing_never_invented() -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent) as mt:
            agent.set("pc", "UNAVAILABLE")
            agent.set("exec", "UNAVAILABLE")
            agent.set("Sload", "lots")
            reading = await mt.poll()
            assert reading.missing["parts"].reason is MtconnectMissingReason.UNAVAILABLE
            assert reading.missing["state"].reason is MtconnectMissingReason.UNAVAILABLE
            assert reading.missing["exec"].reason is MtconnectMissingReason.UNAVAILABLE
            assert reading.missing["load"].reason is MtconnectMissingReason.UNMAPPED
            assert "'lots', not a number" in str(reading.missing["load"])
            assert set(reading.values) == {"faults", "system"}

    asyncio.run(scenario())


def test_faults_count_active_fault_conditions() -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent) as mt:
            counted = []
            for item, level, code in [
                ("system", "Fault", "E101"), ("logic", "Fault", "P7"), ("system", "Fault", "E102"),
                ("system", "Warning", "W1"), ("system", "Normal", "E101"), ("system", "Normal", ""),
                ("logic", "Normal", ""),
            ]:  # fmt: skip
                agent.set(item, level, code)
                reading = await mt.poll()
                counted.append((reading.values["faults"], reading.values["system"]))
            assert counted == [(1, 2), (2, 2), (3, 2), (3, 2), (2, 2), (1, 0), (0, 0)]
            agent.set("logic", "Unavailable")
            reading = await mt.poll()
            assert reading.missing["faults"].reason is MtconnectMissingReason.UNAVAILABLE
            fresh = source(agent, fields={"f": {"preset": "faults", "conditions": ["system"]}})
            async with fresh:
                agent.set("system", "Fault", "E9")
                assert (await fresh.poll()).values == {"f": 1}  # from /current: the same

    asyncio.run(scenario())


def test_the_fault_code_is_the_latest_active_faults_native_code() -> None:
    """An MTConnect machine's alarm code is its Fault's nativeCode, as a Modbus machine's
    alarm register gives it: the latest active Fault, 0 when none is, missing when the code
    is no number (never a code made up)."""

    async def scenario() -> None:
        fields = {"code": {"preset": "fault_code", "conditions": ["system"]}}
        async with serving() as agent, source(agent, fields=fields) as mt:
            codes = []
            for level, code in [
                ("Fault", "1021"), ("Fault", "1030"), ("Normal", "1030"), ("Warning", "7"),
                ("Normal", ""),
            ]:  # fmt: skip
                agent.set("system", level, code)
                codes.append((await mt.poll()).values.get("code"))
            assert codes == [1021, 1030, 1021, 1021, 0]
            agent.set("system", "Fault", "E101")
            reading = await mt.poll()
            assert reading.missing["code"].reason is MtconnectMissingReason.UNMAPPED
            assert "nativeCode 'E101' is not a number" in str(reading.missing["code"])

    asyncio.run(scenario())


def test_an_agent_restart_resyncs_and_counts_nothing_twice() -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent) as mt:
            counter = CounterTracker("vmc", "good", width_bits=64, max_parts_per_s=None)
            parts = counter.read(int((await mt.poll()).values["parts"]), 0.0) or 0
            for at, value in enumerate(["11", "12", "12", "13"], 1):
                if at == 3:  # the agent restarts and numbers from 1 again, past our next
                    agent.restart()
                    for _ in range(30):
                        agent.set("Sload", "50")
                    agent.set("pc", "12")
                agent.set("pc", value)
                reading = await mt.poll()
                parts += counter.read(int(reading.values["parts"]), float(at)) or 0
            assert parts == 3  # 10 -> 13
            assert (mt.stats.restarts, mt.stats.resyncs) == (1, 2)

    asyncio.run(scenario())


def test_a_buffer_overrun_resyncs_from_current() -> None:
    async def scenario() -> None:
        async with serving(buffer=10) as agent, source(agent) as mt:
            await mt.poll()
            for count in range(11, 31):  # 20 changes: the oldest we need is gone
                agent.set("pc", str(count))
            reading = await mt.poll()
            assert reading.values["parts"] == 30
            assert (mt.stats.overruns, mt.stats.resyncs) == (1, 2)
            assert mt.stats.observations == 0  # /current had the outcome; nothing replayed
            agent.set("pc", "31")
            assert (await mt.poll()).values["parts"] == 31
            assert mt.stats.observations == 1

    asyncio.run(scenario())


def test_a_small_sample_count_catches_up_in_order() -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent, sample_count=2) as mt:
            await mt.poll()
            for count in range(11, 16):
                agent.set("pc", str(count))
            seen = [(await mt.poll()).values["parts"] for _ in range(4)]
            assert seen == [12, 14, 15, 15]
            assert mt.stats.observations == 5

    asyncio.run(scenario())


def test_a_dead_agent_is_missing_then_recovers_without_a_restart() -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent) as mt:
            await mt.poll()
            await agent.stop()
            down = await mt.poll()
            assert reasons(down) == {MtconnectMissingReason.CONNECTION}
            assert down.values == {}
            agent.set("pc", "40")
            await agent.start()  # the same port
            back = await mt.poll()
            assert back.values["parts"] == 40
            assert mt.stats.resyncs == 2

    asyncio.run(scenario())


def test_the_circuit_opens_then_one_trial_decides() -> None:
    async def scenario() -> None:
        clock = Clock()
        async with serving() as agent, source(agent, clock, failures_to_open=2, open_s=10) as mt:
            await agent.stop()
            for _ in range(2):
                assert reasons(await mt.poll()) == {MtconnectMissingReason.CONNECTION}
            assert mt.stats.circuit_opens == 1
            sent = mt.stats.requests
            refused = await mt.poll()
            assert reasons(refused) == {MtconnectMissingReason.CIRCUIT_OPEN}
            assert mt.stats.requests == sent  # nothing sent while open
            clock.at += 10
            assert reasons(await mt.poll()) == {MtconnectMissingReason.CONNECTION}  # the trial
            assert mt.stats.circuit_opens == 2
            assert reasons(await mt.poll()) == {MtconnectMissingReason.CIRCUIT_OPEN}
            await agent.start()
            clock.at += 10
            assert (await mt.poll()).missing == {}
            assert mt.stats.errors["circuit_open"] == 2

    asyncio.run(scenario())


def test_a_hanging_agent_times_out() -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent, timeout_s=0.2) as mt:
            agent.mode = "hang"
            reading = await mt.poll()
            assert reasons(reading) == {MtconnectMissingReason.TIMEOUT}
            agent.mode = "ok"
            assert (await mt.poll()).missing == {}

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("mode", "detail"), [("garbage", "not XML"), ("doctype", "declares a DTD: refused")]
)
def test_a_bad_document_is_missing_with_its_reason(mode: str, detail: str) -> None:
    async def scenario() -> None:
        async with serving() as agent, source(agent) as mt:
            await mt.poll()
            agent.mode = mode
            reading = await mt.poll()
            assert reasons(reading) == {MtconnectMissingReason.INVALID_DOCUMENT}
            assert detail in str(reading.missing["parts"])
            agent.mode = "ok"
            assert (await mt.poll()).missing == {}

    asyncio.run(scenario())


def test_an_unknown_data_item_or_device_is_named() -> None:
    async def scenario() -> None:
        async with serving() as agent:
            fields = {"x": {"data_item": "Spindle"}}
            async with source(agent, fields=fields) as mt:
                reading = await mt.poll()
        assert reading.missing["x"].reason is MtconnectMissingReason.NOT_FOUND
        assert "'Spindle' is not in the device's stream" in str(reading.missing["x"])
        async with serving() as agent:
            agent.two_devices = True
            async with source(agent, device=None) as mt:
                several = await mt.poll()
        assert reasons(several) == {MtconnectMissingReason.NOT_FOUND}
        assert "streams devices ['vmc-1', 'vmc-2']: give one in `device`" in str(
            several.missing["parts"]
        )
        async with serving() as agent, source(agent, device="vmc-9") as mt:
            reading = await mt.poll()
        assert reasons(reading) == {MtconnectMissingReason.AGENT_ERROR}
        assert "agent error INVALID_REQUEST" in str(reading.missing["parts"])

    asyncio.run(scenario())


def _mt(fields: dict[str, Any], agent: str = "http://a") -> dict[str, Any]:
    return {"mtconnect": {"agent": agent, "fields": fields}}


@pytest.mark.parametrize(
    ("source_", "message"),
    [
        ({}, "give exactly one of modbus, mqtt, mtconnect, opcua, slmp (given: none)"),
        (
            {"mqtt": {"topic": "t", "values": {"s": "a"}}, **_mt({"s": {"preset": "state"}})},
            "given: mqtt, mtconnect",
        ),
        (_mt({"s": {}}), "exactly one of data_item and preset"),
        (_mt({"s": {"preset": "state", "map": {"A": 1}}}), "map applies to a data_item only"),
        (
            _mt({"s": {"data_item": "x", "conditions": ["c"]}}),
            "conditions applies to presets faults and fault_code only",
        ),
        (
            _mt({"s": {"preset": "faults", "execution": "e"}}),
            "execution applies to preset state only",
        ),
        (_mt({"s": {"preset": "state"}}, "ftp://a"), "URL scheme should be 'http' or 'https'"),
        (
            _mt({"t": {"preset": "state"}}),
            "fields ['s'] are not read by the source (it reads ['t'])",
        ),
    ],
)
def test_configuration_errors(source_: dict[str, Any], message: str) -> None:
    assert message in refusal(source_)


def test_the_example_machine_reads_mtconnect_and_check_says_so(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, {"KYOSO_BROKER_PASSWORD": "x"})
    machine = next(m for m in config.machines if m.source.mtconnect is not None)
    assert machine.source.kind == "mtconnect"
    fields = {"state", "faults", "fault_code", "parts", "mode", "spindle_load"}
    assert machine.source.fields == fields
    broken = tmp_path / "gateway.yaml"
    broken.write_text(EXAMPLE.read_text().replace("{preset: faults}", "{preset: fault}"))
    with pytest.raises(ConfigError) as caught:
        load_config(broken, {"KYOSO_BROKER_PASSWORD": "x"})
    assert "mtconnect.fields.faults.preset" in str(caught.value)


def test_the_gateway_builds_an_mtconnect_source_by_kind(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving() as agent:
            config = load_config(EXAMPLE, {"KYOSO_BROKER_PASSWORD": "x"})
            machine = next(m for m in config.machines if m.source.mtconnect is not None)
            assert machine.source.mtconnect is not None
            mtconnect = machine.source.mtconnect.model_copy(
                update={"agent": agent.url, "device": "vmc-1"}
            )
            machine = machine.model_copy(
                update={"source": machine.source.model_copy(update={"mtconnect": mtconnect})}
            )
            outbox = config.outbox.model_copy(update={"path": tmp_path / "outbox.db"})
            broker = config.broker.model_copy(update={"tls": None})  # not connected here
            config = config.model_copy(
                update={"outbox": outbox, "broker": broker, "machines": [machine]}
            )
            gateway = Gateway(config)
            assert isinstance(gateway.sources[machine.id], MtconnectSource)
            agent.set("exec", "ACTIVE")
            reading = await gateway.sources[machine.id].poll()
            assert reading.values["state"] == RUNNING
            await gateway.stop()  # closes the source's HTTP client with the rest

    asyncio.run(scenario())


def test_the_simulated_agent_through_restarts_overruns_and_faults() -> None:
    factory = small_factory("mt-works", 1901, [], [mtconnect_machine("mc-01", buffer_size=16)])
    start = 1_767_772_800.0  # 2026-01-07 08:00 UTC
    moment = [start]
    simulation = FactorySimulation(factory, start)

    async def scenario() -> None:
        [agent] = mtconnect_agents(factory, simulation.models, lambda: moment[0]).values()
        await agent.start()
        fields = {
            "state": {"preset": "state"},
            "faults": {"preset": "faults"},
            "good": {"data_item": "part_good"},
        }
        config = MtconnectConfig.model_validate(
            {"agent": agent.endpoint.url, "device": agent.endpoint.device, "fields": fields}
        )
        try:
            async with MtconnectSource(config) as mt:
                for step in range(12):  # half an hour a poll: more changes than the buffer
                    moment[0] += 1800
                    if step == 6:
                        await agent.restart()
                    reading = await mt.poll()
                    assert reading.missing == {}, (step, reading.missing)
                    assert reading.values["state"] in {RUNNING, IDLE, SETUP, INTERRUPTED}
                assert (mt.stats.restarts, mt.stats.overruns > 0) == (1, True)
                agent.set_available(False)
                off = await mt.poll()
                assert reasons(off) == {MtconnectMissingReason.UNAVAILABLE}
                agent.set_available(True)
                for kind, reason in [
                    (FaultKind.BUSY, MtconnectMissingReason.HTTP),
                    (FaultKind.JUNK, MtconnectMissingReason.INVALID_DOCUMENT),
                    (FaultKind.DROP, MtconnectMissingReason.CONNECTION),
                ]:
                    agent.set_fault(Fault(kind))
                    assert reasons(await mt.poll()) == {reason}, kind
                    agent.set_fault(None)
                    moment[0] += 60
                    assert (await mt.poll()).missing == {}, kind
        finally:
            await agent.stop()

    asyncio.run(scenario())


def test_probe_lists_every_data_item_with_its_value() -> None:
    async def scenario() -> str:
        async with serving("1.3") as agent:
            agent.set("system", "Fault", "E101")
            items = await mtconnect_probe.probe(agent.url)
            assert {(p.item.id, p.value) for p in items} >= {("pc", "10"), ("system", "Fault")}
            code, out, err = await _kyoso("gateway", "probe", "--mtconnect", agent.url)
            assert code == 0, err
            return out

    out = asyncio.run(scenario())
    lines = out.splitlines()
    assert lines[0] == "device vmc-1"
    assert lines[1].split() == ["id", "name", "category", "type", "subType", "units", "value"]
    assert any(
        line.split() == ["pc", "PartCountAct", "EVENT", "PART_COUNT", "ALL", "10"] for line in lines
    )
    assert any(
        line.split() == ["Sload", "Sload", "SAMPLE", "LOAD", "PERCENT", "12.5"] for line in lines
    )
    assert any(line.split() == ["system", "CONDITION", "SYSTEM", "Fault"] for line in lines)


def test_probe_of_nothing_fails_cleanly() -> None:
    async def scenario() -> tuple[int, str, str]:
        async with serving() as agent:
            url = agent.url
        return await _kyoso("gateway", "probe", "--mtconnect", url)

    code, _, err = asyncio.run(scenario())
    assert code == 1
    assert err.startswith("probe failed: http://127.0.0.1:")


async def _kyoso(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kyoso.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
