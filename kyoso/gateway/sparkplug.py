"""The gateway as a Sparkplug B 3.0 edge node: one node per gateway, a device per machine.

Promises:

- **Sessions.** Each MQTT connection is a session numbered by ``bdSeq`` (0-255, +1 per
  CONNECT, kept across restarts in a file beside the outbox); the NDEATH carrying it is the
  connection's will, and :meth:`SparkplugNode.stop` publishes it before disconnecting.
  After the CONNACK the node subscribes to its NCMD (and the primary host's STATE), then
  births: NBIRTH (``bdSeq``, the writable ``Node Control/Rebirth``), then a DBIRTH per
  machine naming every metric with its alias (:mod:`kyoso.gateway.sparkplug_metrics`).
  ``seq`` is 0 on the NBIRTH and +1 (mod 256) on every later message of the birth.
- **Data.** One DDATA per sample, metrics by alias only, each timestamped with the
  sample's end. Births and data use QoS 0, not retained, as the specification says.
- **Nothing lost.** Samples enter a durable outbox of their own (the gateway's outbox file
  with ``-sparkplug`` added, ``confirm: broker``) and leave it once paho has written their
  DDATA to the broker's connection. While disconnected, or while the primary host (if
  ``primary_host_id`` is set) is offline or not yet seen, nothing is published and samples
  wait there; once it is online (or after reconnecting) the node births again, then sends
  what waited with ``is_historical`` true, oldest first, then live data.
- **Rebirth** on an NCMD whose ``Node Control/Rebirth`` is true.

This node stays connected while the primary host is offline (it stops publishing rather
than disconnecting): one broker has no other server to fail over to.

Threads: as :mod:`kyoso.gateway.publisher`: paho's network thread hands its events to the
asyncio loop; births, data and the outbox are handled on the loop.
"""

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kyoso.contract import Sample
from kyoso.mqtt import new_client
from kyoso.sparkplug import (
    REBIRTH,
    MessageType,
    Metric,
    Payload,
    SparkplugError,
    Topic,
    decode,
    encode,
    parse_host_state,
)

from .config import GatewayConfig
from .outbox import ConfirmMode, SqliteOutbox
from .sparkplug_config import SparkplugConfig
from .sparkplug_metrics import devices, node_birth_metrics, node_death_metrics

__all__ = ["SparkplugNode", "SparkplugStats", "bdseq_path", "outbox_path"]

log = logging.getLogger(__name__)

MAX_UNWRITTEN = 100
"""Most DDATA handed to paho and not yet written: bounds what a reconnect takes back."""


@dataclass(slots=True)
class SparkplugStats:
    """Counters for metrics and tests."""

    connects: int = 0
    births: int = 0
    rebirth_requests: int = 0
    data_messages: int = 0
    historical_messages: int = 0
    host_online: bool = False


def outbox_path(gateway_outbox: Path) -> Path:
    """The Sparkplug outbox's file, beside the gateway's outbox."""
    return gateway_outbox.with_name(f"{gateway_outbox.stem}-sparkplug{gateway_outbox.suffix}")


def bdseq_path(gateway_outbox: Path) -> Path:
    """The file keeping the last ``bdSeq`` used, beside the gateway's outbox."""
    return gateway_outbox.with_name(f"{gateway_outbox.stem}-sparkplug.bdseq")


class SparkplugNode:
    """Publishes a gateway's samples as a Sparkplug B edge node; see the module docstring.

    ``async with SparkplugNode(gateway_config) as node:`` then :meth:`submit` samples, on
    one asyncio event loop.
    """

    def __init__(self, gateway: GatewayConfig, *, clock: Callable[[], float] = time.time) -> None:
        config = gateway.sparkplug
        if config is None:
            raise ValueError("the gateway's configuration has no sparkplug section")
        self.config: SparkplugConfig = config
        self._clock = clock
        self._broker = config.broker or gateway.broker
        node = config.edge_node_id or gateway.gateway
        self._ncmd = Topic(config.group_id, MessageType.NCMD, node)
        self._node = node
        self._state_topic = (
            str(Topic.state(config.primary_host_id)) if config.primary_host_id else None
        )
        self._client_id = config.client_id or f"kyoso-{gateway.factory}-{gateway.gateway}-sparkplug"
        self._bdseq_file = bdseq_path(gateway.outbox.path)
        self.outbox = SqliteOutbox(
            gateway.outbox.model_copy(
                update={"path": outbox_path(gateway.outbox.path), "confirm": ConfirmMode.BROKER}
            )
        )
        self._devices = {d.machine: d for d in devices(gateway.machines)}
        self._latest: dict[str, Sample] = {}
        self.stats = SparkplugStats(host_online=self._state_topic is None)
        self._host_ts = -1
        self._bdseq = -1
        self._seq = 0
        self._connected = self._born = False
        self._live_after = self._sent_through = -1
        self._unwritten: dict[int, int] = {}  # paho mid -> outbox seq
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._client = new_client(
            self._broker, self._client_id, logging.getLogger(f"{__name__}.paho")
        )
        self._client.on_pre_connect = self._paho_pre_connect
        self._client.on_connect = self._paho_connect
        self._client.on_disconnect = self._paho_disconnect
        self._client.on_publish = self._paho_publish
        self._client.on_message = self._paho_message

    # --- public API -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background, retried) and publishing."""
        self._loop = asyncio.get_running_loop()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0  # Sparkplug: a clean session per connection
        self._client.connect_async(
            self._broker.host,
            self._broker.port,
            self._broker.keepalive_s,
            clean_start=True,
            properties=properties,
        )
        self._client.loop_start()
        self._task = asyncio.create_task(self._drain(), name="kyoso-sparkplug")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Publish the NDEATH (if connected), disconnect, close the outbox; what was not
        written stays in it for the next start."""
        if self._loop is None or self._task is None:
            self.outbox.close()
            return
        self._born = False  # no data after the NDEATH
        if self._client.is_connected():
            info = self._client.publish(
                self._topic(MessageType.NDEATH), self._death(), qos=1, retain=False
            )
            with contextlib.suppress(TimeoutError, RuntimeError, ValueError):
                await asyncio.wait_for(
                    asyncio.to_thread(info.wait_for_publish, timeout_s), timeout_s + 1
                )
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.outbox.close()

    async def __aenter__(self) -> "SparkplugNode":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def submit(self, samples: Sequence[Sample]) -> list[int]:
        """Keep ``samples`` in the Sparkplug outbox and publish them when the node may."""
        seqs = self.outbox.append(samples)
        for sample in samples:
            self._latest[sample.machine] = sample
        self._wake.set()
        return seqs

    # --- on the event loop ----------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            self._wake.clear()
            try:
                self._pump()
            except Exception:  # the loop boundary: log, try again at the next wake-up
                log.exception("sparkplug: publishing the outbox failed")
            await self._wake.wait()

    def _pump(self) -> None:
        if not self._born:
            return
        while len(self._unwritten) < MAX_UNWRITTEN:
            rows = self.outbox.pending(
                MAX_UNWRITTEN - len(self._unwritten), after=self._sent_through
            )
            if not rows:
                return
            claimed = set(self._unwritten.values())  # handed to paho before a rebirth
            for row in rows:
                if row.seq in claimed:
                    self._sent_through = row.seq
                    continue
                sample = Sample.model_validate_json(row.payload)
                device = self._devices.get(sample.machine)
                if device is None:
                    self.outbox.mark_refused([row.seq], "machine not in the configuration")
                    continue
                historical = row.seq <= self._live_after
                metrics = device.data(sample, historical=historical)
                if not self._publish(MessageType.DDATA, metrics, device.machine, row.seq):
                    return
                self._sent_through = row.seq
                self.stats.data_messages += 1
                self.stats.historical_messages += historical

    def _birth(self) -> None:
        """NBIRTH then every DBIRTH; data sent from now on are live unless held before."""
        self._seq = 0
        now = self._now_ms()
        self._born = self._publish(MessageType.NBIRTH, node_birth_metrics(self._bdseq, now))
        for device in self._devices.values():
            metrics = device.birth(self._latest.get(device.machine), now)
            self._born = self._born and self._publish(MessageType.DBIRTH, metrics, device.machine)
        self._live_after, self._sent_through = self.outbox.last_seq, -1
        self.stats.births += self._born
        self._wake.set()

    def _publish(
        self,
        kind: MessageType,
        metrics: tuple[Metric, ...],
        device: str | None = None,
        row: int | None = None,
    ) -> bool:
        payload = Payload(timestamp_ms=self._now_ms(), seq=self._seq, metrics=metrics)
        info = self._client.publish(self._topic(kind, device), encode(payload), qos=0)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self._seq = (self._seq + 1) % 256
        if row is not None:
            self._unwritten[info.mid] = row
        return True

    def _on_connected(self) -> None:
        self._connected, self._born = True, False
        self.stats.connects += 1
        if self.stats.host_online:
            self._birth()

    def _on_disconnected(self, dropped: list[int]) -> None:
        self._connected = self._born = False
        for mid in dropped:  # taken back from paho: they wait in the outbox
            self._unwritten.pop(mid, None)

    def _on_written(self, mid: int) -> None:
        row = self._unwritten.pop(mid, None)
        if row is not None:
            self.outbox.mark_delivered([row])
            self._wake.set()

    def _on_message(self, topic: str, data: bytes) -> None:
        try:
            if topic == self._state_topic:
                self._on_host_state(*parse_host_state(data))
            elif topic == str(self._ncmd):
                self._on_command(decode(data))
        except SparkplugError as exc:
            log.warning("sparkplug: ignored a malformed message on %s: %s", topic, exc)

    def _on_host_state(self, online: bool, timestamp_ms: int) -> None:
        if timestamp_ms < self._host_ts:  # an older state delivered late
            return
        self._host_ts = timestamp_ms
        was_online, self.stats.host_online = self.stats.host_online, online
        log.info(
            "sparkplug: primary host %s is %s",
            self.config.primary_host_id,
            "online" if online else "offline",
        )
        if not online:
            self._born = False
        elif not was_online and self._connected:
            self._birth()

    def _on_command(self, payload: Payload) -> None:
        wanted = any(m.name == REBIRTH and m.value is True for m in payload.metrics)
        if wanted:
            self.stats.rebirth_requests += 1
            if self._connected and self.stats.host_online:
                self._birth()

    # --- paho callbacks (paho's network thread) -------------------------------------------

    def _paho_pre_connect(self, client: mqtt.Client, _: Any) -> None:
        self._bdseq = self._next_bdseq()
        client.will_set(self._topic(MessageType.NDEATH), self._death(), qos=1, retain=False)

    def _paho_connect(
        self, client: mqtt.Client, _: Any, __: Any, reason: ReasonCode, props: Properties | None
    ) -> None:
        if reason.is_failure:
            log.error("sparkplug: the broker refused the connection: %s", reason)
            return
        client.subscribe(str(self._ncmd), qos=1)
        if self._state_topic is not None:
            client.subscribe(self._state_topic, qos=1)
        self._to_loop(self._on_connected)

    def _paho_disconnect(
        self, client: mqtt.Client, _: Any, __: Any, rc: ReasonCode, *a: Any
    ) -> None:
        dropped = [message.mid for message in client.drop_out_messages()]
        self._to_loop(self._on_disconnected, dropped)

    def _paho_publish(self, _: mqtt.Client, __: Any, mid: int, rc: ReasonCode, *a: Any) -> None:
        self._to_loop(self._on_written, mid)

    def _paho_message(self, _: mqtt.Client, __: Any, message: mqtt.MQTTMessage) -> None:
        self._to_loop(self._on_message, message.topic, bytes(message.payload))

    def _to_loop(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

    # --- helpers --------------------------------------------------------------------------

    def _next_bdseq(self) -> int:
        """The next session's bdSeq, written durably before its CONNECT uses it."""
        try:
            last = int(self._bdseq_file.read_text())
        except FileNotFoundError:
            last = -1
        value = (last + 1) % 256
        staging = self._bdseq_file.with_name(self._bdseq_file.name + ".new")
        with staging.open("w") as handle:
            handle.write(f"{value}\n")
            handle.flush()
            os.fsync(handle.fileno())
        staging.replace(self._bdseq_file)
        return value

    def _death(self) -> bytes:
        return encode(
            Payload(timestamp_ms=self._now_ms(), seq=None, metrics=node_death_metrics(self._bdseq))
        )

    def _topic(self, kind: MessageType, device: str | None = None) -> str:
        return str(Topic(self.config.group_id, kind, self._node, device))

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)
