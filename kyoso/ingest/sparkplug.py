"""The ingest as a Sparkplug B host application: edge nodes' metrics into Kyoso samples.

The host rides on the ingest's own broker connection (the regional broker binds one session
to an account): it adds ``spBv1.0/<group>/#`` of every mapped group to the subscriptions,
sets its STATE will (``spBv1.0/STATE/<host_id>``, offline) before each connect and
publishes STATE online, retained, with the same timestamp once connected (Sparkplug 3.0).

Each message of an edge node is read on the event loop (:meth:`SparkplugHost.receive`):

- **NBIRTH** opens a session: its ``bdSeq`` is remembered, its aliases learnt, its ``seq``
  the start; the node's gateway status goes online and its machines are described.
  **DBIRTH** adds a device's aliases and values.
- Every later message's ``seq`` must be the previous one plus one (mod 256). A gap, or data
  of a node without a session (data before its birth, or after the ingest restarted), asks
  the node for a rebirth (an NCMD with ``Node Control/Rebirth`` true, at most one per node
  per ``rebirth_timeout_s`` until it births) and the node's data is ignored until then.
- **NDATA/DDATA** metrics, by name or alias, become field changes at their own timestamps
  (else the payload's) for the machines mapped to them (:mod:`.sparkplug_feed`); samples
  close every ``interval_s`` and go through the ingest's normal path as one gateway's
  sample batch per node (:meth:`SparkplugHost.tick`).
- **NDEATH** with the session's ``bdSeq`` sets the gateway offline as a Kyoso gateway's
  last will does (capacity withdrawn) and ends its machines' samples at that moment; one
  with another ``bdSeq`` is of an older session, ignored and counted. **DDEATH** makes the
  device's machines' state unknown from its timestamp.
- A malformed topic or payload, or a group or node not mapped (a persistent session may
  still hold the subscription of a group no longer mapped), is dead-lettered.

What a message yields (descriptions, statuses, samples) is handed to the ingest as the
contract messages a Kyoso gateway would have sent, validated by the same decoder; the
Sparkplug message itself is acknowledged after them, in the ingest's order. Field changes
wait in memory until their interval closes: after a restart of the ingest the nodes are
asked for rebirths, Sparkplug's own way of recovering a host's state.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from kyoso.contract import (
    MAX_SAMPLES_PER_BATCH,
    ContractError,
    GatewayStatus,
    MachineDescription,
    Sample,
    SampleBatch,
    encode,
    machine_topic,
    samples_topic,
    status_topic,
)
from kyoso.gateway.modbus_decode import Value
from kyoso.sparkplug import (
    BDSEQ,
    NAMESPACE,
    DataType,
    MessageType,
    Payload,
    SparkplugError,
    Topic,
    decode,
    host_state,
    rebirth_request,
)

from .consumer import Incoming, classify
from .sparkplug_config import SparkplugConfig, SparkplugFactoryConfig, SparkplugNodeConfig
from .sparkplug_feed import MachineFeed

__all__ = ["SparkplugHost"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], bool]
"""Publish ``(topic, payload, retain)`` at QoS 1; False when it could not be sent."""


@dataclass(slots=True)
class _Node:
    """What the host knows of one mapped edge node."""

    factory: SparkplugFactoryConfig
    config: SparkplugNodeConfig
    feeds: list[MachineFeed]
    bdseq: int | None = None
    online: bool = False
    next_seq: int | None = None
    """The seq expected next; None: no session to take data in (until an NBIRTH)."""
    aliases: dict[int, str] = field(default_factory=dict)
    datatypes: dict[int | str, DataType] = field(default_factory=dict)
    """What the births declared, by alias and by name, for data that leaves it out."""
    session: str | None = None
    """The contract session of its samples: one per birth."""
    born_ms: int = 0
    sample_seq: int = 0
    rebirth_asked: float | None = None

    def feeds_of(self, device: str | None) -> list[MachineFeed]:
        return [feed for feed in self.feeds if feed.config.device == device]


class SparkplugHost:
    """The Sparkplug side of one ingest worker; see the module docstring."""

    def __init__(
        self,
        config: SparkplugConfig,
        deliver: Callable[[Incoming], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._deliver = deliver
        self.publish: Publish = _unconnected
        """How rebirth requests go out: the connection's, once the ingest made it."""
        self.clock = clock
        self.stats: Counter[str] = Counter()
        """Events: messages (read), births, deaths, stale_deaths, rebirth_requests,
        seq_gaps, ignored (data without a session), late_metrics, unknown_aliases,
        undecoded_metrics, historical_metrics, commands (NCMD/DCMD of others)."""
        self.nodes = {
            (node.group, node.node): _Node(
                factory,
                node,
                [
                    MachineFeed(m, factory.calendars[m.calendar], config.interval_s)
                    for m in node.machines
                ],
            )
            for factory in config.factories
            for node in factory.nodes
        }
        self._connected_ms = 0

    # --- the connection -------------------------------------------------------------------

    @property
    def filters(self) -> list[str]:
        """Every mapped group's messages."""
        groups = sorted({group for f in self.config.factories for group in f.groups})
        return [f"{NAMESPACE}/{group}/#" for group in groups]

    def will(self) -> tuple[str, bytes]:
        """The STATE will of the next connection (offline, stamped now)."""
        self._connected_ms = _ms(self.clock())
        return str(Topic.state(self.config.host_id)), host_state(False, self._connected_ms)

    def birth(self) -> tuple[str, bytes]:
        """The STATE published once connected: online, the will's timestamp."""
        return str(Topic.state(self.config.host_id)), host_state(True, self._connected_ms)

    async def run(self) -> None:
        """Apply due metrics and close samples every ``tick_s``, until cancelled."""
        while True:
            await asyncio.sleep(self.config.tick_s)
            self.tick()

    def tick(self) -> None:
        """Apply the changes up to the watermark; hand the closed samples to the ingest."""
        watermark = self.clock() - self.config.late_s
        for node in self.nodes.values():
            samples = [s for feed in node.feeds for s in feed.advance(watermark)]
            for batch in self._batches(node, samples):
                self._deliver(classify(0, 0, 0, *batch))

    # --- messages -------------------------------------------------------------------------

    def receive(self, incoming: Incoming) -> None:
        """Read one message of a Sparkplug topic; what it yields, then the message itself
        (to be acknowledged after them, or dead-lettered), go to the ingest."""
        self.stats["messages"] += 1
        try:
            out = self._handle(incoming)
        except SparkplugError as exc:
            self._deliver(replace(incoming, error=ContractError("schema", f"Sparkplug: {exc}")))
            return
        except ContractError as exc:
            self._deliver(replace(incoming, error=exc))
            return
        if not out:
            self._deliver(replace(incoming, cleared=True))
            return
        *first, last = out
        for topic, payload in first:
            self._deliver(classify(0, 0, 0, topic, payload))
        self._deliver(classify(incoming.generation, incoming.mid, incoming.qos, *last))

    def _handle(self, incoming: Incoming) -> list[tuple[str, bytes]]:
        try:
            topic = Topic.parse(incoming.topic)
        except SparkplugError as exc:
            raise ContractError("topic", f"Sparkplug: {exc}") from exc
        if topic.type in (MessageType.NCMD, MessageType.DCMD, MessageType.STATE):
            self.stats["commands"] += 1  # to the nodes (ours come back with no-local)
            return []
        node = self.nodes.get((topic.group, topic.node))
        if node is None:
            if self.config.factory_of(topic.group) is None:
                raise ContractError("topic", f"Sparkplug group {topic.group!r} is in no factory")
            raise ContractError(
                "topic", f"edge node {topic.node!r} of group {topic.group!r} is not mapped"
            )
        payload = decode(incoming.payload, node.datatypes)
        if topic.type is MessageType.NBIRTH:
            return self._nbirth(node, payload)
        if topic.type is MessageType.NDEATH:
            return self._ndeath(node, payload)
        if not self._in_session(node, topic, payload):
            return []
        if topic.type is MessageType.DDEATH:
            at = (payload.timestamp_ms or _ms(self.clock())) / 1000
            for feed in node.feeds_of(topic.device):
                feed.change(at, dict.fromkeys(feed.config.metrics.values()))
        else:
            if topic.type is MessageType.DBIRTH:
                self._learn(node, payload)
            self._feed(node, topic.device, payload)
        return []

    def _nbirth(self, node: _Node, payload: Payload) -> list[tuple[str, bytes]]:
        bdseq = _bdseq(payload)
        if bdseq is None or payload.seq is None:
            raise SparkplugError("an NBIRTH needs a seq and an integer bdSeq metric")
        node.bdseq, node.online, node.next_seq = bdseq, True, (payload.seq + 1) % 256
        node.aliases.clear()
        node.datatypes.clear()
        self._learn(node, payload)
        node.born_ms = payload.timestamp_ms or _ms(self.clock())
        node.session, node.sample_seq, node.rebirth_asked = f"spb-{node.born_ms}-{bdseq}", 0, None
        self.stats["births"] += 1
        log.info("Sparkplug node %s/%s born (bdSeq %d)", node.config.group, node.config.node, bdseq)
        self._feed(node, None, payload)
        return [self._status(node, online=True), *self._descriptions(node)]

    def _ndeath(self, node: _Node, payload: Payload) -> list[tuple[str, bytes]]:
        bdseq = _bdseq(payload)
        where = f"{node.config.group}/{node.config.node}"
        if not node.online or bdseq is None or bdseq != node.bdseq:
            self.stats["stale_deaths"] += 1
            log.info(
                "NDEATH of %s with bdSeq %s is not of its session (%s): ignored",
                where,
                bdseq,
                node.bdseq if node.online else "none open",
            )
            return []
        node.online, node.next_seq = False, None
        self.stats["deaths"] += 1
        log.info("Sparkplug node %s died (bdSeq %d)", where, bdseq)
        at = self.clock()
        for feed in node.feeds:
            feed.end(at)
        return [self._status(node, online=False)]

    def _in_session(self, node: _Node, topic: Topic, payload: Payload) -> bool:
        """Whether the message continues the node's session; else ask for a rebirth."""
        expected = node.next_seq
        if expected is None:
            self.stats["ignored"] += 1
            self._rebirth(node, f"{topic.type} without a session")
            return False
        if payload.seq != expected:
            self.stats["seq_gaps"] += 1
            node.next_seq = None
            self._rebirth(node, f"{topic.type} seq {payload.seq} where {expected} was due")
            return False
        node.next_seq = (expected + 1) % 256
        return True

    def _rebirth(self, node: _Node, why: str) -> None:
        now = self.clock()
        asked = node.rebirth_asked
        if asked is not None and now - asked < self.config.rebirth_timeout_s:
            return
        node.rebirth_asked = now
        topic = Topic(node.config.group, MessageType.NCMD, node.config.node)
        sent = self.publish(str(topic), rebirth_request(_ms(now)), False)
        self.stats["rebirth_requests"] += 1
        log.warning("asking %s for a rebirth (%s)%s", topic, why, "" if sent else ": not sent")

    def _learn(self, node: _Node, payload: Payload) -> None:
        """A birth's aliases and datatypes (one namespace per node, its devices included)."""
        node.aliases.update(
            (m.alias, m.name) for m in payload.metrics if m.alias is not None and m.name
        )
        for metric in payload.metrics:
            if metric.datatype is not None:
                for key in (metric.alias, metric.name):
                    if key is not None:
                        node.datatypes[key] = metric.datatype

    def _feed(self, node: _Node, device: str | None, payload: Payload) -> None:
        """The payload's metrics as timed field changes of the machines reading them."""
        feeds = node.feeds_of(device)
        if not feeds:
            return
        now_ms = _ms(self.clock())
        changes: dict[int, dict[float, dict[str, Value | None]]] = {}
        for metric in payload.metrics:
            name = metric.name
            if name is None and metric.alias is not None:
                name = node.aliases.get(metric.alias)
                if name is None:
                    self.stats["unknown_aliases"] += 1
                    continue
            value = metric.value
            if (value is None and not metric.is_null) or isinstance(value, bytes):
                self.stats["undecoded_metrics"] += 1  # a kind of value no field takes
                continue
            at = (metric.timestamp_ms or payload.timestamp_ms or now_ms) / 1000
            self.stats["historical_metrics"] += metric.is_historical
            for index, feed in enumerate(feeds):
                if name is not None and (to := feed.config.metrics.get(name)) is not None:
                    changes.setdefault(index, {}).setdefault(at, {})[to] = value
        for index, timed in changes.items():
            for at, fields in sorted(timed.items()):
                if not feeds[index].change(at, fields):
                    self.stats["late_metrics"] += len(fields)

    # --- contract messages ----------------------------------------------------------------

    def _status(self, node: _Node, *, online: bool) -> tuple[str, bytes]:
        factory, gateway = node.factory.factory, node.config.gateway_id
        assert node.session is not None
        status = GatewayStatus(
            factory=factory,
            gateway=gateway,
            session=node.session,
            status="online" if online else "offline",
            ts=datetime.fromtimestamp(node.born_ms / 1000, UTC),  # a will's: the connect time
            reason="connected" if online else "connection_lost",
            software="sparkplug",
        )
        return status_topic(factory, gateway), encode(status)

    def _descriptions(self, node: _Node) -> Iterator[tuple[str, bytes]]:
        factory, gateway = node.factory.factory, node.config.gateway_id
        for machine in node.config.machines:
            description = MachineDescription(
                factory=factory,
                gateway=gateway,
                machine=machine.id,
                name=machine.name,
                updated_at=datetime.fromtimestamp(node.born_ms / 1000, UTC),
                capabilities=machine.capabilities,
                ideal_cycle_time_s=machine.ideal_cycle_time_s,
                calendar=node.factory.calendars[machine.calendar],
                sharing=machine.sharing,
            )
            yield machine_topic(factory, gateway, machine.id), encode(description)

    def _batches(self, node: _Node, samples: list[Sample]) -> Iterator[tuple[str, bytes]]:
        if not samples or node.session is None:
            return
        factory, gateway = node.factory.factory, node.config.gateway_id
        for start in range(0, len(samples), MAX_SAMPLES_PER_BATCH):
            numbered = []
            for sample in samples[start : start + MAX_SAMPLES_PER_BATCH]:
                node.sample_seq += 1
                numbered.append(sample.model_copy(update={"seq": node.sample_seq}))
            batch = SampleBatch(
                factory=factory, gateway=gateway, session=node.session, samples=numbered
            )
            yield samples_topic(factory, gateway), encode(batch)


def _unconnected(topic: str, payload: bytes, retain: bool) -> bool:
    return False


def _bdseq(payload: Payload) -> int | None:
    value = next((m.value for m in payload.metrics if m.name == BDSEQ), None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
