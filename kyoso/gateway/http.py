"""The gateway's local HTTP endpoint: ``/healthz``, ``/readyz`` and Prometheus ``/metrics``.

Metrics are read from the gateway's own counters at scrape time, so polling and publishing
never pay for them. The server is a few lines on asyncio streams: it serves three GETs on
a local port and nothing else.
"""

import asyncio
import json
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .agent import Gateway
from .config import HttpConfig

_MAX_REQUEST_LINE = 4096


class GatewayCollector(Collector):
    """Turns the gateway's counters into Prometheus metrics."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        polls = CounterMetricFamily("kyoso_gateway_polls", "Polls per machine.", labels=["machine"])
        requests = CounterMetricFamily(
            "kyoso_gateway_modbus_requests", "Modbus requests sent.", labels=["machine"]
        )
        errors = CounterMetricFamily(
            "kyoso_gateway_poll_errors", "Failed requests by reason.", labels=["machine", "reason"]
        )
        latency = GaugeMetricFamily(
            "kyoso_gateway_poll_seconds", "Duration of the last poll.", labels=["machine"]
        )
        for machine, source in gw.sources.items():
            stats = source.stats
            polls.add_metric([machine], stats.polls)
            requests.add_metric([machine], stats.requests)
            for reason, count in stats.errors.items():
                errors.add_metric([machine, reason], count)
            if stats.last_poll_s is not None:
                latency.add_metric([machine], stats.last_poll_s)
        yield from (polls, requests, errors, latency)
        outbox = gw.outbox
        yield GaugeMetricFamily(
            "kyoso_gateway_outbox_depth", "Samples waiting.", value=outbox.depth()
        )
        yield CounterMetricFamily(
            "kyoso_gateway_outbox_dropped",
            "Samples dropped by a full outbox.",
            value=outbox.dropped,
        )
        yield CounterMetricFamily(
            "kyoso_gateway_outbox_rejected", "Samples a full outbox refused.", value=outbox.rejected
        )
        pub = gw.publisher.stats
        yield GaugeMetricFamily(
            "kyoso_gateway_broker_connected", "1 while connected.", value=int(pub.connected)
        )
        yield CounterMetricFamily(
            "kyoso_gateway_samples_published", "Samples sent.", value=pub.published_samples
        )
        yield CounterMetricFamily(
            "kyoso_gateway_samples_acked", "Samples the broker took.", value=pub.acked_samples
        )
        yield CounterMetricFamily(
            "kyoso_gateway_samples_refused",
            "Samples the broker refused.",
            value=pub.refused_samples,
        )
        yield CounterMetricFamily("kyoso_gateway_reconnects", "Reconnects.", value=pub.reconnects)
        if pub.last_publish_latency_s is not None:
            yield GaugeMetricFamily(
                "kyoso_gateway_publish_latency_seconds",
                "Publish to PUBACK of the last batch.",
                value=pub.last_publish_latency_s,
            )
        yield CounterMetricFamily(
            "kyoso_gateway_loop_errors",
            "Unexpected errors caught in the poll and emit loops.",
            value=gw.poll_failures + gw.emit_failures,
        )


class HealthServer:
    """Serves the endpoints for one gateway until stopped."""

    def __init__(self, gateway: Gateway, config: HttpConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.registry = CollectorRegistry()
        self.registry.register(GatewayCollector(gateway))
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen."""
        self._server = await asyncio.start_server(self._handle, self.config.host, self.config.port)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def health(self) -> dict[str, object]:
        """What /healthz reports."""
        gw = self.gateway
        return {
            "factory": gw.config.factory,
            "gateway": gw.config.gateway,
            "broker_connected": gw.publisher.stats.connected,
            "outbox_depth": gw.outbox.depth(),
            "machines": {
                machine: {"polls": s.stats.polls, "circuit": s.breaker.state.value}
                for machine, s in gw.sources.items()
            },
        }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = line[:_MAX_REQUEST_LINE].decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            status, ctype, body = self._route(method, path.split("?")[0])
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/healthz", "/readyz"):
            health = self.health()
            ready = path == "/healthz" or bool(health["broker_connected"])
            status = "200 OK" if ready else "503 Service Unavailable"
            return status, "application/json", json.dumps(health).encode() + b"\n"
        return "404 Not Found", "text/plain", b"not found: /healthz, /readyz, /metrics\n"
