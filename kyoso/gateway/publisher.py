"""Publishes the gateway's outbox to the regional broker over MQTT 5 (paho-mqtt 2.x).

Promises:

- **Delivered means acknowledged.** A sample leaves the outbox only when its batch's PUBACK
  carries a success reason code (``is_failure`` false; 0x10 *No matching subscribers* is a
  success: the broker took it). A failure code (>= 0x80, e.g. 0x87 *Not authorized*) moves
  the batch's samples to the outbox's ``refused`` table: logged, counted, not re-sent.
- **Nothing is lost while disconnected**: nothing is published, samples wait in the outbox.
  Batches unacknowledged when the link drops are taken back from paho (which would re-send
  them all at once) and re-sent from the outbox after reconnecting.
- **Live first, backlog at a bounded rate.** Samples numbered since the current connection
  came up are *live*: sent at once, in seq order. Older ones are the *backlog*: sent oldest
  first, in seq order, at most ``replay_rate_samples_per_s`` (a token bucket holding one
  second's worth), in the in-flight slots live batches leave free. So replayed batches
  interleave with live ones; the ingest accepts that, as timestamps come from the source.
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
publishes the status and descriptions, so they go out before anything else. The outbox and
all bookkeeping are used from the event loop only.
"""

import asyncio
import contextlib
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field

from kyoso import __version__
from kyoso.contract import (
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES_PER_BATCH,
    GatewayStatus,
    Id,
    MachineDescription,
    Sample,
    encode,
    machine_topic,
    samples_topic,
    status_topic,
)
from kyoso.mqtt import BrokerConnection, new_client

from .errors import GatewayError
from .outbox import OutboxRow, SqliteOutbox

__all__ = [
    "EncodedBatch",
    "MqttPublisher",
    "PublisherConfig",
    "PublisherError",
    "PublisherStats",
    "encode_batches",
]

log = logging.getLogger(__name__)


class PublisherConfig(BrokerConnection):
    """How the gateway reaches the regional broker and paces what it sends."""

    factory: Id = Field(description="This gateway's factory id (first topic level).")
    gateway: Id = Field(description="This gateway's id within its factory.")
    client_id: str | None = Field(None, description="None: kyoso-<factory>-<gateway>, stable.")
    max_inflight: int = Field(20, ge=1, le=65535, description="Most batches awaiting PUBACK.")
    max_samples_per_batch: int = Field(
        500, ge=1, le=MAX_SAMPLES_PER_BATCH, description="Most samples per batch."
    )
    replay_rate_samples_per_s: float = Field(
        100.0, gt=0, description="Backlog replay rate; live samples are not limited."
    )
    shutdown_timeout_s: float = Field(10.0, ge=0, description="Longest wait of stop().")
    software: str = Field(
        f"kyoso-gateway {__version__}", max_length=64, description="Sent in the status."
    )


class PublisherError(GatewayError):
    """Misuse of the publisher, or paho refusing to queue a message."""


@dataclass(slots=True)
class PublisherStats:
    """Counters for metrics; a snapshot from :attr:`MqttPublisher.stats`."""

    connected: bool = False
    published_batches: int = 0
    published_samples: int = 0
    replayed_samples: int = 0
    acked_samples: int = 0
    refused_samples: int = 0
    refused_control: int = 0
    in_flight_batches: int = 0
    in_flight_samples: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_refusals: int = 0
    drain_errors: int = 0
    last_publish_latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A ``SampleBatch`` on the wire: its session, its samples' seqs, its JSON."""

    session: str
    seqs: tuple[int, ...]
    payload: bytes


def encode_batches(
    rows: Sequence[OutboxRow],
    *,
    factory: str,
    gateway: str,
    max_samples: int = MAX_SAMPLES_PER_BATCH,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[EncodedBatch]:
    """Group rows (in seq order) into batches of one session, ``max_samples``, ``max_bytes``.

    The outbox stores each sample in canonical form, so a batch is written by joining them:
    the bytes equal ``encode(SampleBatch(...))`` of the same samples (a test pins this), at
    no parsing cost. A row too big on its own gets a batch of its own, which the caller
    refuses; no valid sample comes near 256 KiB.
    """
    batches: list[EncodedBatch] = []
    for session, group in itertools.groupby(rows, key=lambda row: row.session):
        # Ids match the contract's id pattern: they need no JSON escaping.
        head = f'{{"v":1,"factory":"{factory}","gateway":"{gateway}","session":"{session}"'
        start = head.encode() + b',"samples":['
        current: list[OutboxRow] = []
        size = len(start) + 1  # plus "]}", less the comma before the first sample
        for row in group:
            if current and (len(current) >= max_samples or size + 1 + len(row.payload) > max_bytes):
                batches.append(_batch(session, start, current))
                current, size = [], len(start) + 1
            current.append(row)
            size += 1 + len(row.payload)
        batches.append(_batch(session, start, current))
    return batches


def _batch(session: str, start: bytes, rows: list[OutboxRow]) -> EncodedBatch:
    payload = start + b",".join(row.payload for row in rows) + b"]}"
    return EncodedBatch(session, tuple(row.seq for row in rows), payload)


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
    ) -> None:
        self.config, self.outbox = config, outbox
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
        self._ceiling = self._live_after = self._backlog_after = -1
        self._backlog_done = True
        rate = config.replay_rate_samples_per_s
        self._bucket = max(1, min(config.max_samples_per_batch, math.ceil(rate)))
        self._tokens = self._tokens_at = 0.0
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
        """Shut down cleanly within ``shutdown_timeout_s``; whatever was not acknowledged
        stays in the outbox and goes out after the next start."""
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
        log.info("publisher stopped; %d samples wait in the outbox", self.outbox.depth())

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
    def stats(self) -> PublisherStats:
        batches = [entry.seqs for entry in self._inflight.values() if entry.seqs]
        samples = sum(map(len, batches))
        return replace(self._stats, in_flight_batches=len(batches), in_flight_samples=samples)

    async def wait_connected(self) -> None:
        """Return once connected (bound it with ``asyncio.timeout``)."""
        await self._until(lambda: self.connected)

    async def wait_drained(self) -> None:
        """Return once the outbox is empty and nothing is in flight."""
        await self._until(lambda: not self.outbox.depth() and not self._batches_in_flight)

    # --- draining (event loop) ------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = self._pump()
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
        rate = cfg.replay_rate_samples_per_s
        while self._room() and not self._backlog_done:
            now = self._now()
            self._tokens = min(self._bucket, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            rows = self.outbox.pending(
                self._bucket, after=self._backlog_after, through=self._ceiling
            )
            if not rows:
                self._backlog_done = True
                log.info("publisher: backlog replayed")
                break
            fresh = [row for row in rows if row.seq not in self._claimed]
            if len(fresh) > self._tokens:
                return (len(fresh) - self._tokens) / rate
            sent, last = self._send(fresh, replay=True)
            self._tokens -= sent
            self._backlog_after = last if sent else rows[-1].seq
        return None

    def _room(self) -> bool:
        return self._batches_in_flight < self._window

    def _send(self, rows: Sequence[OutboxRow], *, replay: bool) -> tuple[int, int]:
        """Publish rows as batches while the window has room; return (rows sent, last seq)."""
        sent, last, cfg = 0, -1, self.config
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
        self._inflight.update((mid, _InFlight((), what, now)) for mid, what in control)
        self._stats.connected = True
        self._stats.reconnects += 1 if self._stats.connects else 0
        self._stats.connects += 1
        # Slow start: probe with one batch, double the window with every acknowledged one.
        self._window, self._window_max = 1, max(1, min(self.config.max_inflight, receive_maximum))
        # Everything numbered up to now is backlog; what comes next is live.
        self._ceiling = self._live_after = self.outbox.last_seq
        self._backlog_after, self._backlog_done = -1, False
        self._tokens, self._tokens_at = float(self._bucket), now
        log.info("publisher: connected; %d samples to replay", self.outbox.depth())
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

    def _to_loop(self, callback: Callable[..., None], *args: object) -> None:
        # Never raise here: an exception in a paho callback ends paho's network thread.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(callback, *args)

    # --- helpers --------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client_id = cfg.client_id or f"kyoso-{cfg.factory}-{cfg.gateway}"
        client = new_client(cfg, client_id, logging.getLogger(f"{__name__}.paho"))
        client.max_inflight_messages_set(0)  # the window is ours (see _room)
        client.on_pre_connect = self._paho_pre_connect
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        return client

    def _status(
        self,
        status: Literal["online", "offline"],
        reason: Literal["connected", "shutdown", "connection_lost"],
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
