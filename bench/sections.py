"""The sections of the benchmark suite: which script each runs, at which sizes, and the
figures, baselines and targets it reads from the script's ``--json`` output
(``python -m bench``, bench/__main__.py)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from report import (
    MIB,
    MILLISECONDS,
    PERCENT,
    POINTS,
    RATE,
    REQUESTS,
    SECONDS,
    Data,
    Figure,
    at,
    below,
    ratio_at_least,
)


@dataclass(frozen=True)
class Sizes:
    """What each benchmark is asked to do: the full sizes, or the quick ones for CI."""

    ingest: tuple[str, ...]
    e2e: tuple[str, ...]
    api: tuple[str, ...]
    api_rate: float
    gateway_machines: tuple[int, ...]
    gateway: tuple[str, ...]
    influx: tuple[str, ...]


FULL = Sizes(
    ingest=("--gateways", "10", "--machines", "20", "--intervals", "500"),
    e2e=("--flips", "20", "--before-flips", "5"),
    api=("--factories", "50", "--machines", "20", "--rate", "200", "--seconds", "20"),
    api_rate=200,
    gateway_machines=(50, 200, 400),
    gateway=("--seconds", "30", "--warmup", "10", "--poller-seconds", "15"),
    influx=("--points", "100000", "--batch", "5000"),
)
QUICK = Sizes(
    ingest=("--gateways", "2", "--machines", "5", "--intervals", "20"),
    e2e=("--flips", "2", "--before-flips", "1", "--raw-messages", "20"),
    api=(
        *("--factories", "2", "--machines", "5", "--days", "0.5", "--rate", "20"),
        *("--seconds", "2", "--closed-seconds", "1"),
    ),
    api_rate=20,
    gateway_machines=(5,),
    gateway=("--seconds", "2", "--warmup", "2", "--poller-seconds", "2"),
    influx=("--points", "2000", "--batch", "500", "--machines", "20"),
)


@dataclass(frozen=True)
class Bench:
    """One benchmark script of ``bench/`` and the section it fills."""

    key: str
    title: str
    script: str
    arguments: Callable[[Sizes], tuple[str, ...]]
    figures: Callable[[Sizes], list[Figure]]
    counts: Callable[[int, Data], list[str]]
    """Lines saying what stands behind a round's figures (counts, losses)."""
    summary: Callable[[Data], str]
    """What was measured, from the first round's figures."""


# --- the figures ------------------------------------------------------------------------------


def _ingest_figures(_: Sizes) -> list[Figure]:
    one, two = at("ingest", "1", "samples_per_s"), at("ingest", "2", "samples_per_s")
    raw1, raw2 = at("raw_influx", "1", "samples_per_s"), at("raw_influx", "2", "samples_per_s")
    red = at("nodered", "samples_per_s")
    raw_name = "raw InfluxDB, 1 connection"
    return [
        Figure("ingest, 1 process", RATE, one, raw_name, raw1, ratio_at_least(0.6, "raw InfluxDB")),
        Figure(
            "ingest, 1 process",
            RATE,
            one,
            "Node-RED, plain flow",
            red,
            ratio_at_least(1.5, "Node-RED"),
        ),
        Figure("ingest, 2 processes", RATE, two, "raw InfluxDB, 2 connections", raw2),
        Figure(
            "ingest, 1 process", RATE, one, "raw broker, QoS 1", at("raw_broker", "samples_per_s")
        ),
        Figure("Node-RED, plain flow", RATE, red, raw_name, raw1),
        Figure(
            "ingest, 1 process: CPU",
            PERCENT,
            at("ingest", "1", "cpu_pct"),
            "Node-RED",
            at("nodered", "cpu_pct"),
        ),
        Figure(
            "ingest, 1 process: RSS",
            MIB,
            at("ingest", "1", "rss_mib"),
            "Node-RED",
            at("nodered", "rss_mib"),
        ),
    ]


def _ingest_counts(number: int, data: Data) -> list[str]:
    total = data.get("samples")
    parts = []
    for workers, run in sorted(data.get("ingest", {}).items()):
        part = (
            f"ingest x{workers}: received {run['received']:.0f}, written {run['written']:.0f}, "
            f"stored {run['stored']:.0f} of {total}, {run['dead_letters']:.0f} dead letters"
        )
        if run["missing"]:
            part += "; missing (gateway, seq): " + _ranges(run["missing"])
        parts.append(part)
    if red := data.get("nodered"):
        part = (
            f"Node-RED: written {red['written']:.0f}, failed {red['failed']:.0f}, stored "
            f"{red['stored']:.0f} of {total}, {red['missing_count']:.0f} missing"
        )
        if red["missing"]:
            part += " (gateway, seq): " + _ranges(red["missing"])
        parts.append(part)
    return [f"round {number}: " + "; ".join(parts)]


def _ranges(missing: list[list[Any]], limit: int = 10) -> str:
    shown = [f"{key} {lo}" + (f"-{hi}" if hi != lo else "") for key, lo, hi in missing]
    more = f", … ({len(shown)} ranges)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def _ingest_summary(data: Data) -> str:
    return (
        f"{data['samples']:,} samples in {data['messages']:,} sample batches of "
        f"{data['machines']} from {data['gateways']} gateways, queued in the broker for a "
        "persistent session before the consumer starts; timed from the first sample "
        "received to the last written. Raw InfluxDB: the same samples as line protocol, "
        "built beforehand, 5000 lines a POST. Node-RED: bench/nodered/flow.json."
    )


def _e2e_figures(_: Sizes) -> list[Figure]:
    def floor(q: str, poll_share: float) -> Callable[[Data], float | None]:
        def get(data: Data) -> float | None:
            broker, poll = at("raw_broker_s", q)(data), at("poll_s")(data)
            return None if broker is None or poll is None else poll * poll_share + broker

        return get

    p99_floor = "poll period + broker p99"
    under_2s = below(2.0, SECONDS)
    return [
        Figure(
            "register → API, p99 (min_sample_s 1.0)",
            SECONDS,
            at("after", "register_to_api_s", "p99"),
            p99_floor,
            floor("p99", 1.0),
            under_2s,
        ),
        Figure(
            "register → API, p50 (min_sample_s 1.0)",
            SECONDS,
            at("after", "register_to_api_s", "p50"),
            "half the poll period + broker p50",
            floor("p50", 0.5),
        ),
        Figure(
            "register → store, p99 (min_sample_s 1.0)",
            SECONDS,
            at("after", "register_to_store_s", "p99"),
            p99_floor,
            floor("p99", 1.0),
        ),
        Figure(
            "register → API, p99 (min_sample_s null)",
            SECONDS,
            at("before", "register_to_api_s", "p99"),
            p99_floor,
            floor("p99", 1.0),
        ),
    ]


def _e2e_counts(number: int, data: Data) -> list[str]:
    runs = [f"{name}: {data[name]['flips']} flips" for name in ("before", "after") if name in data]
    return [f"round {number}: " + ", ".join(runs)]


def _e2e_summary(data: Data) -> str:
    return (
        f"A simulated Modbus machine's state register flipped at random moments; a gateway "
        f"polling every {data['poll_s']:g} s (samples every {data['publish_s']:g} s, and at "
        f"the poll that sees a change with min_sample_s 1.0), kyoso ingest into SQLite, "
        f"kyoso api (defaults: view_ttl_s {data['view_ttl_s']:g}, cache_ttl_s "
        f"{data['cache_ttl_s']:g}). Floor: the poll period (the "
        "soonest the gateway can see a change) plus the broker's own QoS 1 latency."
    )


def _api_figures(sizes: Sizes) -> list[Figure]:
    rate = f"{sizes.api_rate:g}/s"
    return [
        Figure(
            f"open loop {rate}, a core busy: p99",
            MILLISECONDS,
            at("phases", "open_hog", "p99_s"),
            "trivial page, a core busy, same schedule",
            at("phases", "open_hog_trivial", "p99_s"),
            below(0.050, MILLISECONDS),
        ),
        Figure(
            f"open loop {rate}, quiet: p99",
            MILLISECONDS,
            at("phases", "open", "p99_s"),
            "trivial page, same schedule",
            at("phases", "open_trivial", "p99_s"),
        ),
        Figure(
            f"open loop {rate}, quiet: p50",
            MILLISECONDS,
            at("phases", "open", "p50_s"),
            "trivial page, same schedule",
            at("phases", "open_trivial", "p50_s"),
        ),
        Figure(
            "restart, profiles kept: first answer",
            MILLISECONDS,
            at("phases", "restart", "p50_s"),
            "first start, nothing learnt: first answer",
            at("phases", "cold", "p50_s"),
            below(2.0, MILLISECONDS),
        ),
        Figure(
            "closed loop x8: regional capacity",
            REQUESTS,
            at("phases", "closed", "requests_per_s"),
            "trivial page, closed loop x8",
            at("phases", "closed_trivial", "requests_per_s"),
        ),
        Figure(
            "closed loop x8: with If-None-Match",
            REQUESTS,
            at("phases", "closed_etag", "requests_per_s"),
            "without",
            at("phases", "closed", "requests_per_s"),
        ),
    ]


def _api_counts(number: int, data: Data) -> list[str]:
    parts = []
    for phase in data.get("phases", {}).values():
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(phase["answers"].items()))
        parts.append(f"{phase['name']} ({answers})")
    return [f"round {number}: answers by status: " + "; ".join(parts)]


_STORES: Final = {"sqlite": "SQLite", "influxdb": "InfluxDB, a fresh influxd on loopback"}


def _api_summary(data: Data) -> str:
    return (
        f"GET /v1/capacity?horizon_h=24 over {data['factories']} factories of "
        f"{data['machines']} machines in all ({data['samples']:,} samples in "
        f"{_STORES[data['store']]}), one "
        "kyoso api process, loopback HTTP/1.1 keep-alive. Open loop: each request sent at "
        "its scheduled time, latency counted from then (no coordinated omission). A core "
        'busy: `python -c "while True: pass"` running beside it.'
    )


def _gateway_figures(sizes: Sizes) -> list[Figure]:
    figures = []
    for machines in sizes.gateway_machines:
        index = str(sizes.gateway_machines.index(machines))
        figures += [
            Figure(
                f"{machines} machines at 1 s: CPU",
                PERCENT,
                at("sizes", index, "cpu_pct"),
                "bare poller, same machines",
                at("sizes", index, "bare_poller", "cpu_pct"),
                below(10.0, PERCENT) if machines == 400 else None,
            ),
            Figure(
                f"{machines} machines at 1 s: RSS",
                MIB,
                at("sizes", index, "rss_mib"),
                "bare poller, same machines",
                at("sizes", index, "bare_poller", "rss_mib"),
                below(80.0, MIB) if machines == 400 else None,
            ),
        ]
    return figures


def _gateway_counts(number: int, data: Data) -> list[str]:
    parts = []
    for size in data.get("sizes", []):
        bare = size.get("bare_poller") or {}
        parts.append(
            f"{size['machines']} machines: {size['requests_per_cycle']} Modbus requests a "
            f"cycle (vs {size['fields']} one per field), {size['polls']:.0f} polls, "
            f"{size['samples_published']:.0f} samples published; bare poller "
            f"{bare.get('answers', 0)} answers, {bare.get('failures', 0)} failures, "
            f"{bare.get('late_cycles', 0)} cycles over 1 s"
        )
    return [f"round {number}: " + "; ".join(parts)]


def _gateway_summary(_: Data) -> str:
    return (
        "kyoso gateway polling simulated Modbus TCP machines (each on its own port) every "
        "1 s, a sample every 10 s and at each state change, into a Mosquitto; CPU and RSS "
        "from /proc after a warm-up. Bare poller: pymodbus's client making the same merged "
        "requests each second and nothing else. The raw limit: one core, 100 %."
    )


def _influx_figures(_: Sizes) -> list[Figure]:
    raw = at("runs", "raw", "points_per_s")
    name = "raw POST, 1 connection"
    return [
        Figure(
            "InfluxWriter (on the fly)",
            POINTS,
            at("runs", "writer", "points_per_s"),
            name,
            raw,
        ),
        Figure(
            "raw POST, gzip beforehand", POINTS, at("runs", "raw gzip", "points_per_s"), name, raw
        ),
        Figure("line building (sample_point)", POINTS, at("line_building_per_s"), name, raw),
    ]


def _influx_counts(number: int, data: Data) -> list[str]:
    return [f"round {number}: points stored {data['stored']} of {data['expected']}"]


def _influx_summary(data: Data) -> str:
    return (
        f"{data['points']:,} sample points ({data['bytes_per_line']:.0f} bytes of line "
        f"protocol each) for {data['machines']} machines into a fresh influxd, "
        f"{data['batch']} lines a request."
    )


BENCHES = [
    Bench(
        "ingest",
        "Ingest throughput",
        "ingest.py",
        lambda s: (*s.ingest, "--workers", "1", "2", "--nodered"),
        _ingest_figures,
        _ingest_counts,
        _ingest_summary,
    ),
    Bench(
        "e2e",
        "End to end: register change to the API",
        "e2e.py",
        lambda s: s.e2e,
        _e2e_figures,
        _e2e_counts,
        _e2e_summary,
    ),
    Bench(
        "api",
        "Capacity API under load",
        "api.py",
        lambda s: (*s.api, "--hog"),
        _api_figures,
        _api_counts,
        _api_summary,
    ),
    Bench(
        "api-influx",
        "Capacity API under load, InfluxDB store",
        "api.py",
        lambda s: (*s.api, "--hog", "--store", "influxdb"),
        _api_figures,
        _api_counts,
        _api_summary,
    ),
    Bench(
        "gateway",
        "Gateway footprint",
        "gateway.py",
        lambda s: ("--machines", *map(str, s.gateway_machines), *s.gateway),
        _gateway_figures,
        _gateway_counts,
        _gateway_summary,
    ),
    Bench(
        "influx",
        "InfluxDB writer",
        "influx_raw.py",
        lambda s: s.influx,
        _influx_figures,
        _influx_counts,
        _influx_summary,
    ),
]
