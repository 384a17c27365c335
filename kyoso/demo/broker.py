"""An MQTT 5 broker that installs with pip, for ``kyoso demo``: rumqttd through iotcore.

**Why iotcore.** It ships the compiled Rust broker rumqttd in a wheel (x86-64 and aarch64,
so a laptop and a Raspberry Pi alike) and runs it as a child process that stops cleanly and
releases its ports. What the ingest relies on works with it: MQTT 5 (on its own listener),
QoS 1 messages left unacknowledged are redelivered after a reconnect (so paho's manual ack,
which the ingest sends only after the store write, keeps its promise), in-order
acknowledgements, retained messages (cleared by an empty retained payload), last will and
shared subscriptions (``$share/<group>/…``). It costs about 4 % of a CPU at 200 messages/s
of 8 KB. The pure-Python candidates fall short: amqtt speaks MQTT 3.1.1 only and drops a
message left unacknowledged for 5 s, which breaks acknowledging after the store write;
hbmqtt is amqtt's unmaintained predecessor (last release 2019); moat-mqtt, mqttools and mqttd
were put through the same paho-mqtt checks; iotcore is the one chosen for the reasons above.

**Its limits, and what they mean for the demo.**

- *In memory only*: nothing survives a restart of the broker, neither retained messages nor
  queued ones nor sessions. The gateways resend from their outbox what the broker had not
  acknowledged, and the store is on disk, so a restart of ``kyoso demo`` loses no stored
  data; but whatever sat in the broker for an absent subscriber is gone.
- *Bounded backlog*: rumqttd keeps, per subscription filter, at most
  ``backlog_segment_bytes * backlog_segments`` of messages (default 8 x 4 MiB = 32 MiB,
  about 4,000 messages of 8 KB) and silently drops the oldest beyond that. Memory grows
  to about 2.5 times that budget per filter when it is full, so the default stays well
  inside a Raspberry Pi's RAM. Bulk history (the backfilled week) must therefore go to the
  store directly or be paced by the consumer's acknowledgements, never be dumped into the
  broker faster than the ingest drains it.
- *Session expiry is ignored*: a persistent session lives until the broker stops.
- *Acknowledgements must come in arrival order*: rumqttd drops a client that acknowledges
  out of order (the ingest acknowledges in order).
- Without a configuration file rumqttd accepts only 20 KB payloads, so this module always
  writes one, with the contract's :data:`~kyoso.contract.MAX_MESSAGE_BYTES`.
"""

import asyncio
import ipaddress
import logging
import socket
from pathlib import Path
from types import TracebackType
from typing import Self

from iotcore import Broker

from kyoso.contract import MAX_MESSAGE_BYTES

__all__ = ["EmbeddedBroker", "EmbeddedBrokerError"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
CONFIG_NAME = "broker.toml"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start (port taken, process exited, never listened)."""


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """rumqttd in a child process, configured for Kyoso; a sync or async context manager.

    ``port=0`` (the default) picks a free port when the broker first starts; it is kept for
    later restarts of the same object. ``mqtt311_port`` adds an MQTT 3.1.1 listener (``0``:
    a free port; ``None``: none), since rumqttd serves each protocol version on its own port.
    The configuration is written to ``data_dir/broker.toml``; nothing else is stored there.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mqtt311_port: int | None = None,
        backlog_segment_bytes: int = 4 * MiB,
        backlog_segments: int = 8,
        max_connections: int = 1000,
        startup_timeout_s: float = 10.0,
    ) -> None:
        if backlog_segment_bytes < MAX_MESSAGE_BYTES:
            raise ValueError(f"backlog_segment_bytes must hold a message: >= {MAX_MESSAGE_BYTES}")
        if backlog_segments < 1:
            raise ValueError("backlog_segments must be >= 1")
        self.data_dir = Path(data_dir)
        self.listen_host = host
        self._port = port
        self._mqtt311_port = mqtt311_port
        self.backlog_segment_bytes = backlog_segment_bytes
        self.backlog_segments = backlog_segments
        self.max_connections = max_connections
        self.startup_timeout_s = startup_timeout_s
        self._broker: Broker | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def host(self) -> str:
        """The address local clients connect to (loopback when listening on every address)."""
        try:
            address = ipaddress.ip_address(self.listen_host)
        except ValueError:  # a host name
            return self.listen_host
        if address.is_unspecified:
            return "::1" if address.version == 6 else "127.0.0.1"
        return self.listen_host

    @property
    def port(self) -> int:
        """The MQTT 5 port (0 until a free one is picked by :meth:`start`)."""
        return self._port

    @property
    def mqtt311_port(self) -> int | None:
        """The MQTT 3.1.1 port, if that listener is enabled (0 until started)."""
        return self._mqtt311_port

    @property
    def running(self) -> bool:
        return self._broker is not None and self._broker.is_running

    def config_text(self) -> str:
        """The rumqttd configuration (TOML) for the current ports."""
        listen = self.listen_host if ":" not in self.listen_host else f"[{self.listen_host}]"
        connections = (
            "connection_timeout_ms = 60000\n"
            f"max_payload_size = {MAX_MESSAGE_BYTES}\n"
            "max_inflight_count = 100\n"
            "dynamic_filters = true\n"
        )
        text = (
            "# Written by kyoso.demo.broker; rewritten at every start.\n"
            "id = 0\n\n"
            "[router]\n"
            "id = 0\n"
            f"max_connections = {self.max_connections}\n"
            "max_outgoing_packet_count = 200\n"
            "# Backlog per subscription filter: segment bytes x segments; oldest dropped beyond.\n"
            f"max_segment_size = {self.backlog_segment_bytes}\n"
            f"max_segment_count = {self.backlog_segments}\n\n"
            "[v5.1]\n"
            'name = "mqtt5"\n'
            f'listen = "{listen}:{self._port}"\n'
            "next_connection_delay_ms = 1\n"
            "[v5.1.connections]\n" + connections
        )
        if self._mqtt311_port is not None:
            text += (
                "\n[v4.1]\n"
                'name = "mqtt311"\n'
                f'listen = "{listen}:{self._mqtt311_port}"\n'
                "next_connection_delay_ms = 1\n"
                "[v4.1.connections]\n" + connections
            )
        return text

    def start(self) -> Self:
        """Write the configuration, start the broker and return once its ports accept TCP.

        Blocks for about 0.2 s; a no-op if it is running already.
        """
        if self.running:
            return self
        if self._port == 0:
            self._port = _free_port(self.listen_host)
        if self._mqtt311_port == 0:
            self._mqtt311_port = _free_port(self.listen_host)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        broker = Broker(config_path=str(self.config_path))
        try:
            broker.start(timeout=self.startup_timeout_s)
        except (OSError, RuntimeError) as exc:
            raise EmbeddedBrokerError(f"embedded broker on port {self._port}: {exc}") from exc
        self._broker = broker
        ports = [p for p in (self._port, self._mqtt311_port) if p is not None]
        if not all(_accepts(self.host, p) for p in ports):
            self.stop()
            raise EmbeddedBrokerError(f"embedded broker does not accept connections on {ports}")
        log.info("embedded MQTT broker listening on %s:%d (MQTT 5)", self.host, self._port)
        return self

    def stop(self) -> None:
        """Stop the broker and release its ports (its messages are lost); safe to call twice."""
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.stop()
            log.info("embedded MQTT broker stopped")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, _: type[BaseException] | None, __: BaseException | None, ___: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, _: type[BaseException] | None, __: BaseException | None, ___: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)
