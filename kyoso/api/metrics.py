"""Prometheus metrics of the capacity API, served at ``/metrics`` like the gateway's and the
ingest's: requests by route and status with their latency, the service's cache hits and
misses, capacity snapshots written and failed, and requests refused by the limits of
each key (429) with the expensive requests running.

Requests are timed by a plain ASGI middleware up to the start of the answer (an event
stream counts until its headers are sent), labelled with the route's path template, never
the raw path (``/v1/factories/{factory}/capacity``, not one series per factory). The other
figures are read from the service's own counters at scrape time, so no request pays for
them. Each app has its own registry: several apps in one process never share a series.
"""

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .keys import ScopeKind
from .limits import REASONS, Limiter

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics", "MetricsMiddleware"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_Asgi = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _Counted(Protocol):
    """What the metrics read at scrape time: the service's caches and the snapshots."""

    def cache_counts(self) -> dict[str, dict[str, int]]: ...


class _Snapshots(Protocol):
    written: int
    failed: int


class ApiMetrics(Collector):
    """The API's registry: request latencies observed by :class:`MetricsMiddleware`, cache,
    snapshot and limit counters collected from their owners."""

    def __init__(self, service: _Counted, limiter: Limiter) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "kyoso_api_request_seconds",
            "Time to the start of the answer, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.snapshots: _Snapshots | None = None
        """Set by whoever runs capacity snapshots (the API server with InfluxDB)."""
        self._service = service
        self._limiter = limiter
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """Cache, snapshot and limit counters, read now."""
        caches = CounterMetricFamily(
            "kyoso_api_cache_lookups",
            "Cache lookups by cache and outcome.",
            labels=["cache", "outcome"],
        )
        for cache, counts in self._service.cache_counts().items():
            for outcome, count in counts.items():
                caches.add_metric([cache, outcome], count)
        yield caches
        if self.snapshots is not None:
            for outcome in ("written", "failed"):
                family = CounterMetricFamily(
                    f"kyoso_api_snapshots_{outcome}",
                    f"Capacity snapshot points written / snapshots failed ({outcome}).",
                )
                family.add_metric([], getattr(self.snapshots, outcome))
                yield family
        yield from self._limits()

    def _limits(self) -> Iterator[Metric]:
        """429s by scope kind and reason, and expensive requests running (every scope kind
        and reason listed from the start, at 0)."""
        limiter = self._limiter
        refused = CounterMetricFamily(
            "kyoso_api_rate_limited",
            "Requests refused with 429 by the key's scope kind and the limit reached: rate "
            "(requests/s) or concurrency (expensive requests at once).",
            labels=["scope_kind", "reason"],
        )
        running = GaugeMetricFamily(
            "kyoso_api_expensive_running",
            "Expensive requests (KPIs, capacity, search) computing now, by scope kind.",
            labels=["scope_kind"],
        )
        peak = GaugeMetricFamily(
            "kyoso_api_expensive_running_peak",
            "The most expensive requests of one scope kind computed at once since start.",
            labels=["scope_kind"],
        )
        for kind in ScopeKind:
            for reason in REASONS:
                refused.add_metric([kind.value, reason], limiter.rejected[kind, reason])
            running.add_metric([kind.value], limiter.running[kind])
            peak.add_metric([kind.value], limiter.peak[kind])
        yield from (refused, running, peak)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request into :attr:`ApiMetrics.requests`."""

    def __init__(self, app: _Asgi, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: _Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", None) or "<unmatched>"
                self.metrics.requests.labels(
                    scope["method"], template, str(message["status"])
                ).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed)
