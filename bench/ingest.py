"""Ingest throughput: samples/s from the broker into InfluxDB, beside the raw limits.

Starts its own influxd (Debian's 1.6.7) and Mosquitto on free loopback ports and builds
messages shaped as the gateway sends them live: per gateway (one factory each), one
``SampleBatch`` per interval with a sample of each of its machines (21 fields a sample:
two states, two counters with totals, two signals, an alarm). Then, in one run:

1. **raw InfluxDB**: the same samples as line protocol (``sample_point``), built beforehand,
   POSTed in batches of 5000 lines over one kept-alive connection, uncompressed, into each
   factory's database: the most this InfluxDB takes here; then the same over two
   connections at once (the baseline of two ingest processes);
2. **raw broker**: every message published at QoS 1 by one client and received at QoS 1 by
   one subscriber (paho, acknowledging at once, doing nothing with them): the most the
   broker and a paho client move here;
3. **ingest**: ``kyoso ingest`` (a separate process, InfluxDB store, default settings) finds
   all the messages queued in its persistent session when it starts (published while it
   was stopped), and is timed from its first received sample to its last written one, read
   from its ``/metrics``. Every point is counted in InfluxDB afterwards. Then the same with
   two ingest processes in one shared-subscription group (the scale-out of docs/ingest.md),
   the broker splitting the samples between them. Each run prints the samples the ingest
   received and wrote (its ``/metrics``) beside those stored, and on a shortfall the
   missing ``(gateway, seq)`` ranges;
4. **Node-RED** (``--nodered``): the plain flow of ``bench/nodered/`` (installed from npm
   into ``bench/.cache/``, see ``bench/nodered.py``) over the same samples, found queued
   in its persistent session the same way, timed from its first received batch to its last
   written one, its points counted in InfluxDB.

``--json PATH`` also writes the figures there (for ``python -m bench``).

    .venv/bin/python bench/ingest.py --gateways 10 --machines 20 --intervals 500 --workers 1 2
"""

import argparse
import functools
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import nodered
import paho.mqtt.client as mqtt
from influx_raw import bench_samples, raw_write_parallel, request, start_influxd
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from procstat import cpu_seconds, free_port, rss_mib, start_mosquitto

from kyoso.contract import SampleBatch, encode, samples_topic
from kyoso.influx.lineprotocol import sample_point

Message = tuple[str, bytes, int]
"""Topic, payload, samples in it."""
Missing = tuple[str, int, int]
"""A run of samples not stored: ``factory/gateway``, first and last seq."""
GATEWAY = "gw-01"
STALL_S = 30.0
"""A run whose counters have not moved for this long is over: its shortfall is reported."""


def _workload(
    gateways: int, machines: int, intervals: int
) -> tuple[list[Message], dict[str, list[str]]]:
    """Gateway-shaped messages, interleaved in time across gateways, and the line protocol
    of the same samples by factory."""
    by_gateway: list[list[Message]] = []
    lines: dict[str, list[str]] = {}
    for g in range(gateways):
        factory, session = f"f{g:02d}", str(uuid.uuid4())
        # Recent enough for the ingest's plausibility check (90 days by default).
        begin = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=intervals + 60)
        samples = bench_samples(machines * intervals, machines, 0, begin)
        lines[factory] = [sample_point(factory, GATEWAY, session, s) for s in samples]
        topic = samples_topic(factory, GATEWAY)
        messages = []
        for i in range(intervals):
            chunk = samples[i * machines : (i + 1) * machines]
            batch = SampleBatch(factory=factory, gateway=GATEWAY, session=session, samples=chunk)
            messages.append((topic, encode(batch), len(chunk)))
        by_gateway.append(messages)
    interleaved = [m for step in zip(*by_gateway, strict=True) for m in step]
    return interleaved, lines


def _client(port: int, client_id: str) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _publish(port: int, messages: list[Message]) -> float:
    client = _client(port, f"bench-pub-{uuid.uuid4().hex[:6]}")
    started = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for topic, payload, _ in messages]
    for info in infos:
        info.wait_for_publish(120)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def _raw_broker(port: int, messages: list[Message]) -> float:
    received = threading.Event()
    count = [0]

    def on_message(*_: object) -> None:
        count[0] += 1
        if count[0] == len(messages):
            received.set()

    subscribed = threading.Event()
    subscriber = _client(port, f"bench-sub-{uuid.uuid4().hex[:6]}")
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.subscribe("kyoso/v1/+/+/samples", qos=1)
    subscribed.wait(10)
    started = time.perf_counter()
    _publish(port, messages)
    if not received.wait(300):
        raise RuntimeError(f"the subscriber got {count[0]} of {len(messages)} messages")
    elapsed = time.perf_counter() - started
    subscriber.disconnect()
    subscriber.loop_stop()
    return elapsed


def _metrics(port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    values = {}
    for line in text.splitlines():
        if line.startswith("kyoso_ingest_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def _seqs(influx_port: int, database: str, where: str = "") -> set[int]:
    """The ``seq`` of every sample point stored in ``database``."""
    statement = f"SELECT seq FROM samples {where}".strip()  # noqa: S608 - the bench's own ids
    query = urlencode({"db": database, "q": statement})
    _, body = request(influx_port, "GET", f"/query?{query}")
    result = json.loads(body)["results"][0]
    if result.get("partial"):
        raise RuntimeError(f"InfluxDB answered part of the seqs of {database}")
    return {int(v[1]) for series in result.get("series", []) for v in series["values"]}


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted numbers as inclusive ranges of consecutive ones."""
    ranges: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    return ranges


def missing_ranges(
    influx_port: int, databases: dict[str, str], per_factory: int, *, tag: bool = False
) -> list[Missing]:
    """``(factory/gateway, first, last)`` of every run of seqs not stored: each factory's
    samples are seqs 0 to ``per_factory - 1`` of its one gateway. ``databases`` maps each
    factory to its database; ``tag``: the factory is a tag there (Node-RED), not the
    database."""
    found = []
    for factory, database in databases.items():
        where = f"WHERE \"factory\" = '{factory}'" if tag else ""
        stored = _seqs(influx_port, database, where)
        gone = [seq for seq in range(per_factory) if seq not in stored]
        found += [(f"{factory}/{GATEWAY}", lo, hi) for lo, hi in _ranges(gone)]
    return found


def _shown(ranges: list[Missing], limit: int = 20) -> str:
    shown = ", ".join(f"{key} {lo}" + (f"-{hi}" if hi != lo else "") for key, lo, hi in ranges)
    parts = shown.split(", ")
    return ", ".join(parts[:limit]) + (f", ... ({len(parts)} ranges)" if len(parts) > limit else "")


def _ingest(
    workdir: Path,
    broker_port: int,
    influx_port: int,
    messages: list[Message],
    factories: list[str],
    *,
    workers: int,
) -> dict[str, float]:
    """Run ``workers`` ingest processes (one shared-subscription group when more than one)
    over the messages queued for their sessions; time, CPU and memory of all of them, and
    the samples they received, wrote and stored. A run that stops moving for ``STALL_S``
    ends there, with its shortfall."""
    ports = [free_port() for _ in range(workers)]

    def environment(worker: int) -> dict[str, str]:
        env = {
            **os.environ,
            "KYOSO_INGEST_STORE": "influxdb",
            "KYOSO_INGEST_INFLUX__URL": f"http://127.0.0.1:{influx_port}",
            "KYOSO_INGEST_INFLUX__DATABASE_PREFIX": f"ingest{workers}_",
            "KYOSO_INGEST_MQTT__PORT": str(broker_port),
            "KYOSO_INGEST_MQTT__HOST": "127.0.0.1",
            "KYOSO_INGEST_MQTT__CLIENT_ID": f"bench-ingest{workers}-{worker}",
            "KYOSO_INGEST_MQTT__RECEIVE_MAXIMUM": "65535",
            "KYOSO_INGEST_HTTP__PORT": str(ports[worker]),
            "KYOSO_INGEST_DEAD_LETTER_PATH": str(workdir / f"dead-letters-{worker}.sqlite3"),
        }
        if workers > 1:
            env["KYOSO_INGEST_MQTT__SHARED_GROUP"] = "bench"
        return env

    log = workdir / "ingest.log"
    command = [
        sys.executable,
        "-m",
        "kyoso.cli",
        "--log-level",
        os.environ.get("BENCH_LOG", "WARNING"),
        "ingest",
    ]

    def start() -> list[subprocess.Popen[bytes]]:
        with log.open("ab") as out:
            processes = [
                subprocess.Popen(command, env=environment(w), stdout=out, stderr=out)
                for w in range(workers)
            ]
        deadline = time.monotonic() + 30
        for port in ports:
            while time.monotonic() < deadline:
                try:
                    if _metrics(port).get("kyoso_ingest_broker_connected") == 1:
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            else:
                raise RuntimeError(f"the ingest did not connect: {log.read_text()[-2000:]}")
        return processes

    def stop(processes: list[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(60)

    def total_of(name: str) -> float:
        return sum(_metrics(port).get(name, 0.0) for port in ports)

    stop(start())  # makes the persistent sessions, then leaves
    _publish(broker_port, messages)  # queued by the broker for the ingest's sessions
    total = sum(n for _, _, n in messages)
    processes = start()
    try:
        result = _until_written(total_of, processes, total, log)
        result["rss"] = sum(rss_mib(p.pid) for p in processes)
        result["dead"] = total_of("kyoso_ingest_dead_letters_total")
    finally:
        stop(processes)
    databases = {f: f"ingest{workers}_{f}" for f in factories}
    result["stored"] = sum(nodered.count_points(influx_port, d) for d in databases.values())
    return result


def _until_written(
    total_of: Callable[[str], float],
    processes: list[subprocess.Popen[bytes]],
    total: int,
    log: Path,
) -> dict[str, float]:
    """Time and CPU from the first sample received to the last written (all ``total``, or
    as many as were when nothing moved for ``STALL_S``), from the ingest's /metrics."""
    began = None
    cpu0 = 0.0
    deadline = time.monotonic() + 600
    progress, moved = (0.0, 0.0), time.monotonic()
    while True:
        received = total_of("kyoso_ingest_samples_received_total")
        written = total_of("kyoso_ingest_samples_written_total")
        now = time.perf_counter()
        if began is None and received > 0:
            began, cpu0 = now, sum(cpu_seconds(p.pid) for p in processes)
        if written >= total:
            break
        if (received, written) != progress:
            progress, moved = (received, written), time.monotonic()
        elif time.monotonic() - moved > STALL_S or time.monotonic() > deadline:
            print(
                f"the ingest stopped at {written:.0f} of {total} written: "
                f"{log.read_text()[-2000:]}",
                file=sys.stderr,
            )
            break
        time.sleep(0.02)  # each scrape costs the ingest CPU: not too often
    if began is None:
        raise RuntimeError(f"the ingest received nothing: {log.read_text()[-2000:]}")
    return {
        "elapsed": now - began,
        "cpu": sum(cpu_seconds(p.pid) for p in processes) - cpu0,
        "received": received,
        "written": written,
    }


def _raw_influx(
    influx_port: int, influxd_pid: int, lines: dict[str, list[str]], connections: int
) -> dict[str, float]:
    """The same samples as bulk line protocol over ``connections`` connections, each
    factory into a fresh database of its own."""
    for factory in lines:
        request(
            influx_port,
            "POST",
            "/query",
            urlencode({"q": f'CREATE DATABASE "raw{connections}_{factory}"'}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
    jobs = [(f"raw{connections}_{f}", factory_lines) for f, factory_lines in lines.items()]
    total = sum(len(factory_lines) for factory_lines in lines.values())
    cpu0 = cpu_seconds(influxd_pid)
    elapsed = raw_write_parallel(influx_port, jobs, 5000, connections)
    cpu = cpu_seconds(influxd_pid) - cpu0
    label = "raw InfluxDB" if connections == 1 else f"raw Influx x{connections}"
    print(
        f"{label:<13}: {total / elapsed:>9,.0f} samples/s (bulk line protocol, "
        f"{connections} connection{'s' if connections > 1 else ''}, influxd "
        f"{cpu / elapsed * 100:.0f} % of a core)"
    )
    return {"samples_per_s": total / elapsed, "influxd_cpu_pct": cpu / elapsed * 100}


def _report_ingest(
    workers: int, result: dict[str, float], raw: float, total: int, missing: list[Missing]
) -> dict[str, Any]:
    rate = total / result["elapsed"]
    label = f"ingest x{workers}" if workers > 1 else "ingest"
    print(
        f"{label:<13}: {rate:>9,.0f} samples/s broker -> InfluxDB "
        f"({rate / raw * 100:.0f} % of raw InfluxDB over {workers} connection"
        f"{'s' if workers > 1 else ''}; {workers} process"
        f"{'es' if workers > 1 else ''} {result['cpu'] / result['elapsed'] * 100:.0f} % "
        f"of a core, RSS {result['rss']:.0f} MiB; received {result['received']:.0f}, "
        f"written {result['written']:.0f}, stored {result['stored']:.0f} of "
        f"{total}, {result['dead']:.0f} dead letters)"
    )
    if missing:
        print(f"{'':<13}  missing (gateway, seq): {_shown(missing)}")
    return {
        "samples_per_s": rate,
        "cpu_pct": result["cpu"] / result["elapsed"] * 100,
        "rss_mib": result["rss"],
        "received": result["received"],
        "written": result["written"],
        "stored": result["stored"],
        "dead_letters": result["dead"],
        "missing": missing,
    }


def _report_nodered(
    result: dict[str, float],
    raw: float,
    total: int,
    missing: list[Missing],
    versions: dict[str, str],
) -> dict[str, Any]:
    rate = total / result["elapsed"]
    print(
        f"{'Node-RED':<13}: {rate:>9,.0f} samples/s broker -> InfluxDB "
        f"({rate / raw * 100:.0f} % of raw InfluxDB; node-red "
        f"{versions['node-red']} on Node.js {versions['node']}, "
        f"{result['cpu'] / result['elapsed'] * 100:.0f} % of a core, RSS "
        f"{result['rss']:.0f} MiB; written {result['written']:.0f}, failed "
        f"{result['failed']:.0f}, stored {result['stored']:.0f} of {total}, "
        f"{result['missing']:.0f} missing)"
    )
    if missing:
        print(f"{'':<13}  missing (gateway, seq): {_shown(missing)}")
    return {
        "samples_per_s": rate,
        "cpu_pct": result["cpu"] / result["elapsed"] * 100,
        "rss_mib": result["rss"],
        "written": result["written"],
        "failed": result["failed"],
        "stored": result["stored"],
        "missing_count": result["missing"],
        "missing": missing,
        "versions": versions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateways", type=int, default=10, help="gateways (one factory each)")
    parser.add_argument("--machines", type=int, default=20, help="machines per gateway")
    parser.add_argument("--intervals", type=int, default=500, help="messages per gateway")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="ingest runs: processes each (more than one share a subscription group)",
    )
    parser.add_argument(
        "--nodered", action="store_true", help="also the plain Node-RED flow (npm install)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    installed = nodered.install() if args.nodered else None
    workdir = Path(tempfile.mkdtemp(prefix="kyoso-bench-ingest-"))
    influxd, influx_port = start_influxd(workdir)
    broker, broker_port = start_mosquitto(str(workdir))
    try:
        time.sleep(0.5)
        messages, lines = _workload(args.gateways, args.machines, args.intervals)
        total = sum(n for _, _, n in messages)
        per_factory = args.machines * args.intervals
        size = sum(len(p) for _, p, _ in messages)
        print(
            f"{len(messages)} messages of {args.machines} samples ({size / len(messages):,.0f} "
            f"bytes each), {total} samples from {args.gateways} gateways; influxd 1.6.7, "
            f"mosquitto 2.0, {os.cpu_count()} cores"
        )
        figures: dict[str, Any] = {
            "samples": total,
            "messages": len(messages),
            "gateways": args.gateways,
            "machines": args.machines,
            "intervals": args.intervals,
            "raw_influx": {},
            "ingest": {},
        }
        for connections in sorted({1, *args.workers}):
            raw = _raw_influx(influx_port, influxd.pid, lines, connections)
            figures["raw_influx"][str(connections)] = raw
        elapsed = _raw_broker(broker_port, messages)
        figures["raw_broker"] = {
            "samples_per_s": total / elapsed,
            "messages_per_s": len(messages) / elapsed,
        }
        print(
            f"raw broker   : {total / elapsed:>9,.0f} samples/s "
            f"({len(messages) / elapsed:,.0f} messages/s, QoS 1 in and out, nothing done)"
        )
        complete = True
        for workers in args.workers:
            result = _ingest(
                workdir, broker_port, influx_port, messages, list(lines), workers=workers
            )
            missing = []
            if result["stored"] != total:
                databases = {f: f"ingest{workers}_{f}" for f in lines}
                missing = missing_ranges(influx_port, databases, per_factory)
            raw_rate = figures["raw_influx"][str(workers)]["samples_per_s"]
            figures["ingest"][str(workers)] = _report_ingest(
                workers, result, raw_rate, total, missing
            )
            complete &= result["stored"] == total
        if installed is not None:
            queue = functools.partial(_publish, broker_port, messages)
            result = nodered.measure(
                installed,
                workdir=workdir,
                broker_port=broker_port,
                influx_port=influx_port,
                total=total,
                queue=queue,
                stall_s=STALL_S,
            )
            missing = []
            if result["stored"] != total:
                databases = dict.fromkeys(lines, nodered.DATABASE)
                missing = missing_ranges(influx_port, databases, per_factory, tag=True)
            raw_rate = figures["raw_influx"]["1"]["samples_per_s"]
            figures["nodered"] = _report_nodered(
                result, raw_rate, total, missing, installed.versions()
            )
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if complete else 1
    finally:
        for process in (broker, influxd):
            process.terminate()
            process.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
