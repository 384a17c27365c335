"""Ingest throughput: samples/s from the broker into InfluxDB, beside the raw limits.

Starts its own influxd (Debian's 1.6.7) and Mosquitto on free loopback ports and builds
messages shaped as the gateway sends them live: per gateway (one factory each), one
``SampleBatch`` per interval with a sample of each of its machines (21 fields a sample:
two states, two counters with totals, two signals, an alarm). Then, in one run:

1. **raw InfluxDB**: the same samples as line protocol (``sample_point``), built beforehand,
   POSTed in batches of 5000 lines over one kept-alive connection, uncompressed, into each
   factory's database: the most this InfluxDB takes here;
2. **raw broker**: every message published at QoS 1 by one client and received at QoS 1 by
   one subscriber (paho, acknowledging at once, doing nothing with them): the most the
   broker and a paho client move here;
3. **ingest**: ``kyoso ingest`` (a separate process, InfluxDB store, default settings) finds
   all the messages queued in its persistent session when it starts (published while it
   was stopped), and is timed from its first received sample to its last written one, read
   from its ``/metrics``. Every point is counted in InfluxDB afterwards. Then the same with
   two ingest processes in one shared-subscription group (the scale-out of docs/ingest.md),
   the broker splitting the samples between them.

    .venv/bin/python bench/ingest.py --gateways 10 --machines 20 --intervals 500 --workers 1 2
"""

import argparse
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
from influx_raw import bench_samples, raw_write, request, start_influxd
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from procstat import cpu_seconds, free_port, rss_mib, start_mosquitto

from kyoso.contract import SampleBatch, encode, samples_topic
from kyoso.influx.lineprotocol import sample_point

Message = tuple[str, bytes, int]
"""Topic, payload, samples in it."""


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
        lines[factory] = [sample_point(factory, "gw-01", session, s) for s in samples]
        topic = samples_topic(factory, "gw-01")
        messages = []
        for i in range(intervals):
            chunk = samples[i * machines : (i + 1) * machines]
            batch = SampleBatch(factory=factory, gateway="gw-01", session=session, samples=chunk)
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


def _count(influx_port: int, database: str) -> int:
    query = urlencode({"db": database, "q": "SELECT count(seq) FROM samples"})
    _, body = request(influx_port, "GET", f"/query?{query}")
    series = json.loads(body)["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


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
    over the messages queued for their sessions; time, CPU and memory of all of them."""
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
        began = None
        cpu0 = 0.0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            received = total_of("kyoso_ingest_samples_received_total")
            now = time.perf_counter()
            if began is None and received > 0:
                began, cpu0 = now, sum(cpu_seconds(p.pid) for p in processes)
            if total_of("kyoso_ingest_samples_written_total") >= total:
                break
            time.sleep(0.02)  # each scrape costs the ingest CPU: not too often
        else:
            raise RuntimeError(f"the ingest did not finish: {log.read_text()[-2000:]}")
        assert began is not None
        elapsed = now - began
        cpu = sum(cpu_seconds(p.pid) for p in processes) - cpu0
        rss = sum(rss_mib(p.pid) for p in processes)
        dead = total_of("kyoso_ingest_dead_letters_total")
    finally:
        stop(processes)
    stored = sum(_count(influx_port, f"ingest{workers}_{f}") for f in factories)
    return {"elapsed": elapsed, "cpu": cpu, "rss": rss, "stored": stored, "dead": dead}


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
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kyoso-bench-ingest-"))
    influxd, influx_port = start_influxd(workdir)
    broker, broker_port = start_mosquitto(str(workdir))
    try:
        time.sleep(0.5)
        messages, lines = _workload(args.gateways, args.machines, args.intervals)
        total = sum(n for _, _, n in messages)
        size = sum(len(p) for _, p, _ in messages)
        print(
            f"{len(messages)} messages of {args.machines} samples ({size / len(messages):,.0f} "
            f"bytes each), {total} samples from {args.gateways} gateways; influxd 1.6.7, "
            f"mosquitto 2.0, {os.cpu_count()} cores"
        )
        elapsed = cpu = 0.0
        for factory, factory_lines in lines.items():
            request(
                influx_port,
                "POST",
                "/query",
                urlencode({"q": f'CREATE DATABASE "raw_{factory}"'}).encode(),
                {"Content-Type": "application/x-www-form-urlencoded"},
            )
            cpu0 = cpu_seconds(influxd.pid)
            elapsed += raw_write(influx_port, f"raw_{factory}", factory_lines, 5000, compress=False)
            cpu += cpu_seconds(influxd.pid) - cpu0
        raw_influx = total / elapsed
        print(
            f"raw InfluxDB : {raw_influx:>9,.0f} samples/s (bulk line protocol, one "
            f"connection, influxd {cpu / elapsed * 100:.0f} % of a core)"
        )
        elapsed = _raw_broker(broker_port, messages)
        print(
            f"raw broker   : {total / elapsed:>9,.0f} samples/s "
            f"({len(messages) / elapsed:,.0f} messages/s, QoS 1 in and out, nothing done)"
        )
        complete = True
        for workers in args.workers:
            result = _ingest(
                workdir, broker_port, influx_port, messages, list(lines), workers=workers
            )
            rate = total / result["elapsed"]
            label = f"ingest x{workers}" if workers > 1 else "ingest"
            print(
                f"{label:<13}: {rate:>9,.0f} samples/s broker -> InfluxDB "
                f"({rate / raw_influx * 100:.0f} % of raw InfluxDB; {workers} process"
                f"{'es' if workers > 1 else ''} {result['cpu'] / result['elapsed'] * 100:.0f} % "
                f"of a core, RSS {result['rss']:.0f} MiB; stored {result['stored']:.0f} of "
                f"{total}, {result['dead']:.0f} dead letters)"
            )
            complete &= result["stored"] == total
        return 0 if complete else 1
    finally:
        for process in (broker, influxd):
            process.terminate()
            process.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
