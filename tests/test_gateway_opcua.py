"""The OPC UA source against real servers: asyncua's own example server (``uaserver
--populate``, written by nobody here, run as a subprocess) and the simulator's umati-like
machine servers, over loopback TCP, through a proxy that can cut the network.

No test asserts a duration: waits poll a condition (bounded generously), and what is
asserted is what arrives and in which order.
"""

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from simfactory import opcua_machine, small_factory
from test_gateway_config import refusal

from kyoso.contract import MachineState
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import ConfigError, load_config
from kyoso.gateway.mtconnect_xml import IDLE, INTERRUPTED, RUNNING, SETUP
from kyoso.gateway.opcua import OpcuaSource
from kyoso.gateway.opcua_config import OpcuaConfig, stacklight_state, umati_state
from kyoso.gateway.opcua_errors import OpcuaMissingReason
from kyoso.gateway.source import Polled
from kyoso.simulators.opcua import (
    STATE_VIEW,
    CertificateFiles,
    OpcuaMachineServer,
    make_certificate,
    opcua_servers,
)
from kyoso.simulators.runner import FactorySimulation

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"
WAIT_S = 30.0
START = 1_767_772_800.0  # 2026-01-07 08:00 UTC, in the 06:00-22:00 shift
FAST = {"timeout_s": 1.0, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "open_s": 0.2}
"""Quick recovery, so that a test waits little; the breaker still opens and closes."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds, for at most WAIT_S."""
    async with asyncio.timeout(WAIT_S):
        while not await condition():  # noqa: ASYNC110  # a condition of another process
            await asyncio.sleep(0.02)
    assert await condition(), what


async def reading_where(source: OpcuaSource, check: Callable[[Polled], bool]) -> Polled:
    """The first poll whose reading passes ``check`` (bounded by WAIT_S)."""
    found: list[Polled] = []

    async def polled() -> bool:
        found.append(await source.poll())
        return check(found[-1])

    await until(polled, "a reading that passes the check")
    return found[-1]


def source(endpoint: str, fields: dict[str, Any], **options: Any) -> OpcuaSource:
    return OpcuaSource(
        OpcuaConfig.model_validate({"endpoint": endpoint, "fields": fields, **FAST, **options})
    )


# -- asyncua's example server ---------------------------------------------------------------


class ExampleServer:
    """``uaserver --populate`` of asyncua in a subprocess, on one port across restarts."""

    def __init__(self, certificate: CertificateFiles | None = None) -> None:
        self.port = _free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/freeopcua/server/"
        self.certificate = certificate
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--populate", "-u", self.url]
        if self.certificate is not None:
            args += ["--certificate", str(self.certificate.certificate)]
            args += ["--private_key", str(self.certificate.private_key)]
        code = "import sys; from asyncua.tools import uaserver; uaserver()"
        self.process = subprocess.Popen([sys.executable, "-c", code, *args])

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(WAIT_S)
            self.process = None


@pytest.fixture
def example() -> Iterator[ExampleServer]:
    server = ExampleServer()
    server.start()
    yield server
    server.stop()


MY_OBJECT = "0:Objects/2:MyObject"


def test_node_ids_browse_paths_and_subscriptions_on_asyncua_example_server(
    example: ExampleServer,
) -> None:
    fields = {
        "sine": {"node": f"{MY_OBJECT}/2:MyVariable", "sampling_interval_ms": 50},
        "writable": {"node": "ns=2;i=2", "scale": 10},
        "property": {"node": f"{MY_OBJECT}/2:MyProperty", "map": {"I am a property": 7}},
        "text": {"node": f"{MY_OBJECT}/2:MyProperty"},
        "nowhere": {"node": f"{MY_OBJECT}/2:Nothing"},
        "server_state": {"node": "i=2259"},
    }

    async def scenario() -> None:
        async with source(example.url, fields, publishing_interval_ms=50) as opcua:
            subscribed = {"sine", "writable", "property", "server_state"}
            first = await reading_where(opcua, lambda r: subscribed <= r.values.keys())
            assert first.values["writable"] == pytest.approx(67.0)
            assert first.values["property"] == 7
            assert first.values["server_state"] == 0  # ServerState Running
            assert first.missing["text"].reason is OpcuaMissingReason.UNMAPPED
            assert "I am a property" in first.missing["text"].detail
            assert first.missing["nowhere"].reason is OpcuaMissingReason.NOT_FOUND
            assert "BadNoMatch" in str(first.missing["nowhere"])
            # The example server writes a new sine value every second: it arrives by itself.
            later = await reading_where(
                opcua, lambda r: r.values.get("sine") != first.values["sine"]
            )
            assert isinstance(later.values["sine"], float)
            assert opcua.stats.reads == 0  # subscribed: no poll went to the server
            assert opcua.stats.sessions == 1

    asyncio.run(scenario())


def test_poll_mode_reads_every_node_on_each_poll(example: ExampleServer) -> None:
    async def scenario() -> None:
        fields = {"writable": {"node": "ns=2;i=2"}}
        async with source(example.url, fields, mode="poll") as opcua:
            reading = await reading_where(opcua, lambda r: "writable" in r.values)
            reads = opcua.stats.reads
            await opcua.poll()
            assert reading.values["writable"] == pytest.approx(6.7)
            assert opcua.stats.reads == reads + 1
            assert opcua.stats.notifications == 0

    asyncio.run(scenario())


def test_a_restart_of_the_example_server_is_recovered_without_a_gateway_restart(
    example: ExampleServer,
) -> None:
    async def scenario() -> None:
        fields = {"writable": {"node": f"{MY_OBJECT}/2:MyWritableVariable"}}
        async with source(example.url, fields) as opcua:
            await reading_where(opcua, lambda r: "writable" in r.values)
            example.stop()
            gone = await reading_where(opcua, lambda r: "writable" in r.missing)
            assert gone.missing["writable"].reason in (
                OpcuaMissingReason.SESSION_LOST,
                OpcuaMissingReason.CONNECTION,
                OpcuaMissingReason.CIRCUIT_OPEN,
            )
            example.start()  # the same port, a new process: the session must be new
            back = await reading_where(opcua, lambda r: "writable" in r.values)
            assert back.values["writable"] == pytest.approx(6.7)
            assert opcua.stats.sessions == 2
            assert opcua.stats.losses == 1

    asyncio.run(scenario())


def test_basic256sha256_sign_and_encrypt_with_the_example_server(tmp_path: Path) -> None:
    server_cert = make_certificate(tmp_path, "server", "urn:freeopcua:python:server", client=False)
    client_cert = make_certificate(tmp_path, "gateway", "urn:kyoso:gateway", client=True)
    example = ExampleServer(server_cert)
    example.start()
    security = {
        "policy": "Basic256Sha256",
        "mode": "SignAndEncrypt",
        "certificate": str(client_cert.certificate),
        "private_key": str(client_cert.private_key),
        "server_certificate": str(server_cert.certificate),
    }

    async def scenario() -> None:
        fields = {"writable": {"node": "ns=2;i=2"}}
        async with source(example.url, fields, security=security) as opcua:
            reading = await reading_where(opcua, lambda r: "writable" in r.values)
            assert reading.values["writable"] == pytest.approx(6.7)
            assert opcua._client is not None
            policy = opcua._client.security_policy
            assert policy.URI.endswith("#Basic256Sha256")

    try:
        asyncio.run(scenario())
    finally:
        example.stop()


# -- the simulator's umati machine servers ---------------------------------------------------


class Moment:
    """Simulated time the test moves by hand."""

    def __init__(self) -> None:
        self.at = START

    def now(self) -> float:
        return self.at


@contextlib.asynccontextmanager
async def machine_server(**options: Any) -> AsyncIterator[tuple[OpcuaMachineServer, Moment]]:
    factory = small_factory("ua-works", 2701, [], [opcua_machine("mill-01")])
    moment = Moment()
    simulation = FactorySimulation(factory, START)
    [server] = opcua_servers(factory, simulation.models, moment.now).values()
    for name, value in options.items():
        setattr(server, name, value)
    await server.start()
    try:
        yield server, moment
    finally:
        await server.stop()


def _umati_fields(server: OpcuaMachineServer) -> dict[str, Any]:
    endpoint = server.endpoint
    lamp = f"{endpoint.machine_path}/3:Monitoring/3:Stacklight"
    return {
        "state": {"node": endpoint.machine_path, "preset": "state", "channel": "Channel1"},
        "lamps": {
            "preset": "stacklight",
            "lamps": {c: f"{lamp}/3:{c.title()}/3:SignalOn" for c in ("red", "yellow", "green")},
        },
        "alarm": {"node": endpoint.node("AlarmCode")},
        "faults": {"node": endpoint.messages_path, "preset": "faults"},
        "code": {"node": endpoint.messages_path, "preset": "fault_code"},
        "good": {"node": endpoint.node("PartsGood")},
    }


def test_the_umati_state_preset_follows_the_simulated_machine() -> None:
    async def scenario() -> None:
        async with machine_server(update_s=None) as (server, moment):
            model = server.model
            model.advance(START + 86_400)
            seen: dict[MachineState, tuple[Any, ...]] = {}
            async with source(
                server.endpoint.url, _umati_fields(server), publishing_interval_ms=20
            ) as opcua:
                await reading_where(opcua, lambda r: not r.missing)
                for segment in model.segments:
                    if segment.state in seen or segment.start < START:
                        continue
                    moment.at = (segment.start + segment.end) / 2
                    await server.update()
                    snap = model.snapshot(moment.at)
                    alarm = segment.alarm if segment.state is MachineState.DOWN else 0
                    shown = {
                        "good": snap.good_total,
                        "alarm": alarm,
                        "code": alarm,  # from the alarm events
                        "faults": 1 if alarm else 0,
                        "state": umati_state(_shown(server)),
                    }

                    def arrived(r: Polled, shown: dict[str, Any] = shown) -> bool:
                        return all(r.values.get(k) == v for k, v in shown.items())

                    reading = await reading_where(opcua, arrived)
                    seen[segment.state] = (reading.values["state"], reading.values["lamps"])
            # What the gateway's from_code then maps; a planned stop shows as idle.
            codes = {"running": RUNNING, "idle": IDLE, "setup": SETUP, "down": INTERRUPTED}
            codes["planned_stop"] = IDLE
            for state, (code, lamps) in seen.items():
                assert code == codes[state.value], state
                assert lamps == (IDLE if state.value == "setup" else code), state
            assert {s.value for s in seen} == set(codes)

    asyncio.run(scenario())


def test_an_alarm_active_before_the_session_comes_by_condition_refresh() -> None:
    async def scenario() -> None:
        async with machine_server(update_s=None) as (server, moment):
            model = server.model
            model.advance(START + 86_400)
            down = next(s for s in model.segments if s.state is MachineState.DOWN)
            moment.at = (down.start + down.end) / 2
            await server.update()  # the alarm event goes out with nobody listening
            assert server.alarm == down.alarm
            fields = {k: v for k, v in _umati_fields(server).items() if k in ("faults", "code")}
            async with source(server.endpoint.url, fields) as opcua:
                reading = await reading_where(opcua, lambda r: not r.missing)
                assert reading.values == {"faults": 1, "code": down.alarm}
                moment.at = down.end + 1
                await server.update()  # cleared
                await reading_where(opcua, lambda r: r.values == {"faults": 0, "code": 0})

    asyncio.run(scenario())


def _shown(server: OpcuaMachineServer) -> dict[str, object]:
    snap = server.model.snapshot(server._now())
    mode, channel, program, _ = STATE_VIEW[snap.state]
    return {"operation_mode": mode, "channel_state": channel, "program_state": program}


@pytest.mark.parametrize(
    ("mode", "channel", "program", "code"),
    [
        (1, 0, "Running", RUNNING),
        (0, 0, None, RUNNING),  # a manual mode with an active channel still cuts metal
        (1, 2, "Ended", IDLE),
        (1, 2, "Initializing", IDLE),
        (2, 2, "Ended", SETUP),
        (0, 1, "Interrupted", SETUP),  # manual with an interrupted channel: set-up work
        (1, 1, "Interrupted", INTERRUPTED),
        (1, 2, "Aborted", INTERRUPTED),
        (4, 2, "Ended", INTERRUPTED),  # Service: maintenance
        (9, 2, "Ended", None),  # outside the enumeration
        (1, 7, "Ended", None),
        (1, 2, "Sleeping", None),
    ],
)
def test_umati_state_mapping(
    mode: int, channel: int, program: str | None, code: int | None
) -> None:
    inputs: dict[str, object] = {"operation_mode": mode, "channel_state": channel}
    if program is not None:
        inputs["program_state"] = program
    assert umati_state(inputs) == code


def test_stacklight_mapping() -> None:
    assert stacklight_state({"red": True, "green": True}) == INTERRUPTED
    assert stacklight_state({"red": False, "green": True}) == RUNNING
    assert stacklight_state({"yellow": True, "green": False}) == IDLE
    assert stacklight_state({"red": False}) == IDLE


def test_a_server_refusing_subscriptions_is_polled_instead() -> None:
    async def scenario() -> None:
        async with machine_server(subscriptions=False) as (server, _):
            fields = {"good": {"node": server.endpoint.node("PartsGood")}}
            async with source(server.endpoint.url, fields) as opcua:
                reading = await reading_where(opcua, lambda r: "good" in r.values)
                assert reading.values["good"] == server.model.totals_at(START)[0]
                assert opcua.stats.fallbacks == 1
                assert opcua.polled == {("good", "value")}
                assert opcua.stats.reads >= 1

    asyncio.run(scenario())


def test_certificates_and_login_are_checked_with_precise_reasons(tmp_path: Path) -> None:
    server_cert = make_certificate(tmp_path, "server", "urn:kyoso:simulator:mill-01", client=False)
    trusted = make_certificate(tmp_path, "gateway", "urn:kyoso:gateway", client=True)
    stranger = make_certificate(tmp_path, "stranger", "urn:kyoso:gateway", client=True)
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    wrong, right = {"password": "wrong"}, {"password": "s3cret"}

    def secured(cert: CertificateFiles, **login: Any) -> dict[str, Any]:
        security = {
            "policy": "Basic256Sha256",
            "certificate": str(cert.certificate),
            "private_key": str(cert.private_key),
        }
        return {"security": security, "user": "operator", **login}

    async def scenario() -> None:
        options = {"certificate": server_cert, "trusted": [trusted.certificate]}
        async with machine_server(users={"operator": "s3cret"}, **options) as (server, _):
            fields = {"good": {"node": server.endpoint.node("PartsGood")}}
            url = server.endpoint.url
            async with source(url, fields, **secured(trusted, password_file=str(password))) as ok:
                await reading_where(ok, lambda r: "good" in r.values)
            async with source(url, fields, **secured(trusted, **wrong)) as refused:
                reading = await reading_where(refused, lambda r: refused.stats.failed_connects > 0)
                missing = reading.missing["good"]
                assert missing.reason in (OpcuaMissingReason.LOGIN, OpcuaMissingReason.CIRCUIT_OPEN)
                assert "BadUserAccessDenied" in str(missing)
                assert "wrong" not in str(missing)
            async with source(url, fields, **secured(stranger, **right)) as untrusted:
                reading = await reading_where(
                    untrusted, lambda r: untrusted.stats.failed_connects > 0
                )
                missing = reading.missing["good"]
                assert missing.reason in (
                    OpcuaMissingReason.SECURITY,
                    OpcuaMissingReason.CIRCUIT_OPEN,
                )
                assert "BadCertificateUntrusted" in str(
                    missing
                ) or "BadSecurityChecksFailed" in str(missing)

    asyncio.run(scenario())


def test_unreadable_key_and_password_files_are_named(tmp_path: Path) -> None:
    url = f"opc.tcp://127.0.0.1:{_free_port()}/"
    fields = {"good": {"node": "i=2259"}}
    absent = {"policy": "Basic256Sha256", "certificate": "no.der", "private_key": "no.pem"}

    async def scenario() -> None:
        async with (
            source(url, fields, user="kyoso", password_file=str(tmp_path / "gone")) as login,
            source(url, fields, security=absent) as keys,
        ):
            failed = await reading_where(login, lambda r: login.stats.failed_connects > 0)
            assert failed.missing["good"].reason in (
                OpcuaMissingReason.LOGIN,
                OpcuaMissingReason.CIRCUIT_OPEN,
            )
            assert "cannot read" in str(failed.missing["good"])
            failed = await reading_where(keys, lambda r: keys.stats.failed_connects > 0)
            assert "no file no.der" in str(failed.missing["good"])

    asyncio.run(scenario())


# -- a network that can be cut ----------------------------------------------------------------


class Proxy:
    """A TCP forwarder to ``target``; :meth:`cut` stops every byte (connections stay open,
    as a pulled cable leaves them), :meth:`restore` lets new connections through again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.cut_off = False
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.cut_off = True

    def restore(self) -> None:
        self.cut_off = False
        for writer in self._writers:
            writer.close()  # what was sent into the void is gone with its connection
        self._writers.clear()

    async def stop(self) -> None:
        self.restore()
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if not self.cut_off:
                    writer.write(data)
                    await writer.drain()
        finally:
            writer.close()


def test_a_network_cut_is_missing_then_recovered_and_never_delays_another_source() -> None:
    async def scenario() -> None:
        async with machine_server() as (server, _):
            proxy = Proxy(server.endpoint.port)
            await proxy.start()
            fields = {"good": {"node": server.endpoint.node("PartsGood")}}
            behind_proxy = f"opc.tcp://127.0.0.1:{proxy.port}/kyoso/"
            async with (
                source(behind_proxy, fields) as cut,
                source(behind_proxy, fields, mode="poll") as cut_polled,
                source(server.endpoint.url, fields) as direct,
            ):
                for opcua in (cut, cut_polled, direct):
                    await reading_where(opcua, lambda r: "good" in r.values)
                proxy.cut()
                # Polled through the dead link: bounded by timeout_s; the direct source's
                # poll, started at the same time, is done first and has its value.
                done: list[str] = []

                async def poll(name: str, opcua: OpcuaSource) -> Polled:
                    reading = await opcua.poll()
                    done.append(name)
                    return reading

                slow, fast = await asyncio.gather(poll("cut", cut_polled), poll("direct", direct))
                assert done == ["direct", "cut"]
                assert "good" in fast.values
                assert slow.missing["good"].reason is OpcuaMissingReason.TIMEOUT
                # The subscribed source answers at once from what it knows, and the
                # watchdog finds the session dead: missing, never the old value.
                lost = await reading_where(cut, lambda r: "good" in r.missing)
                assert lost.missing["good"].reason in (
                    OpcuaMissingReason.SESSION_LOST,
                    OpcuaMissingReason.TIMEOUT,
                    OpcuaMissingReason.CIRCUIT_OPEN,
                )
                proxy.restore()
                for opcua in (cut, cut_polled):
                    await reading_where(opcua, lambda r: "good" in r.values)
                assert cut.stats.losses >= 1
                assert cut.stats.sessions >= 2
            await proxy.stop()

    asyncio.run(scenario())


# -- configuration, the gateway, the probe ---------------------------------------------------


def _ua(fields: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"opcua": {"endpoint": "opc.tcp://m:4840", "fields": fields, **options}}


@pytest.mark.parametrize(
    ("source_", "message"),
    [
        (_ua({"s": {"node": "Objects/Machine"}}), "not step 'Objects'"),
        (_ua({"s": {"node": "ns=2;s=X", "preset": "state"}}), "browse path, not a node id"),
        (_ua({"s": {"preset": "stacklight"}}), "lamps goes with preset stacklight"),
        (_ua({"s": {"node": "i=1", "channel": "Channel1"}}), "channel applies to preset state"),
        (_ua({"s": {"preset": "state", "node": "0:Objects", "map": {"a": 1}}}), "map and scale"),
        (_ua({"s": {"node": "i=1"}}, password="x"), "a password needs a user"),  # noqa: S106
        (
            _ua({"s": {"node": "i=1"}}, security={"policy": "Basic256Sha256"}),
            "needs certificate and private_key",
        ),
        (_ua({"s": {"node": "i=1"}}, security={"mode": "Sign"}), "apply to policy Basic256Sha256"),
        (
            {"opcua": {"endpoint": "http://m:4840", "fields": {"s": {"node": "i=1"}}}},
            "should match pattern",
        ),
        (_ua({"t": {"node": "i=1"}}), "fields ['s'] are not read by the source (it reads ['t'])"),
        (
            _ua(
                {
                    "s": {"node": "i=2253", "preset": "faults"},
                    "c": {"node": "0:Objects/2:M", "preset": "fault_code"},
                }
            ),
            "faults and fault_code read one node's alarms",
        ),
    ],
)
def test_configuration_errors(source_: dict[str, Any], message: str) -> None:
    assert message in refusal(source_)


def test_the_example_reads_opcua_and_errors_have_their_line(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, {"KYOSO_BROKER_PASSWORD": "x"})
    machine = next(m for m in config.machines if m.source.opcua is not None)
    assert machine.source.kind == "opcua"
    fields = {"state", "lamps", "faults", "fault_code", "estop", "parts", "spindle", "door"}
    assert machine.source.fields == fields
    text = EXAMPLE.read_text()
    broken = tmp_path / "gateway.yaml"
    broken.write_text(text.replace("preset: stacklight", "preset: stack_light"))
    with pytest.raises(ConfigError) as caught:
        load_config(broken, {"KYOSO_BROKER_PASSWORD": "x"})
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "preset: stacklight" in t)
    assert f"gateway.yaml:{line}: machines." in str(caught.value)
    assert "opcua.fields.lamps.preset" in str(caught.value)


def test_the_gateway_builds_an_opcua_source_and_closes_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with machine_server() as (server, _):
            data = yaml.safe_load(EXAMPLE.read_text())
            data["broker"].pop("tls", None)
            data["outbox"] = {"path": str(tmp_path / "outbox.db")}
            [machine] = [m for m in data["machines"] if "opcua" in m["source"]]
            machine["source"]["opcua"] = {
                "endpoint": server.endpoint.url,
                "fields": _umati_fields(server),
            }
            machine["state"] = {"from_code": {"field": "state", "map": {1: "running"}}}
            machine["counters"] = {"good": {"field": "good"}}
            machine["signals"] = []
            data["machines"] = [machine]
            path = tmp_path / "gateway.yaml"
            path.write_text(yaml.safe_dump(data))
            gateway = Gateway(load_config(path, {"KYOSO_BROKER_PASSWORD": "x"}))
            opcua = gateway.sources[machine["id"]]
            assert isinstance(opcua, OpcuaSource)
            await reading_where(opcua, lambda r: not r.missing)
            await gateway.stop()
            assert not opcua.connected.is_set()

    asyncio.run(scenario())


def test_probe_lists_node_ids_browse_paths_types_and_values() -> None:
    async def scenario() -> tuple[int, str, str]:
        async with machine_server() as (server, _):
            return await _kyoso("gateway", "probe", "--opcua", server.endpoint.url, "--depth", "6")

    code, out, err = asyncio.run(scenario())
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    mode = "0:Objects/2:Machines/2:mill-01/3:Monitoring/3:MachineTool/3:OperationMode"
    assert any(r[0] == mode and r[2:4] == ["Variable", "Int32"] for r in rows)
    assert any(r[1:4] == ["ns=2;s=mill-01.PartsGood", "Variable", "UInt32"] for r in rows)


def test_probe_of_nothing_fails_cleanly() -> None:
    code, _, err = asyncio.run(
        _kyoso("gateway", "probe", "--opcua", f"opc.tcp://127.0.0.1:{_free_port()}/")
    )
    assert code == 1
    assert err.startswith("probe failed: opc.tcp://127.0.0.1:")
    assert "server unreachable" in err


async def _kyoso(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kyoso.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
