"""The Kyoso gateway as a Sparkplug B edge node, read by a host on Eclipse Tahu's libraries.

One simulated Modbus machine read over TCP, one gateway through a real Mosquitto, and
``tests/sparkplug/edge_host.js`` (Tahu's ``sparkplug-payload`` on the ``mqtt`` client) as
the host: it prints every Sparkplug message it receives, decoded by Tahu, and sends NCMD
and STATE when told. The test steps a manual clock one publish interval at a time, polling
the machine and emitting, as the agent's loops would.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from examples import documented_defaults
from pydantic import ValidationError
from services import Mosquitto
from simfactory import machine, small_factory
from sparkplug_node import NodeScript, sparkplug_node_modules
from test_gateway_acceptance import ManualClock
from test_gateway_config import ENV, EXAMPLE
from test_gateway_publisher import until

from kyoso.contract import Sample
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig, load_config
from kyoso.gateway.http import GatewayCollector
from kyoso.gateway.sparkplug_config import SparkplugConfig
from kyoso.simulators.behaviour import MachineModel, machine_seed
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import ModbusServers

__all__ = ["sparkplug_node_modules"]  # the fixture, used by name

START = datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp()  # a Monday, within the shift
PUBLISH_S = 10.0
BOUND_S = 30.0
Event = dict[str, Any]

DEVICE_METRICS = {
    "Kyoso/State": "String",
    "Kyoso/Alarm": "UInt32",
    "good_count": "UInt64",
    "Kyoso/Counters/good": "UInt64",
    "reject_count": "UInt64",
    "Kyoso/Counters/reject": "UInt64",
    **{
        name: "Double"
        for field in ("load_pct", "power_kw")
        for name in (field, *(f"Kyoso/Signals/{field}/{s}" for s in ("Mean", "Min", "Max")))
    },
}
"""Every metric of a machine's DBIRTH, by name, with its type (the simulator's machine:
state code, alarm code, two counters, two signals)."""


class CuttableProxy:
    """A TCP proxy to the broker whose connections :meth:`cut` aborts: the broker sees the
    gateway's connection end without a DISCONNECT, as when its process dies."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@dataclass
class Rig:
    """A gateway with Sparkplug on, its machine, and the host watching its group."""

    gateway: Gateway
    host: NodeScript
    clock: ManualClock
    group: str
    settings: dict[str, Any]
    running: bool = True

    async def stop(self) -> None:
        """Stop the gateway (once)."""
        if self.running:
            self.running = False
            await self.gateway.stop()

    async def next(self, kind: str | None = None) -> Event:
        """The next message the host received of Sparkplug type ``kind`` (skipping others);
        ``*``: any; without: the next the edge node published."""

        def wanted(event: Event) -> bool:
            if event["event"] != "message":
                return False
            found = event["topic"].split("/")[1 if "/STATE/" in event["topic"] else 2]
            if kind is None:
                return found not in {"NCMD", "STATE"}
            return kind in ("*", found)

        return await asyncio.to_thread(self.host.next, wanted)

    async def take(self, count: int, kind: str) -> list[Event]:
        return [await self.next(kind) for _ in range(count)]

    async def advance(self, intervals: int) -> list[Sample]:
        """Move the clock ``intervals`` publish intervals on, polling and emitting at each
        end; return the samples emitted."""
        node = self.gateway.sparkplug
        assert node is not None
        samples: list[Sample] = []
        for _ in range(intervals):
            self.clock.moment += PUBLISH_S
            before = node.outbox.last_seq
            await self.gateway.poll("m1")  # may close a sample early: a state change
            self.gateway.emit(self.clock.moment)
            rows = node.outbox.pending(1000, after=before)  # none sent yet: no await since
            samples += [Sample.model_validate_json(row.payload) for row in rows]
        return samples

    def command(self, **command: Any) -> None:
        self.host.send(command)


@contextlib.asynccontextmanager
async def rig(
    broker: Mosquitto,
    workdir: Path,
    *,
    sparkplug: dict[str, Any] | None = None,
    gateway_port: int | None = None,
) -> AsyncIterator[Rig]:
    """A started gateway with a ``sparkplug`` section (``sparkplug`` added to it, its broker
    at ``gateway_port`` if given), and the host, subscribed before the gateway starts."""
    factory_id = f"spb-{uuid.uuid4().hex[:12]}"
    group = f"group-{uuid.uuid4().hex[:8]}"
    factory = small_factory(factory_id, 7, ["line"], [machine("m1", "line", 1, "ABCD")])
    [config] = factory.machines
    model = MachineModel(
        config.id,
        config.behaviour,
        factory.calendars[config.calendar],
        machine_seed(factory.seed, config.id),
        START,
    )
    clock = ManualClock(START)
    url = f"mqtt://{broker.host}:{broker.port}"
    with NodeScript("edge_host.js", url, group) as host:
        await asyncio.to_thread(host.next, lambda e: e["event"] == "ready")
        async with ModbusServers(factory, {config.id: model}, clock.now) as servers:
            settings = gateway_config(
                factory,
                servers.endpoints,
                gateway="gw-01",
                broker={"host": broker.host, "port": broker.port},
                outbox_path=workdir / "outbox.sqlite3",
                poll_interval_s=PUBLISH_S,
                publish_interval_s=PUBLISH_S,
            )
            spb_broker = {"host": broker.host, "port": gateway_port or broker.port}
            settings["sparkplug"] = {"group_id": group, "broker": spb_broker, **(sparkplug or {})}
            gateway = Gateway(GatewayConfig.model_validate(settings), clock=clock)
            await gateway.start()
            await gateway.poll("m1")  # the first reading, at START
            rigged = Rig(gateway, host, clock, group, settings)
            try:
                yield rigged
            finally:
                await rigged.stop()


def _metrics(event: Event) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = event["payload"]["metrics"]
    return metrics


def _seq(event: Event) -> int:
    return int(event["payload"]["seq"])


def _by_name(event: Event) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in _metrics(event)}


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10 * BOUND_S))


def _check_data(event: Event, sample: Sample, dbirth: Event, *, historical: bool) -> None:
    """``event`` is the DDATA of ``sample``: aliases only, the values, the sample's end."""
    alias = {m["name"]: m["alias"] for m in _metrics(dbirth)}
    metrics = {m["alias"]: m for m in _metrics(event)}
    assert all("name" not in m for m in metrics.values())
    assert set(metrics) == set(alias.values())
    ts = str(round(sample.ts.timestamp() * 1000))
    assert {m["timestamp"] for m in metrics.values()} == {ts}
    assert all(m.get("isHistorical", False) is historical for m in metrics.values())
    assert metrics[alias["Kyoso/State"]]["value"] == sample.state
    good = sample.counters["good"]
    assert metrics[alias["Kyoso/Counters/good"]]["value"] == str(good.delta)
    assert metrics[alias["good_count"]]["value"] == str(good.total)
    power = sample.signals["power_kw"]
    assert metrics[alias["power_kw"]]["value"] == pytest.approx(power.last)
    assert metrics[alias["Kyoso/Signals/power_kw/Mean"]]["value"] == pytest.approx(power.mean)
    assert metrics[alias["Kyoso/Signals/power_kw/Max"]]["value"] == pytest.approx(power.max)


@pytest.mark.integration
@pytest.mark.usefixtures("sparkplug_node_modules")
def test_births_name_every_metric_with_an_alias_and_data_carry_aliases_only(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as r:
            nbirth, dbirth = await r.next("NBIRTH"), await r.next("DBIRTH")
            assert nbirth["topic"] == f"spBv1.0/{r.group}/NBIRTH/gw-01"
            assert dbirth["topic"] == f"spBv1.0/{r.group}/DBIRTH/gw-01/m1"
            assert (_seq(nbirth), _seq(dbirth)) == (0, 1)
            node = _by_name(nbirth)
            assert (node["bdSeq"]["type"], node["bdSeq"]["value"]) == ("UInt64", "0")
            rebirth = node["Node Control/Rebirth"]
            assert (rebirth["type"], rebirth["value"]) == ("Boolean", False)
            device = _by_name(dbirth)
            assert {name: m["type"] for name, m in device.items()} == DEVICE_METRICS
            aliases = [m["alias"] for m in _metrics(nbirth) + _metrics(dbirth)]
            assert len(set(aliases)) == len(aliases)  # unique across the node
            samples = await r.advance(3)
            assert samples
            data = await r.take(len(samples), "DDATA")
            assert [_seq(e) for e in data] == list(range(2, 2 + len(samples)))
            for event, sample in zip(data, samples, strict=True):
                assert event["topic"] == f"spBv1.0/{r.group}/DDATA/gw-01/m1"
                _check_data(event, sample, dbirth, historical=False)
            # ... and the Kyoso JSON samples went out as before, to the Kyoso broker
            publisher = r.gateway.publisher
            await until(lambda: publisher.stats.published_samples >= len(samples), BOUND_S, "json")
            node_outbox = r.gateway.sparkplug.outbox if r.gateway.sparkplug else None
            assert node_outbox is not None
            await until(lambda: node_outbox.depth() == 0, BOUND_S, "the node's outbox emptied")

    run(scenario)


@pytest.mark.integration
@pytest.mark.usefixtures("sparkplug_node_modules")
def test_seq_runs_from_the_birth_and_wraps_after_255(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as r:
            births = [await r.next("NBIRTH"), await r.next("DBIRTH")]
            samples = await r.advance(260)
            data = await r.take(len(samples), "DDATA")
            seqs = [_seq(e) for e in births + data]
            assert len(seqs) > 257
            assert seqs == [i % 256 for i in range(len(seqs))]

    run(scenario)


@pytest.mark.integration
@pytest.mark.usefixtures("sparkplug_node_modules")
def test_a_rebirth_command_from_the_host_births_again(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as r:
            first = await r.next("NBIRTH")
            await r.next("DBIRTH")
            await r.take(len(await r.advance(2)), "DDATA")
            r.command(op="rebirth", node="gw-01")
            again, dbirth = await r.next(), await r.next()
            assert again["topic"].split("/")[2] == "NBIRTH"
            assert dbirth["topic"].split("/")[2] == "DBIRTH"
            assert (_seq(again), _seq(dbirth)) == (0, 1)
            assert _by_name(again)["bdSeq"]["value"] == _by_name(first)["bdSeq"]["value"]
            assert r.gateway.sparkplug is not None
            assert r.gateway.sparkplug.stats.rebirth_requests == 1
            scraped = {f.name: f for f in GatewayCollector(r.gateway).collect()}
            events = {
                s.labels["event"]: s.value
                for s in scraped["kyoso_gateway_sparkplug_events"].samples
            }
            assert (events["births"], events["rebirth_requests"]) == (2, 1)
            assert scraped["kyoso_gateway_sparkplug_host_online"].samples[0].value == 1
            # the device's birth carries its latest values
            latest = _by_name(dbirth)["Kyoso/State"]
            assert latest["value"] in {"running", "idle", "setup", "down", "planned_stop"}
            samples = await r.advance(1)
            data = await r.take(len(samples), "DDATA")
            assert [_seq(e) for e in data] == list(range(2, 2 + len(samples)))
            _check_data(data[0], samples[0], dbirth, historical=False)

    run(scenario)


@pytest.mark.integration
@pytest.mark.usefixtures("sparkplug_node_modules")
def test_the_will_is_an_ndeath_with_the_births_bdseq_kept_across_restarts(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async def scenario() -> None:
        proxy = CuttableProxy(mosquitto)
        async with proxy, rig(mosquitto, tmp_path, gateway_port=proxy.port) as r:
            first = _by_name(await r.next("NBIRTH"))["bdSeq"]["value"]
            assert first == "0"
            proxy.cut()  # no DISCONNECT: the broker publishes the will
            death = await r.next("NDEATH")
            assert _by_name(death)["bdSeq"]["value"] == first
            reborn = await r.next("NBIRTH")  # reconnected: a new session
            assert _by_name(reborn)["bdSeq"]["value"] == "1"
            assert _seq(reborn) == 0
            await r.stop()  # cleanly: the node says NDEATH itself, with its bdSeq
            death = await r.next("NDEATH")
            assert _by_name(death)["bdSeq"]["value"] == "1"
            gateway = Gateway(GatewayConfig.model_validate(r.settings), clock=r.clock)
            await gateway.start()
            try:
                restarted = await r.next("NBIRTH")
                assert _by_name(restarted)["bdSeq"]["value"] == "2"
            finally:
                await gateway.stop()

    run(scenario)


@pytest.mark.integration
@pytest.mark.usefixtures("sparkplug_node_modules")
def test_sparkplug_can_replace_the_kyoso_samples(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path, sparkplug={"kyoso_samples": False}) as r:
            dbirth = await r.next("DBIRTH")
            samples = await r.advance(2)
            for event, sample in zip(await r.take(len(samples), "DDATA"), samples, strict=True):
                _check_data(event, sample, dbirth, historical=False)
            assert r.gateway.outbox.last_seq == -1  # no Kyoso JSON sample numbered
            assert r.gateway.publisher.stats.published_samples == 0

    run(scenario)


def test_the_example_documents_the_sparkplug_section() -> None:
    config = load_config(EXAMPLE, ENV)
    assert config.sparkplug is not None
    assert config.sparkplug.group_id == "okada"
    optional = {
        k: f.default for k, f in SparkplugConfig.model_fields.items() if not f.is_required()
    }
    assert documented_defaults(EXAMPLE, "sparkplug") == optional


@pytest.mark.parametrize("option", ["group_id", "edge_node_id", "primary_host_id"])
def test_an_id_sparkplug_cannot_carry_is_refused(option: str) -> None:
    with pytest.raises(ValidationError, match=r"id 'a\+b' contains \+"):
        SparkplugConfig.model_validate({"group_id": "g", option: "a+b"})
