"""The operations endpoint of a Kyoso service: ``/healthz``, ``/readyz`` and ``/metrics``.

Each long-running service (gateway, ingest) serves these three GETs on a local port for its
supervisor and for Prometheus. Metrics come from a :class:`CollectorRegistry` the service
fills with collectors reading its own counters at scrape time, so the hot path never pays
for them. The server is a few lines on asyncio streams: three GETs and nothing else.
"""

import asyncio
import json
from collections.abc import Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from pydantic import Field

from kyoso.validation import ConfigModel

__all__ = ["HttpConfig", "OpsServer"]

_MAX_REQUEST_LINE = 4096


class HttpConfig(ConfigModel):
    """The local endpoint with /healthz, /readyz and Prometheus /metrics."""

    host: str = Field(default="127.0.0.1", description="Bind address.")
    port: int = Field(default=9105, ge=0, le=65535, description="Port; 0 picks a free one.")


class OpsServer:
    """Serves the three endpoints until stopped.

    ``/healthz`` answers 200 while the process runs, ``/readyz`` 200 only while ``ready()``
    is true (503 otherwise); both carry ``health()`` as JSON.
    """

    def __init__(
        self,
        config: HttpConfig,
        registry: CollectorRegistry,
        health: Callable[[], Mapping[str, object]],
        ready: Callable[[], bool],
    ) -> None:
        self.config = config
        self.registry = registry
        self._health = health
        self._ready = ready
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
            ready = path == "/healthz" or self._ready()
            status = "200 OK" if ready else "503 Service Unavailable"
            return status, "application/json", json.dumps(self._health()).encode() + b"\n"
        return "404 Not Found", "text/plain", b"not found: /healthz, /readyz, /metrics\n"
