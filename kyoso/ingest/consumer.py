"""The ingest's MQTT side: a persistent MQTT 5 session whose messages are acknowledged by hand.

paho-mqtt 2.x with ``manual_ack=True``: a QoS 1 message stays unacknowledged until the
ingest calls :meth:`MqttConsumer.ack`, which it does only once the store accepted (or the
dead-letter store kept) the message. Unacknowledged messages are redelivered by the broker
after a reconnect or a crash, so nothing the ingest received is lost with it.

- **Persistent session**: a stable client id, ``clean_start=False`` and a Session Expiry
  Interval, so the broker queues messages for the ingest while it is away (mind the
  broker's queue limit: Mosquitto's ``max_queued_messages`` defaults to 1000 messages).
- **Bounded memory**: the Receive Maximum of the CONNECT caps the messages the broker sends
  before the ingest acknowledges some.
- **Acknowledgements belong to a connection.** After a reconnect the broker redelivers what
  was not acknowledged, with the same packet ids; a PUBACK still owed by the previous
  connection is therefore not sent (:attr:`Incoming.generation`): the redelivered copy is
  written again (idempotent) and acknowledged then.
- **Validation in paho's thread**: each message is decoded against the contract as it
  arrives (sample batches by the compiled decoder of :mod:`kyoso.contract.wire`, the others
  by :func:`kyoso.contract.decode`), so the event loop only routes decoded messages. They
  reach the loop in bulk: one wake-up takes every message received since the last one.
- **Shared subscriptions**: with ``shared_group``, samples come through
  ``$share/<group>/…``, split between the group's workers. Status and descriptions are
  subscribed by every worker: the broker sends retained messages only to plain
  subscriptions, and the store keeps the last status written, so each worker writes them all.
- **Store receipts** (:mod:`kyoso.ingest.receipts`) of every worker are subscribed with
  *No Local*: a worker hears the others' as they are published, and its own only as the
  retained message on (re)subscribing, which is how it goes on after a restart.
- **A hosted application** (:class:`HostApplication`: the Sparkplug host of
  :mod:`kyoso.ingest.sparkplug`) shares the connection: its filters are added, its will is
  set before each connect (and sent on a clean disconnect too), its announcement published
  after subscribing; messages on its topics are handed over undecoded (``sparkplug``).
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from kyoso.contract import (
    SUBSCRIPTIONS,
    ContractError,
    Message,
    TopicError,
    TopicKind,
    decode,
    parse_topic,
)
from kyoso.contract.wire import WireBatch, decode_samples
from kyoso.mqtt import new_client
from kyoso.sparkplug import NAMESPACE as SPARKPLUG_NAMESPACE

from .config import MqttConfig

__all__ = ["Incoming", "MqttConsumer"]

log = logging.getLogger(__name__)
_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
"""MQTT 5: disconnect, and have the broker publish the will all the same."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """One received message, decoded; exactly one of ``message``, ``error``, ``withdrawn``,
    ``cleared`` and ``sparkplug`` says what it is (a Sparkplug message the host has read
    comes back ``cleared``, or with an ``error``)."""

    generation: int
    """The connection it came on (acknowledge only on the same one)."""
    mid: int
    qos: int
    topic: str
    payload: bytes
    received: float
    """Wall-clock receive time (``time.time()``)."""
    message: Message | WireBatch | None = None
    error: ContractError | None = None
    withdrawn: tuple[str, str, str] | None = None
    """(factory, gateway, machine) of an empty retained description: the machine is gone."""
    cleared: bool = False
    """An empty status or receipt payload: someone cleared a retained message; nothing to
    store."""
    sparkplug: bool = False
    """On a Sparkplug B topic: for the Sparkplug host (:mod:`kyoso.ingest.sparkplug`),
    which gives it back ``cleared`` (or with an ``error``) once it has read it."""

    @property
    def samples(self) -> int:
        """How many samples it carries (for batch sizing)."""
        return len(getattr(self.message, "samples", ()))


def classify(generation: int, mid: int, qos: int, topic: str, payload: bytes) -> Incoming:
    """Decode one message into an :class:`Incoming`; never raises."""
    make = partial(Incoming, generation, mid, qos, topic, payload, time.time())
    if topic.startswith(f"{SPARKPLUG_NAMESPACE}/"):
        return make(sparkplug=True)
    try:
        if not payload:
            where = parse_topic(topic)
            if where.kind is TopicKind.MACHINE and where.machine is not None:
                return make(withdrawn=(where.factory, where.gateway, where.machine))
            if where.kind in (TopicKind.STATUS, TopicKind.STORED):
                return make(cleared=True)
        samples = _kind(topic) is TopicKind.SAMPLES
        return make(message=decode_samples(topic, payload) if samples else decode(topic, payload))
    except ContractError as exc:
        return make(error=exc)
    except ValueError as exc:  # parse_topic's TopicError
        return make(error=ContractError("topic", str(exc)))


def _kind(topic: str) -> TopicKind | None:
    try:
        return parse_topic(topic).kind
    except TopicError:
        return None  # the decoder words the refusal


class HostApplication(Protocol):
    """A host application sharing the connection (the Sparkplug host; the broker binds one
    session to an account): its filters (subscribed with No Local, so that its own commands
    do not come back), the will set before each connect, what it publishes once connected."""

    @property
    def filters(self) -> list[str]: ...

    def will(self) -> tuple[str, bytes]: ...

    def birth(self) -> tuple[str, bytes]: ...


class MqttConsumer:
    """Subscribes to the contract's topics and hands each message to ``deliver``, on the loop."""

    def __init__(
        self,
        config: MqttConfig,
        deliver: Callable[[Incoming], None],
        host: HostApplication | None = None,
    ) -> None:
        self.config = config
        self._deliver = deliver
        self.host = host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self.generation = 0
        self.connected = False
        self.connects = 0
        self.connected_event = asyncio.Event()
        self._inbox: deque[Incoming] = deque()
        self._waking = False
        """A call of :meth:`_drain` is due on the loop."""

    @property
    def filters(self) -> list[str]:
        """The subscription filters (samples through the shared group, if any)."""
        group = self.config.shared_group
        samples, *others = SUBSCRIPTIONS
        hosted = self.host.filters if self.host is not None else []
        return [f"$share/{group}/{samples}" if group else samples, *others, *hosted]

    async def start(self) -> None:
        """Connect in the background (retried by paho with backoff) and subscribe."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        client = new_client(
            cfg, cfg.session_id, logging.getLogger(f"{__name__}.paho"), manual_ack=True
        )
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_subscribe = self._paho_subscribe
        if (host := self.host) is not None:
            client.on_pre_connect = lambda c, _: c.will_set(*host.will(), qos=1, retain=True)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = cfg.session_expiry_s
        properties.ReceiveMaximum = cfg.receive_maximum
        client.connect_async(
            cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=properties
        )
        client.loop_start()
        self._client = client

    async def stop(self) -> None:
        """Disconnect (the session and its unacknowledged messages stay with the broker)."""
        client, self._client = self._client, None
        if client is None:
            return
        # A host's will says it is gone: the broker sends it on a clean disconnect too.
        client.disconnect(None if self.host is None else _WITH_WILL)
        await asyncio.to_thread(client.loop_stop)
        self.connected = False

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> bool:
        """Publish ``payload`` at QoS 1, retained unless told (paho queues it while
        disconnected and sends it on reconnect); False if the client is not started or
        refused it."""
        client = self._client
        if client is None:
            return False
        info = client.publish(topic, payload, qos=1, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack(self, incoming: Incoming) -> bool:
        """Send the PUBACK of ``incoming`` if it is owed on the current connection."""
        client = self._client
        if incoming.qos == 0 or client is None:
            return False
        if incoming.generation != self.generation or not self.connected:
            return False  # the broker redelivers it on the new connection
        return client.ack(incoming.mid, incoming.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    # --- paho's thread --------------------------------------------------------------------

    def _paho_connect(
        self, client: mqtt.Client, _: Any, flags: Any, reason: ReasonCode, __: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self.generation += 1
        self.connected = True
        self.connects += 1
        options = SubscribeOptions(qos=1)
        own = SubscribeOptions(qos=1, noLocal=True)  # not our own receipts, once published
        hosted = set(self.host.filters) if self.host is not None else set()
        client.subscribe(
            [
                (t, own if t.endswith(f"/{TopicKind.STORED.value}/+") or t in hosted else options)
                for t in self.filters
            ]
        )
        if self.host is not None:  # after subscribing, as Sparkplug 3.0 asks of a host
            client.publish(*self.host.birth(), qos=1, retain=True)
        log.info(
            "connected to %s:%d as %s (session %s)",
            self.config.host,
            self.config.port,
            self.config.session_id,
            "resumed" if getattr(flags, "session_present", False) else "new",
        )

    def _paho_subscribe(
        self, _: mqtt.Client, __: Any, mid: int, reasons: list[ReasonCode], ___: Any
    ) -> None:
        refused = [f for f, r in zip(self.filters, reasons, strict=False) if r.is_failure]
        if refused:
            log.error("broker refused the subscriptions %s: %s", refused, reasons)
        else:
            self._to_loop(self.connected_event.set)

    def _paho_disconnect(self, _: mqtt.Client, __: Any, ___: Any, rc: ReasonCode, *a: Any) -> None:
        self.connected = False
        self._to_loop(self.connected_event.clear)
        log.warning("disconnected from the broker: %s", rc)

    def _paho_message(self, _: mqtt.Client, __: Any, msg: mqtt.MQTTMessage) -> None:
        try:  # a broker forwards only UTF-8 topics; a misbehaving one must not stop us
            topic = msg.topic
        except UnicodeDecodeError:
            topic = "<not UTF-8>"
        try:
            incoming = classify(self.generation, msg.mid, msg.qos, topic, bytes(msg.payload))
        except Exception:  # never let paho's network thread die
            log.exception("unexpected failure decoding a message on %r", topic)
            error = ContractError("schema", "the decoder failed on this message")
            incoming = Incoming(
                self.generation,
                msg.mid,
                msg.qos,
                topic,
                bytes(msg.payload),
                time.time(),
                error=error,
            )
        self._inbox.append(incoming)
        if not self._waking:
            self._waking = True
            self._to_loop(self._drain)

    # --- the event loop -------------------------------------------------------------------

    def _drain(self) -> None:
        """Deliver every message received so far (reset first: a message appended while
        this runs is delivered by it or by the call it schedules)."""
        self._waking = False
        inbox, deliver = self._inbox, self._deliver
        while inbox:
            deliver(inbox.popleft())

    def _to_loop(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(callback, *args)
