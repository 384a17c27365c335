"""MTConnect agents for a factory's simulated machine tools, with injectable faults.

Each MTConnect machine has its own agent on its own port, as a machine tool's control
does: one device behind ``/probe``, ``/current`` and ``/sample`` (MTConnect 2.0 XML, built
with the standard library). The agent turns the machine's behaviour model into
observations when it is asked, stamped with the model's own times: a state change at the
start of its segment, a part at the moment it was finished. So nothing runs between
requests, and what the agent reports is the ground truth (docs/simulators.md has the
mapping). Observations carry sequence numbers and live in a circular buffer of
``buffer_size``; a ``from`` older than the buffer answers ``OUT_OF_RANGE``.

Faults: the Modbus servers' kinds apply per request (busy is HTTP 503, junk a body that is
not XML), and an agent can also be restarted (a new ``instanceId``, the sequence from 1)
or lose its machine (every data item ``UNAVAILABLE`` until it is back).
"""

import asyncio
import logging
import random
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Final, NamedTuple
from urllib.parse import parse_qs, urlsplit

from kyoso.contract import MachineState

from .behaviour import MachineModel, Segment
from .config import FactoryConfig, MTConnectSourceConfig
from .endpoints import AgentEndpoint
from .modbus import Fault, FaultKind

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = "2.0"
NAMESPACES: Final = {
    kind: f"urn:mtconnect.org:MTConnect{kind}:{SCHEMA_VERSION}"
    for kind in ("Devices", "Streams", "Error")
}
UNAVAILABLE: Final = "UNAVAILABLE"
_DEFAULT_COUNT: Final = 100


@dataclass(frozen=True, slots=True)
class DataItem:
    """One data item of the simulated device, and where it sits in the component tree."""

    id: str
    category: str  # EVENT, SAMPLE or CONDITION
    type: str
    element: str  # the observation's element name in a stream
    component: str  # Device, Controller, Path or Rotary
    sub_type: str | None = None
    units: str | None = None


DATA_ITEMS: Final = (
    DataItem("avail", "EVENT", "AVAILABILITY", "Availability", "Device"),
    DataItem("mode", "EVENT", "CONTROLLER_MODE", "ControllerMode", "Controller"),
    DataItem("system", "CONDITION", "SYSTEM", "System", "Controller"),
    DataItem("exec", "EVENT", "EXECUTION", "Execution", "Path"),
    DataItem("program", "EVENT", "PROGRAM", "Program", "Path"),
    DataItem("part_good", "EVENT", "PART_COUNT", "PartCount", "Path", "GOOD"),
    DataItem("part_bad", "EVENT", "PART_COUNT", "PartCount", "Path", "BAD"),
    DataItem(
        "spindle", "SAMPLE", "ROTARY_VELOCITY", "RotaryVelocity", "Rotary", "ACTUAL",
        "REVOLUTION/MINUTE",
    ),
)  # fmt: skip
_ITEMS: Final = {item.id: item for item in DATA_ITEMS}
_COMPONENTS: Final = (
    ("Device", None),
    ("Controller", "controller"),
    ("Path", "path"),
    ("Rotary", "C"),
)

STATE_VIEW: Final[Mapping[MachineState, tuple[str, str, float]]] = {
    # Execution, ControllerMode, spindle speed; a stop's alarm is a system Fault.
    MachineState.RUNNING: ("ACTIVE", "AUTOMATIC", 6000.0),
    MachineState.IDLE: ("READY", "AUTOMATIC", 0.0),
    MachineState.SETUP: ("READY", "MANUAL", 0.0),
    MachineState.DOWN: ("INTERRUPTED", "AUTOMATIC", 0.0),
    MachineState.PLANNED_STOP: ("STOPPED", "AUTOMATIC", 0.0),
}
"""What the agent shows in each true state (the table in docs/simulators.md)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One value of one data item; conditions carry their level and native code."""

    sequence: int
    item: str
    at: float
    value: str
    level: str = "Normal"  # conditions only: Normal, Warning, Fault or Unavailable
    native_code: int | None = None


class _Reply(NamedTuple):
    status: int
    body: bytes


class MTConnectAgent:
    """The agent of one machine; ``now`` returns the simulation time in epoch seconds."""

    def __init__(
        self,
        machine: str,
        source: MTConnectSourceConfig,
        model: MachineModel,
        now: Callable[[], float],
        *,
        host: str = "127.0.0.1",
        rng: random.Random | None = None,
    ) -> None:
        self.machine = machine
        self.source = source
        self.model = model
        self.host = host
        self.instance_id = 0
        self.port: int | None = None
        self._now = now
        self._rng = rng or random.Random()
        self._fault: Fault | None = None
        self._available = True
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._buffer: deque[Observation] = deque(maxlen=source.buffer_size)
        self._latest: dict[str, Observation] = {}
        self._next = 1
        self._seen = 0.0
        self._index = 0
        self._job = 0
        self._last_work: MachineState | None = None

    @property
    def endpoint(self) -> AgentEndpoint:
        """Where the agent answers; known once it is started."""
        if self.port is None:
            raise RuntimeError(f"the MTConnect agent of {self.machine} is not started")
        return AgentEndpoint(self.host, self.port, self.machine)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the configured port (again, after :meth:`stop`) and begin observing."""
        self._begin()
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port or self.source.port
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("%s: MTConnect agent on %s", self.machine, self.endpoint.url)

    async def stop(self) -> None:
        """Close the listener and every open connection; the port is kept for a restart."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._connections.values():
            writer.close()  # the connection's reader sees the end and its task ends
        await asyncio.gather(*self._connections)
        if server is not None:
            await server.wait_closed()

    async def restart(self) -> None:
        """Stop and start again on the same port: a new instanceId, sequences from 1."""
        await self.stop()
        await self.start()

    def set_fault(self, fault: Fault | None) -> None:
        """Answer requests with ``fault`` from the next one on; None clears it."""
        self._fault = fault

    def set_available(self, available: bool) -> None:
        """Lose the machine (every data item UNAVAILABLE) or get it back."""
        now = self._now()
        self._catch_up(now)
        if available and not self._available:
            self._available = True
            self._observe_all(now)
        elif not available and self._available:
            self._available = False
            for item in DATA_ITEMS:
                if item.category == "CONDITION":
                    self._record(item.id, now, "", level="Unavailable")
                else:
                    self._record(item.id, now, UNAVAILABLE)

    # -- observations -------------------------------------------------------------------

    def _begin(self) -> None:
        now = self._now()
        self.instance_id = max(int(now), self.instance_id + 1)
        self._buffer.clear()
        self._latest.clear()
        self._next = 1
        self._observe_all(now)

    def _observe_all(self, now: float) -> None:
        """Every data item's value at ``now``, as an agent reports a (re)connected machine."""
        self._seen = now
        self._last_work = None
        self._record("avail", now, "AVAILABLE" if self._available else UNAVAILABLE)
        if not self._available:
            return
        segment = self.model.segment_at(now)
        self._index = self.model.segments.index(segment)
        self._observe_state(segment, now)
        good, bad = self.model.totals_at(now)
        self._record("part_good", now, str(good))
        self._record("part_bad", now, str(bad))

    def _observe_state(self, segment: Segment, at: float) -> None:
        state = segment.state
        execution, mode, rpm = STATE_VIEW[state]
        if state in (MachineState.SETUP, MachineState.RUNNING) and (
            self._last_work is None
            or (state is MachineState.SETUP and self._last_work is not MachineState.SETUP)
        ):
            self._job += 1  # a setup begins a new job and its program
        if state is not MachineState.PLANNED_STOP:
            self._last_work = state
        self._record("exec", at, execution)
        self._record("mode", at, mode)
        self._record("program", at, f"O{1000 + self._job % 9000}")
        self._record("spindle", at, f"{rpm:.1f}")
        if segment.alarm and state is MachineState.DOWN:
            self._record("system", at, f"alarm {segment.alarm}", "Fault", segment.alarm)
        else:
            self._record("system", at, "", "Normal")

    def _catch_up(self, until: float) -> None:
        """Observe everything the machine did after the last observation up to ``until``."""
        if until <= self._seen:
            return
        start = self._seen
        self._seen = until
        if not self._available:
            return
        model = self.model
        model.advance(until)
        segment = model.segments[self._index]
        good, bad = int(self._latest["part_good"].value), int(self._latest["part_bad"].value)
        while True:
            done_before = segment.parts_until(start)
            done_now = segment.parts_until(min(until, segment.end))
            for k in range(sum(done_before), sum(done_now)):
                at = segment.first_part + k * segment.cycle_s
                if k in segment.rejects:
                    bad += 1
                    self._record("part_bad", at, str(bad))
                else:
                    good += 1
                    self._record("part_good", at, str(good))
            if segment.end > until:
                return
            self._index += 1
            segment = model.segments[self._index]
            start = segment.start
            self._observe_state(segment, start)

    def _record(
        self, item: str, at: float, value: str, level: str = "Normal", code: int | None = None
    ) -> None:
        """Append an observation unless the item already shows that value (as agents do)."""
        last = self._latest.get(item)
        if last is not None and (last.value, last.level, last.native_code) == (
            value,
            level,
            code,
        ):
            return
        observation = Observation(self._next, item, at, value, level, code)
        self._next += 1
        self._buffer.append(observation)
        self._latest[item] = observation

    # -- HTTP -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while await self._answer_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False once the connection is to be closed."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        keep = headers.get("connection", "").lower() != "close"
        fault = self._fault
        if fault is not None and self._rng.random() >= fault.probability:
            fault = None
        match fault:
            case Fault(kind=FaultKind.NO_RESPONSE):
                await reader.read()  # until the client gives up
                return False
            case Fault(kind=FaultKind.DROP):
                return False
            case Fault(kind=FaultKind.SLOW, delay_s=delay_s):
                await asyncio.sleep(delay_s)
        if fault is not None and fault.kind is FaultKind.BUSY:
            reply = _Reply(503, b"agent busy\n")
        elif fault is not None and fault.kind is FaultKind.JUNK:
            reply = _Reply(200, b"<MTConnectStreams" + self._rng.randbytes(24))
        elif len(parts) != 3 or parts[0] != "GET":
            reply = self._error(405, "UNSUPPORTED", f"only GET is supported, not {lines[0]!r}")
        else:
            reply = self.respond(parts[1])
        kind = "text/plain" if reply.status == 503 else "application/xml; charset=utf-8"
        writer.write(
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {len(reply.body)}\r\n"
            f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode()
            + reply.body
        )
        await writer.drain()
        return keep

    def respond(self, target: str) -> _Reply:
        """The answer to a GET of ``target`` (path and query), at the current time."""
        url = urlsplit(target)
        path = [p for p in url.path.split("/") if p]
        if path and path[0] == self.machine:
            path = path[1:]
        request = path[0] if path else "probe"
        if len(path) > 1 or request not in ("probe", "current", "sample"):
            return self._error(
                404, "NO_DEVICE", f"no device {path[0]!r}; this agent serves {self.machine!r}"
            )
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if request == "probe":
            return _Reply(200, self._probe())
        for name in ("interval", "at", "path"):
            if name in query:
                return self._error(400, "UNSUPPORTED", f"this agent does not support {name}=")
        self._catch_up(self._now())
        if request == "current":
            return _Reply(200, self._streams(list(self._latest.values()), self._next))
        return self._sample(query)

    def _sample(self, query: dict[str, str]) -> _Reply:
        first = self._buffer[0].sequence
        try:
            start = int(query.get("from", first))
            count = int(query.get("count", min(_DEFAULT_COUNT, self.source.buffer_size)))
        except ValueError:
            return self._error(400, "INVALID_REQUEST", "from and count must be integers")
        if not first <= start <= self._next:
            return self._error(
                400, "OUT_OF_RANGE", f"from={start} is outside the buffer [{first}, {self._next}]"
            )
        if not 0 < count <= self.source.buffer_size:
            return self._error(
                400, "OUT_OF_RANGE", f"count={count} must be within 1..{self.source.buffer_size}"
            )
        chosen = [o for o in self._buffer if start <= o.sequence < start + count]
        return _Reply(200, self._streams(chosen, chosen[-1].sequence + 1 if chosen else start))

    # -- XML ------------------------------------------------------------------------------

    def _document(self, kind: str, buffered: bool = True) -> tuple[ET.Element, ET.Element]:
        root = ET.Element(f"MTConnect{kind}", xmlns=NAMESPACES[kind])
        header = ET.SubElement(
            root,
            "Header",
            creationTime=_timestamp(self._now()),
            sender="kyoso-simulator",
            instanceId=str(self.instance_id),
            version=f"{SCHEMA_VERSION}.0.0",
            bufferSize=str(self.source.buffer_size),
        )
        if buffered and self._buffer:
            header.set("firstSequence", str(self._buffer[0].sequence))
            header.set("lastSequence", str(self._next - 1))
        return root, header

    def _probe(self) -> bytes:
        root, header = self._document("Devices", buffered=False)
        header.set("assetBufferSize", "0")
        header.set("assetCount", "0")
        device = ET.SubElement(
            ET.SubElement(root, "Devices"), "Device", id=self.machine, name=self.machine,
            uuid=self._uuid,
        )  # fmt: skip
        _data_items(device, "Device")
        children = ET.SubElement(device, "Components")
        controller = ET.SubElement(children, "Controller", id="controller", name="controller")
        _data_items(controller, "Controller")
        path = ET.SubElement(
            ET.SubElement(controller, "Components"), "Path", id="path", name="path"
        )
        _data_items(path, "Path")
        axes = ET.SubElement(children, "Axes", id="axes", name="base")
        rotary = ET.SubElement(ET.SubElement(axes, "Components"), "Rotary", id="C", name="C")
        _data_items(rotary, "Rotary")
        return _serialise(root)

    def _streams(self, observations: list[Observation], next_sequence: int) -> bytes:
        root, header = self._document("Streams")
        header.set("nextSequence", str(next_sequence))
        device = ET.SubElement(
            ET.SubElement(root, "Streams"),
            "DeviceStream",
            name=self.machine,
            uuid=self._uuid,
        )
        groups: dict[tuple[str, str], ET.Element] = {}
        for component, name in _COMPONENTS:
            stream = ET.Element(
                "ComponentStream",
                component=component,
                name=name or self.machine,
                componentId=name or self.machine,
            )
            for category in ("Samples", "Events", "Condition"):
                groups[component, category] = ET.SubElement(stream, category)
            device.append(stream)
        for obs in sorted(observations, key=lambda o: o.sequence):
            item = _ITEMS[obs.item]
            category = {"SAMPLE": "Samples", "EVENT": "Events"}.get(item.category, "Condition")
            tag = obs.level if item.category == "CONDITION" else item.element
            attrs = {
                "dataItemId": item.id,
                "timestamp": _timestamp(obs.at),
                "sequence": str(obs.sequence),
            }
            if item.sub_type:
                attrs["subType"] = item.sub_type
            if item.category == "CONDITION":
                attrs["type"] = item.type
                if obs.native_code is not None:
                    attrs["nativeCode"] = str(obs.native_code)
            ET.SubElement(groups[item.component, category], tag, attrs).text = obs.value or None
        for stream in list(device):
            for group in list(stream):
                if not len(group):
                    stream.remove(group)
            if not len(stream):
                device.remove(stream)
        return _serialise(root)

    def _error(self, status: int, code: str, message: str) -> _Reply:
        root, _ = self._document("Error", buffered=False)
        ET.SubElement(ET.SubElement(root, "Errors"), "Error", errorCode=code).text = message
        return _Reply(status, _serialise(root))

    @property
    def _uuid(self) -> str:
        return f"kyoso-sim-{self.machine}"


def _data_items(component: ET.Element, kind: str) -> None:
    items = ET.SubElement(component, "DataItems")
    for item in DATA_ITEMS:
        if item.component == kind:
            attrs = {"id": item.id, "category": item.category, "type": item.type}
            if item.sub_type:
                attrs["subType"] = item.sub_type
            if item.units:
                attrs["units"] = item.units
            ET.SubElement(items, "DataItem", attrs)


def _timestamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _serialise(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def mtconnect_agents(
    factory: FactoryConfig,
    models: Mapping[str, MachineModel],
    now: Callable[[], float],
    *,
    host: str = "127.0.0.1",
    fault_seed: int | None = None,
) -> dict[str, MTConnectAgent]:
    """The agents of a factory's MTConnect machines, not started; their faults draw from
    one stream seeded with ``fault_seed`` (None: from the system)."""
    rng = random.Random(fault_seed)
    return {
        m.id: MTConnectAgent(m.id, m.source, models[m.id], now, host=host, rng=rng)
        for m in factory.machines
        if isinstance(m.source, MTConnectSourceConfig)
    }
