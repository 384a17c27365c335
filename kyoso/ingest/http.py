"""The ingest's ``/healthz``, ``/readyz`` and Prometheus ``/metrics`` (see :mod:`kyoso.ops`).

``/readyz`` is 200 while the ingest is connected to the broker and the store takes writes;
its body says why not, and lists the oldest gaps (samples of a gateway session no worker
has taken: lost, or not yet replayed). Metrics are read from the ingest's counters at
scrape time.
"""

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from kyoso.ops import HttpConfig, OpsServer

from .service import Ingest

__all__ = ["IngestCollector", "health_server"]


class IngestCollector(Collector):
    """Turns the ingest's counters into Prometheus metrics."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        ingest, stats = self.ingest, self.ingest.stats
        received = CounterMetricFamily(
            "kyoso_ingest_messages_received", "Messages received, by kind.", labels=["kind"]
        )
        for kind, count in sorted(stats.received.items()):
            received.add_metric([kind], count)
        letters = CounterMetricFamily(
            "kyoso_ingest_dead_letters", "Messages or samples dead-lettered.", labels=["reason"]
        )
        for reason, count in sorted(stats.dead_letters.items()):
            letters.add_metric([reason], count)
        errors = CounterMetricFamily(
            "kyoso_ingest_store_errors", "Failed store calls, by error.", labels=["error"]
        )
        for error, count in sorted(stats.store_errors.items()):
            errors.add_metric([error], count)
        yield from (received, letters, errors)
        yield CounterMetricFamily(
            "kyoso_ingest_samples_received", "Samples received.", value=stats.samples_received
        )
        yield CounterMetricFamily(
            "kyoso_ingest_samples_written", "Samples the store took.", value=stats.samples_written
        )
        yield CounterMetricFamily(
            "kyoso_ingest_store_retries", "Store calls retried.", value=stats.store_retries
        )
        yield CounterMetricFamily(
            "kyoso_ingest_messages_acked", "Messages acknowledged to the broker.", value=stats.acked
        )
        yield from stats.batch_seconds.collect()
        yield GaugeMetricFamily(
            "kyoso_ingest_pending_messages",
            "Messages received and not yet acknowledged.",
            value=ingest.pending_messages,
        )
        yield GaugeMetricFamily(
            "kyoso_ingest_lag_seconds",
            "Age of the oldest message not yet acknowledged (consumer lag).",
            value=ingest.lag_s(),
        )
        yield GaugeMetricFamily(
            "kyoso_ingest_store_failing_seconds",
            "For how long store writes have been failing; 0 when they succeed.",
            value=ingest.store_failing_s(),
        )
        yield CounterMetricFamily(
            "kyoso_ingest_broker_connects",
            "Connections made to the broker (more than one: reconnects).",
            value=ingest.consumer.connects,
        )
        yield GaugeMetricFamily(
            "kyoso_ingest_broker_connected",
            "1 while connected.",
            value=int(ingest.consumer.connected),
        )
        yield CounterMetricFamily(
            "kyoso_ingest_receipts_published",
            "Store receipts published to the gateways.",
            value=stats.receipts_published,
        )
        gaps = ingest.receipts.gaps()
        yield GaugeMetricFamily(
            "kyoso_ingest_gap_samples",
            "Samples missing between those taken of each gateway session (by any worker).",
            value=sum(gap.missing for gap in gaps),
        )
        yield GaugeMetricFamily(
            "kyoso_ingest_gap_oldest_seconds",
            "How long the oldest gap has been open; 0 without gaps.",
            value=max((gap.oldest_s for gap in gaps), default=0.0),
        )
        if ingest.sparkplug is not None:
            events = CounterMetricFamily(
                "kyoso_ingest_sparkplug_events",
                "Sparkplug host events: messages, births, deaths, stale_deaths (an old"
                " bdSeq), rebirth_requests, seq_gaps, ignored, late_metrics and more.",
                labels=["event"],
            )
            for event, count in sorted(ingest.sparkplug.stats.items()):
                events.add_metric([event], count)
            yield events


def health_server(ingest: Ingest, config: HttpConfig) -> OpsServer:
    """The ingest's endpoints."""
    registry = CollectorRegistry()
    registry.register(IngestCollector(ingest))

    def health() -> dict[str, object]:
        gaps = ingest.receipts.gaps()
        return {
            "broker_connected": ingest.consumer.connected,
            "store_failing_s": round(ingest.store_failing_s(), 3),
            "pending_messages": ingest.pending_messages,
            "lag_s": round(ingest.lag_s(), 3),
            "samples_written": ingest.stats.samples_written,
            "dead_letters": dict(ingest.stats.dead_letters),
            "gap_samples": sum(gap.missing for gap in gaps),
            "gaps": [  # the oldest ten
                {
                    "factory": gap.factory,
                    "gateway": gap.gateway,
                    "session": gap.session,
                    "missing": gap.missing,
                    "oldest_s": round(gap.oldest_s, 1),
                }
                for gap in gaps[:10]
            ],
        }

    return OpsServer(config, registry, health, lambda: ingest.ready)
