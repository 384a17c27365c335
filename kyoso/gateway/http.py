"""The gateway's ``/healthz``, ``/readyz`` and Prometheus ``/metrics`` (see :mod:`kyoso.ops`).

Metrics are read from the gateway's own counters at scrape time, so polling and publishing
never pay for them.
"""

from collections.abc import Iterator
from functools import partial

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from kyoso.ops import HttpConfig, OpsServer

from .agent import Gateway
from .breaker import CircuitState
from .modbus import ModbusSource
from .source import DeviceSource
from .sparkplug import SparkplugNode


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
            "kyoso_gateway_poll_errors",
            "Failed requests and refused polls by reason, every device source.",
            labels=["machine", "reason"],
        )
        circuit = GaugeMetricFamily(
            "kyoso_gateway_circuit_open",
            "1 while the device's circuit breaker refuses polls (open or half-open).",
            labels=["machine"],
        )
        latency = GaugeMetricFamily(
            "kyoso_gateway_poll_seconds", "Duration of the last poll.", labels=["machine"]
        )
        for machine, count in gw.polls.items():
            polls.add_metric([machine], count)
        for machine, seconds in gw.poll_seconds.items():
            latency.add_metric([machine], seconds)
        for machine, source in gw.sources.items():
            if isinstance(source, ModbusSource):
                requests.add_metric([machine], source.stats.requests)
            if isinstance(source, DeviceSource):
                for reason, count in source.stats.errors.items():
                    errors.add_metric([machine, reason], count)
                closed = source.breaker.state is CircuitState.CLOSED
                circuit.add_metric([machine], 0 if closed else 1)
        implausible = CounterMetricFamily(
            "kyoso_gateway_counter_implausible",
            "Counter readings refused as more parts than the machine can make (not counted).",
            labels=["machine", "counter"],
        )
        for machine, tracker in gw.trackers.items():
            for counter, count in tracker.implausible.items():
                implausible.add_metric([machine, counter], count)
        yield from (polls, requests, errors, circuit, latency, implausible)
        outbox = gw.outbox
        yield GaugeMetricFamily(
            "kyoso_gateway_outbox_depth", "Samples waiting.", value=outbox.depth()
        )
        yield GaugeMetricFamily(
            "kyoso_gateway_outbox_unconfirmed",
            "Samples the broker took, awaiting a store receipt.",
            value=outbox.unconfirmed(),
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
        yield CounterMetricFamily(
            "kyoso_gateway_samples_resent",
            "Samples sent again: no store receipt within confirm_timeout_s.",
            value=pub.resent_samples,
        )
        receipts = gw.publisher.receipts
        yield CounterMetricFamily(
            "kyoso_gateway_receipts", "Store receipts applied.", value=receipts.received
        )
        yield CounterMetricFamily(
            "kyoso_gateway_receipts_invalid",
            "Store receipts refused: invalid, or not this gateway's.",
            value=receipts.invalid,
        )
        yield CounterMetricFamily(
            "kyoso_gateway_samples_confirmed",
            "Samples a store receipt confirmed (they left the outbox).",
            value=receipts.confirmed_samples,
        )
        yield CounterMetricFamily("kyoso_gateway_reconnects", "Reconnects.", value=pub.reconnects)
        yield CounterMetricFamily(
            "kyoso_gateway_silent_drops",
            "Connections dropped for a PUBACK owed 1.5 keepalives (a path gone silent).",
            value=pub.silent_drops,
        )
        if pub.last_publish_latency_s is not None:
            yield GaugeMetricFamily(
                "kyoso_gateway_publish_latency_seconds",
                "Publish to PUBACK of the last batch.",
                value=pub.last_publish_latency_s,
            )
        if gw.sparkplug is not None:
            yield from _sparkplug(gw.sparkplug)
        yield CounterMetricFamily(
            "kyoso_gateway_loop_errors",
            "Unexpected errors caught in the poll and emit loops.",
            value=gw.poll_failures + gw.emit_failures,
        )


def _sparkplug(node: SparkplugNode) -> Iterator[Metric]:
    """The Sparkplug B edge node's counters, when the gateway has one."""
    stats = node.stats
    events = CounterMetricFamily(
        "kyoso_gateway_sparkplug_events",
        "Sparkplug B: connects, births, rebirth requests, data messages (historical apart).",
        labels=["event"],
    )
    for event, count in [
        ("connects", stats.connects),
        ("births", stats.births),
        ("rebirth_requests", stats.rebirth_requests),
        ("data_messages", stats.data_messages),
        ("historical_messages", stats.historical_messages),
    ]:
        events.add_metric([event], count)
    yield events
    yield GaugeMetricFamily(
        "kyoso_gateway_sparkplug_host_online",
        "1 while the primary host's STATE says online (always 1 without a primary host).",
        value=int(stats.host_online),
    )
    yield GaugeMetricFamily(
        "kyoso_gateway_sparkplug_outbox_depth",
        "Samples waiting for their DDATA.",
        value=node.outbox.depth(),
    )


def health_server(gateway: Gateway, config: HttpConfig) -> OpsServer:
    """The gateway's endpoints: ready while connected to the regional broker."""
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway))
    return OpsServer(
        config, registry, partial(_health, gateway), lambda: gateway.publisher.stats.connected
    )


def _health(gw: Gateway) -> dict[str, object]:
    return {
        "factory": gw.config.factory,
        "gateway": gw.config.gateway,
        "broker_connected": gw.publisher.stats.connected,
        "outbox_depth": gw.outbox.depth(),
        "outbox_unconfirmed": gw.outbox.unconfirmed(),
        "machines": {
            machine: {
                "polls": gw.polls[machine],
                **({"circuit": s.breaker.state.value} if isinstance(s, DeviceSource) else {}),
            }
            for machine, s in gw.sources.items()
        },
    }
