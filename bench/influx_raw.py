"""Raw InfluxDB write rate for Kyoso sample points, and what the ingest's writer adds.

Starts its own influxd (Debian's 1.6.7) on free loopback ports in a temporary directory,
builds ``--points`` sample points (the contract example's shape: two states, two counters
with totals, two signals, an alarm; 26 fields) for ``--machines`` machines, one minute
apart, and writes them into a fresh database three ways:

1. raw: pre-built bodies POSTed in batches of ``--batch`` over one kept-alive connection
   (``http.client``), uncompressed: the server's limit on this machine;
2. raw gzip: the same, bodies compressed beforehand (level 1);
3. writer: ``InfluxWriter.write`` with its defaults (5000-line batches; uncompressed, as
   ``gzip: auto`` sends to a loopback InfluxDB), building bodies on the fly, one call per
   batch.

Each run writes new points (later timestamps); the figures are points per second of wall
time, and the influxd CPU time used. The line building rate (``sample_point``) is printed
too, since the ingest pays it per sample. ``--json PATH`` also writes the figures there
(for ``python -m bench``).

    .venv/bin/python bench/influx_raw.py --points 100000 --batch 5000
"""

import argparse
import asyncio
import gzip
import http.client
import json
import shutil
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from procstat import cpu_seconds, free_port, rss_mib

from kyoso.contract import Counter, MachineState, Sample, SignalStats
from kyoso.influx.client import InfluxConfig, InfluxWriter
from kyoso.influx.lineprotocol import sample_point

SESSION = "0f8e6c1a-4b7d-4e2a-9c35-7a1d2b3c4d5e"
START = datetime(2026, 1, 12, tzinfo=UTC)
COUNT_QUERY = "SELECT count(seq) FROM samples"


def _influxd_config(workdir: Path, port: int, rpc_port: int) -> str:
    """The settings tests/services.py uses for influxd 1.6.7 (no reporting, loopback only)."""
    return f"""reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
dir = "{workdir}/meta"
[data]
dir = "{workdir}/data"
wal-dir = "{workdir}/wal"
query-log-enabled = false
[monitor]
store-enabled = false
[http]
enabled = true
bind-address = "127.0.0.1:{port}"
auth-enabled = false
log-enabled = false
max-row-limit = 0
pprof-enabled = false
unix-socket-enabled = false
[logging]
level = "warn"
suppress-logo = true
[subscriber]
enabled = false
"""


def start_influxd(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, rpc_port = free_port(), free_port()
    config = workdir / "influxdb.conf"
    config.write_text(_influxd_config(workdir, port, rpc_port))
    binary = shutil.which("influxd") or "/usr/bin/influxd"
    process = subprocess.Popen(
        [binary, "-config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "influxd.log").open("wb"),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"influxd exited: {(workdir / 'influxd.log').read_text()[-2000:]}")
        try:
            status, _ = request(port, "GET", "/ping")
            if status == 204:
                return process, port
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("influxd did not answer /ping within 60 s")


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def bench_samples(count: int, machines: int, offset: int, start: datetime = START) -> list[Sample]:
    out = []
    for i in range(count):
        machine, step = i % machines, offset + i // machines
        out.append(
            Sample(
                machine=f"m{machine:03d}",
                seq=offset * machines + i,
                ts=start + timedelta(minutes=step),
                interval_s=60.0,
                state=MachineState.RUNNING,
                durations_s={MachineState.RUNNING: 52.5, MachineState.DOWN: 7.5},
                counters={
                    "good": Counter(delta=2, total=step * 2),
                    "reject": Counter(delta=0, total=17),
                },
                signals={
                    "power_kw": SignalStats(
                        last=3.1, mean=12.4, min=3.1, max=15.2 + i % 7, count=60
                    ),
                    "load_pct": SignalStats(last=0.0, mean=61.5, min=0.0, max=78.0, count=60),
                },
                alarm=i % 300,
            )
        )
    return out


def _lines(samples: list[Sample]) -> tuple[list[str], float]:
    started = time.perf_counter()
    lines = [sample_point("bench", "gw-01", SESSION, s) for s in samples]
    return lines, time.perf_counter() - started


def raw_write(port: int, database: str, lines: list[str], batch: int, compress: bool) -> float:
    path = f"/write?{urlencode({'db': database, 'precision': 'ns'})}"
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    bodies = ["\n".join(lines[i : i + batch]).encode() for i in range(0, len(lines), batch)]
    if compress:
        bodies = [gzip.compress(b, compresslevel=1) for b in bodies]
        headers["Content-Encoding"] = "gzip"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    for body in bodies:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 204:
            raise RuntimeError(f"write failed: {response.status} {answer!r}")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def raw_write_parallel(
    port: int, jobs: list[tuple[str, list[str]]], batch: int, connections: int
) -> float:
    """Wall time to POST every ``(database, lines)`` job in batches of ``batch`` lines,
    uncompressed, over ``connections`` kept-alive connections at once (one thread each,
    taking the next body when its answer is in). Bodies are built before the clock starts."""
    bodies = [
        (f"/write?{urlencode({'db': database, 'precision': 'ns'})}", "\n".join(chunk).encode())
        for database, lines in jobs
        for chunk in (lines[i : i + batch] for i in range(0, len(lines), batch))
    ]
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    queue = iter(bodies)
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    job = next(queue, None)
                if job is None:
                    return
                connection.request("POST", job[0], job[1], headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 204:
                    failures.append(f"{response.status} {answer[:200]!r}")
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"write failed: {failures[0]}")
    return elapsed


async def _writer(port: int, database: str, lines: list[str], batch: int) -> float:
    config = InfluxConfig(url=f"http://127.0.0.1:{port}", max_batch_lines=batch)
    async with InfluxWriter(config) as writer:
        started = time.perf_counter()
        for i in range(0, len(lines), batch):
            result = await writer.write(database, lines[i : i + batch])
            if result.rejected:
                raise RuntimeError(f"rejected: {result.rejected[:3]}")
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=100_000, help="points per run")
    parser.add_argument("--batch", type=int, default=5000, help="lines per request")
    parser.add_argument("--machines", type=int, default=100, help="series (machines)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kyoso-bench-influx-"))
    process, port = start_influxd(workdir)
    try:
        database = "kyoso_bench"
        request(
            port,
            "POST",
            "/query",
            urlencode({"q": f"CREATE DATABASE {database}"}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        per_run = args.points // args.machines
        runs = {"raw": False, "raw gzip": True, "writer": None}
        built, build_s = _lines(bench_samples(args.points, args.machines, 0))
        size = sum(len(line) + 1 for line in built)
        figures: dict[str, Any] = {
            "points": args.points,
            "batch": args.batch,
            "machines": args.machines,
            "line_building_per_s": args.points / build_s,
            "bytes_per_line": size / args.points,
            "runs": {},
        }
        print(
            f"influxd 1.6.7, data in {workdir}; {args.points} points of 26 fields, "
            f"{args.machines} series, batches of {args.batch}"
        )
        print(
            f"line building (sample_point): {args.points / build_s:,.0f} points/s, "
            f"{size / args.points:.0f} bytes/line"
        )
        for run, (name, compress) in enumerate(runs.items()):
            lines = (
                built
                if run == 0
                else _lines(bench_samples(args.points, args.machines, run * per_run))[0]
            )
            cpu0 = cpu_seconds(process.pid)
            if compress is None:
                elapsed = asyncio.run(_writer(port, database, lines, args.batch))
            else:
                elapsed = raw_write(port, database, lines, args.batch, compress)
            cpu = cpu_seconds(process.pid) - cpu0
            figures["runs"][name] = {
                "points_per_s": args.points / elapsed,
                "influxd_cpu_pct": cpu / elapsed * 100,
            }
            print(
                f"{name:>9}: {args.points / elapsed:>10,.0f} points/s "
                f"({args.points * 26 / elapsed:,.0f} field values/s), "
                f"influxd CPU {cpu / elapsed * 100:.0f} % of one core"
            )
        _, body = request(
            port,
            "GET",
            "/query?" + urlencode({"db": database, "q": COUNT_QUERY}),
        )
        total = json.loads(body)["results"][0]["series"][0]["values"][0][1]
        print(
            f"points stored: {total} (expected {args.points * len(runs)}); "
            f"influxd RSS {rss_mib(process.pid):.0f} MiB"
        )
        figures.update(stored=total, expected=args.points * len(runs))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if total == args.points * len(runs) else 1
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
