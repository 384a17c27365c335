"""Publishes the gateway's outbox to the regional broker over MQTT 5 (paho-mqtt 2.x).

Promises:

- **Delivered means stored.** Under ``outbox.confirm: store`` (the default) a PUBACK with a
  success reason code (``is_failure`` false, 0x10 *No matching subscribers* included) only
  marks its samples *sent*; they leave the outbox when an ingest worker's store receipt
  covers them (:mod:`kyoso.gateway.receipts`: the subscription goes out after each CONNACK,
  before any sample). A sample sent but not confirmed within ``confirm_timeout_s`` is sent
  again, as backlog. Under ``confirm: broker`` the PUBACK deletes them and no receipt is
  read. A failure code (>= 0x80, e.g. 0x87 *Not authorized*) moves the batch's samples to
  the outbox's ``refused`` table: logged, counted, not re-sent.
- **Nothing is lost while disconnected**: nothing is published, samples wait in the outbox.
  Batches unacknowledged when the link drops are taken back from paho (which would re-send
  them all at once) and re-sent from the outbox after reconnecting.
- **Live first, backlog at a bounded rate.** Samples numbered since the current connection
  came up are *live*: sent at once, in seq order. Older ones are the *backlog*
  (:mod:`kyoso.gateway.backlog`, which also sends again what no receipt confirmed in time):
  sent oldest first, in seq order, at most ``replay_rate_samples_per_s``, in the in-flight
  slots live batches leave free. So replayed batches interleave with live ones; the ingest
  accepts that, as timestamps come from the source.
- **Bounded in flight**: at most ``max_inflight`` sample batches (and at most the broker's
  Receive Maximum) await their PUBACK; status and descriptions come on top. Each connection
  starts with one batch in flight and doubles per acknowledged batch (back to one on a
  refusal): Mosquitto 2.0 drops the connection right after a refusing PUBACK, and a batch
  sent alone gets that PUBACK through instead of losing it to the reset.
- **Liveness**: the will is the retained ``offline``/``connection_lost`` status; after each
  CONNACK the retained ``online`` status and machine descriptions precede any sample;
  :meth:`MqttPublisher.stop` waits (bounded) for in-flight batches, publishes
  ``offline``/``shutdown``, awaits its PUBACK, then DISCONNECTs (0x00: no will).

Threads: paho's network thread (``loop_start``) owns the socket; its callbacks hand events
to the asyncio loop with ``call_soon_threadsafe``, except that the CONNACK callback itself
publishes the status and descriptions and subscribes to the receipts, so they go out before
anything else. The outbox and all bookkeeping are used from the event loop only.

Time: in-flight latency and the replay rate use the event loop's monotonic clock; when a
sample was sent (``sent_at``, kept in the outbox across restarts) uses ``clock``, wall time
by default.
"""

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kyoso.contract import (
    MAX_MESSAGE_BYTES,
    GatewayReason,
    GatewayState,
    GatewayStatus,
    MachineDescription,
    Sample,
    encode,
    machine_topic,
    samples_topic,
    status_topic,
)
from kyoso.mqtt import new_client

from .backlog import Backlog
from .batches import encode_batches
from .errors import GatewayError
from .outbox import ConfirmMode, OutboxRow, SqliteOutbox
from .publisher_config import PublisherConfig
from .receipts import ReceiptReader, ReceiptStats

__all__ = [
    "MqttPublisher",
    "PublisherConfig",
    "PublisherError",
    "PublisherStats",
]

log = logging.getLogger(__name__)


class PublisherError(GatewayError):
    """Misuse of the publisher, or paho refusing to queue a message."""


@dataclass(slots=True)
class PublisherStats:
    """Counters for metrics; a snapshot from :attr:`MqttPublisher.stats`."""

    connected: bool = False
    published_batches: int = 0
    published_samples: int = 0
    replayed_samples: int = 0
    resent_samples: int = 0
    """Samples sent again because no store receipt came within ``confirm_timeout_s``."""
    acked_samples: int = 0
    refused_samples: int = 0
    refused_control: int = 0
    in_flight_batches: int = 0
    in_flight_samples: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_refusals: int = 0
    drain_errors: int = 0
    silent_drops: int = 0
    """Connections dropped for a PUBACK owed 1.5 keepalives (a black-holed path)."""
    last_publish_latency_s: float | None = None


@dataclass(slots=True)
class _InFlight:
    seqs: tuple[int, ...]  # empty for status and descriptions
    what: str
    sent_at: float
    done: "asyncio.Future[ReasonCode] | None" = None


class MqttPublisher:
    """Drains a :class:`SqliteOutbox` to the broker; see the module docstring for promises.

    Use it on one asyncio event loop: ``async with MqttPublisher(config, outbox) as p:``,
    then :meth:`submit` samples (or append to the outbox, then call :meth:`notify`). One
    start and one stop per object.
    """

    def __init__(
        self,
        config: PublisherConfig,
        outbox: SqliteOutbox,
        *,
        descriptions: Iterable[MachineDescription] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.outbox, self._clock = config, outbox, clock
        self._store_confirms = outbox.config.confirm is ConfirmMode.STORE
        self._receipts = ReceiptReader(outbox, config.factory, config.gateway)
        self._samples_topic = samples_topic(config.factory, config.gateway)
        self._status_topic = status_topic(config.factory, config.gateway)
        # Replaced, never mutated: paho's thread reads them on every CONNACK.
        self._descriptions: dict[str, MachineDescription] = {}
        self._withdrawn: frozenset[str] = frozenset()
        for description in descriptions:
            self._check_origin(description)
            self._descriptions[description.machine] = description
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # the drain task's: something may be publishable
        self._watchers: list[asyncio.Future[None]] = []  # _until()'s: something changed
        self._stopping = False
        self._stats = PublisherStats()
        self._window = self._window_max = config.max_inflight
        self._inflight: dict[int, _InFlight] = {}  # by paho mid: batches, status, machines
        self._batches_in_flight = 0
        self._claimed: set[int] = set()  # seqs in flight
        self._live_after = -1  # live: the seqs above it (numbered since CONNACK, unsent)
        self._backlog = Backlog(
            outbox,
            rate_samples_per_s=config.replay_rate_samples_per_s,
            max_samples_per_batch=config.max_samples_per_batch,
            clock=clock,
            monotonic=self._now,
        )
        self._client = self._make_client()

    # --- public API -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background, retried with backoff) and draining."""
        if self._loop is not None:
            raise PublisherError("a publisher starts once")
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = cfg.session_expiry_s
        self._client.connect_async(
            cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=properties
        )
        self._client.loop_start()
        self._task = asyncio.create_task(self._drain(), name="kyoso-publisher")

    async def stop(self) -> None:
        """Shut down cleanly within ``shutdown_timeout_s``. Whatever the store has not
        confirmed stays in the outbox; what the broker has not acknowledged goes out after
        the next start."""
        loop, task = self._loop, self._task
        if loop is None or task is None or self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.shutdown_timeout_s):
                await self._until(lambda: not self.connected or not self._batches_in_flight)
                # paho's own state: it may have published `online` for a CONNACK we have
                # not heard of yet (no new `online` goes out once _stopping is set).
                if self._client.is_connected():
                    done: asyncio.Future[ReasonCode] = loop.create_future()
                    self._publish_control(self._status("offline", "shutdown"), None, done)
                    await self._until(lambda: done.done() or not self._client.is_connected())
        self._client.disconnect()  # reason code 0x00: the broker discards the will
        await asyncio.to_thread(self._client.loop_stop)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("publisher stopped; %d samples stay in the outbox", self.outbox.depth())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def submit(self, samples: Sequence[Sample]) -> list[int]:
        """Append samples to the outbox (numbered, durably) and publish them when possible."""
        seqs = self.outbox.append(samples)
        self.notify()
        return seqs

    def notify(self) -> None:
        """Tell the publisher that the outbox changed; call it on the event loop's thread."""
        self._wake.set()
        self._changed()

    def set_description(self, description: MachineDescription) -> None:
        """Publish a machine description now (if connected) and after every reconnect."""
        self._check_origin(description)
        self._descriptions = {**self._descriptions, description.machine: description}
        self._withdrawn -= {description.machine}
        if self._client.is_connected():  # else the next CONNACK publishes it
            self._publish_control(encode(description), description.machine)

    def remove_description(self, machine: str) -> None:
        """Withdraw a machine: an empty retained message (now and after every reconnect)
        deletes its description."""
        self._descriptions = {m: d for m, d in self._descriptions.items() if m != machine}
        self._withdrawn |= {machine}
        if self._client.is_connected():
            self._publish_control(b"", machine)

    @property
    def connected(self) -> bool:
        return self._stats.connected

    @property
    def receipts(self) -> ReceiptStats:
        """The store receipts' counters (a snapshot)."""
        return self._receipts.stats

    @property
    def stats(self) -> PublisherStats:
        batches = [entry.seqs for entry in self._inflight.values() if entry.seqs]
        samples = sum(map(len, batches))
        return replace(self._stats, in_flight_batches=len(batches), in_flight_samples=samples)

    async def wait_connected(self) -> None:
        """Return once connected (bound it with ``asyncio.timeout``)."""
        await self._until(lambda: self.connected)

    async def wait_drained(self) -> None:
        """Return once the broker has acknowledged every sample and nothing is in flight.

        Under ``confirm: store`` the samples may still be in the outbox, awaiting a receipt
        (see :meth:`wait_confirmed`)."""
        outbox = self.outbox
        await self._until(
            lambda: outbox.depth() == outbox.unconfirmed() and not self._batches_in_flight
        )

    async def wait_confirmed(self) -> None:
        """Return once the outbox is empty: every sample confirmed (or refused, or dropped)."""
        await self._until(lambda: not self.outbox.depth())

    # --- draining (event loop) ------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = self._pump()
                delay = self._watch(delay)
            except Exception:  # the loop boundary: count, log, try again shortly
                self._stats.drain_errors += 1
                log.exception("publisher: draining the outbox failed")
                delay = 1.0
            self._changed()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _pump(self) -> float | None:
        """Publish what the window and the replay budget allow; return when to try again."""
        if not self.connected or self._stopping:
            return None
        cfg = self.config
        while self._room():  # live: numbered since this connection came up
            rows = self.outbox.pending(cfg.max_samples_per_batch, after=self._live_after)
            sent, last = self._send(rows, replay=False)
            if not sent:
                break
            self._live_after = last
        while self._room():  # backlog
            backlog = self._backlog.next(self._claimed, through=self._live_after)
            if not isinstance(backlog, list):
                return backlog
            self._backlog.sent(*self._send(backlog, replay=True))
        return None

    def _watch(self, delay: float | None) -> float | None:
        """Drop a connection whose oldest PUBACK has been owed for 1.5 keepalives: the path
        is dead though nothing said so (no RST, no FIN), and paho's own keepalive would take
        up to two. Return when to look again."""
        if not self.connected or not self._inflight:
            return delay
        limit = 1.5 * self.config.keepalive_s
        age = self._now() - min(entry.sent_at for entry in self._inflight.values())
        if age < limit:
            return limit - age if delay is None else min(delay, limit - age)
        self._stats.silent_drops += 1
        log.warning("publisher: no PUBACK for %.1f s: the connection is dead; reconnecting", age)
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # paho sees the error and connects again
                sock.shutdown(socket.SHUT_RDWR)
        return delay

    def _room(self) -> bool:
        return self._batches_in_flight < self._window

    def _send(self, rows: Sequence[OutboxRow], *, replay: bool) -> tuple[int, int]:
        """Publish rows as batches while the window has room; return (rows sent, last seq)."""
        sent, last, cfg = 0, -1, self.config
        again = {row.seq for row in rows if row.sent_at is not None}
        for batch in encode_batches(
            rows, factory=cfg.factory, gateway=cfg.gateway, max_samples=cfg.max_samples_per_batch
        ):
            if not self._room():
                break
            sent, last = sent + len(batch.seqs), batch.seqs[-1]
            if len(batch.payload) > MAX_MESSAGE_BYTES:
                self.outbox.mark_refused(batch.seqs, f"oversize ({len(batch.payload)} bytes)")
                continue
            info = self._client.publish(self._samples_topic, batch.payload, qos=1)
            # NO_CONN: the link dropped a moment ago; paho keeps it and sends it on reconnect.
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                raise PublisherError(f"paho did not queue a batch: {mqtt.error_string(info.rc)}")
            self._inflight[info.mid] = _InFlight(batch.seqs, "samples", self._now())
            self._claimed.update(batch.seqs)
            self._batches_in_flight += 1
            self._stats.published_batches += 1
            self._stats.published_samples += len(batch.seqs)
            self._stats.replayed_samples += len(batch.seqs) if replay else 0
            self._stats.resent_samples += sum(seq in again for seq in batch.seqs)
        return sent, last

    def _publish_control(
        self, payload: bytes, machine: str | None, done: "asyncio.Future[ReasonCode] | None" = None
    ) -> None:
        topic = self._status_topic if machine is None else self._machine_topic(machine)
        info = self._client.publish(topic, payload, qos=1, retain=True)
        what = "status" if machine is None else f"machine {machine}"
        self._inflight[info.mid] = _InFlight((), what, self._now(), done)

    # --- events handed over from paho's thread --------------------------------------------

    def _on_connected(self, receive_maximum: int, control: list[tuple[int, str]]) -> None:
        now = self._now()
        for entry in self._inflight.values():  # paho sends them again now
            entry.sent_at = now
        self._inflight.update((mid, _InFlight((), what, now)) for mid, what in control)
        self._stats.connected = True
        self._stats.reconnects += 1 if self._stats.connects else 0
        self._stats.connects += 1
        # Slow start: probe with one batch, double the window with every acknowledged one.
        self._window, self._window_max = 1, max(1, min(self.config.max_inflight, receive_maximum))
        # Everything numbered up to now is backlog; what comes next is live.
        self._live_after = self.outbox.last_seq
        self._backlog.connected(through=self._live_after)
        depth, sent = self.outbox.depth(), self.outbox.unconfirmed()
        log.info("publisher: connected; %d samples pending, %d of them sent", depth, sent)
        self.notify()

    def _on_connect_refused(self, reason: ReasonCode) -> None:
        self._stats.connect_refusals += 1
        log.error("publisher: the broker refused the connection: %s", reason)

    def _on_disconnected(self, reason: ReasonCode, dropped: list[int]) -> None:
        for mid in dropped:  # back in the outbox's care: sent again after reconnecting
            entry = self._inflight.pop(mid, None)
            if entry is not None and entry.seqs:
                self._batches_in_flight -= 1
                self._claimed.difference_update(entry.seqs)
        if self.connected:
            level = logging.INFO if self._stopping else logging.WARNING
            depth = self.outbox.depth()
            log.log(level, "publisher: disconnected (%s); %d samples pending", reason, depth)
        self._stats.connected = False
        self.notify()

    def _on_receipt(self, topic: str, payload: bytes) -> None:
        if self._receipts.apply(topic, payload):
            self._changed()

    def _on_ack(self, mid: int, reason: ReasonCode) -> None:
        entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        if entry.done is not None and not entry.done.done():
            entry.done.set_result(reason)
        if not entry.seqs:
            if reason.is_failure:
                self._stats.refused_control += 1
                log.error("publisher: the broker refused the %s message: %s", entry.what, reason)
            self._changed()
            return
        self._batches_in_flight -= 1
        self._claimed.difference_update(entry.seqs)
        self._stats.last_publish_latency_s = self._now() - entry.sent_at
        if reason.is_failure:
            self.outbox.mark_refused(entry.seqs, f"{reason.getName()} (0x{reason.value:02x})")
            self._stats.refused_samples += len(entry.seqs)
            self._window = 1
        else:
            if self._store_confirms:
                self.outbox.mark_sent(entry.seqs, self._clock())
            else:
                self.outbox.mark_delivered(entry.seqs)
            self._stats.acked_samples += len(entry.seqs)
            self._window = min(self._window_max, 2 * self._window)
        self.notify()

    # --- paho callbacks (paho's network thread) -------------------------------------------

    def _paho_pre_connect(self, client: mqtt.Client, _: Any) -> None:
        # The will's ts is the time this CONNECT is composed (docs/contract.md, section 11).
        will = self._status("offline", "connection_lost")
        client.will_set(self._status_topic, will, qos=1, retain=True)

    def _paho_connect(
        self, client: mqtt.Client, _: Any, __: Any, reason: ReasonCode, props: Properties | None
    ) -> None:
        if reason.is_failure:
            self._to_loop(self._on_connect_refused, reason)
            return
        control: list[tuple[int, str]] = []
        if not self._stopping:  # else stop() might not see it, and `online` would stay
            online = self._status("online", "connected")
            control.append((client.publish(self._status_topic, online, 1, True).mid, "status"))
            retained = [(m, encode(d)) for m, d in self._descriptions.items()]
            retained += [(machine, b"") for machine in self._withdrawn]  # empty: deleted
            for machine, payload in retained:
                info = client.publish(self._machine_topic(machine), payload, 1, True)
                control.append((info.mid, f"machine {machine}"))
            if self._store_confirms:  # the retained receipts follow the SUBACK
                client.subscribe(self._receipts.topic_filter, qos=1)
        self._to_loop(self._on_connected, getattr(props, "ReceiveMaximum", 65535), control)

    def _paho_disconnect(
        self, client: mqtt.Client, _: Any, __: Any, rc: ReasonCode, *a: Any
    ) -> None:
        # paho would re-send every unacknowledged message at once after reconnecting; we take
        # them back and re-send them from the outbox, in seq order, in a slow-started window.
        dropped = [message.mid for message in client.drop_out_messages()]
        self._to_loop(self._on_disconnected, rc, dropped)

    def _paho_publish(self, _: mqtt.Client, __: Any, mid: int, rc: ReasonCode, *a: Any) -> None:
        self._to_loop(self._on_ack, mid, rc)

    def _paho_message(self, _: mqtt.Client, __: Any, message: mqtt.MQTTMessage) -> None:
        self._to_loop(self._on_receipt, message.topic, bytes(message.payload))

    def _to_loop(self, callback: Callable[..., None], *args: object) -> None:
        # Never raise here: an exception in a paho callback ends paho's network thread.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    # --- helpers --------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client_id = cfg.client_id or cfg.username or f"kyoso-{cfg.factory}-{cfg.gateway}"
        client = new_client(cfg, client_id, logging.getLogger(f"{__name__}.paho"))
        client.max_inflight_messages_set(0)  # the window is ours (see _room)
        client.on_pre_connect = self._paho_pre_connect
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        return client

    def _status(
        self,
        status: GatewayState,
        reason: GatewayReason,
    ) -> bytes:
        cfg, now = self.config, datetime.now(UTC)
        ids = {"factory": cfg.factory, "gateway": cfg.gateway, "session": self.outbox.session}
        message = GatewayStatus(**ids, status=status, ts=now, reason=reason, software=cfg.software)
        return encode(message)

    def _machine_topic(self, machine: str) -> str:
        return machine_topic(self.config.factory, self.config.gateway, machine)

    def _check_origin(self, description: MachineDescription) -> None:
        if (description.factory, description.gateway) != (self.config.factory, self.config.gateway):
            raise PublisherError(f"{description.machine}: description of another gateway")

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _changed(self) -> None:
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            if not watcher.done():
                watcher.set_result(None)

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._watchers.append(waiter)
            await waiter
