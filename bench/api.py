"""Latency and throughput of the regional capacity query, 50 factories of 20 machines each.

    .venv/bin/python bench/api.py                      # 50 x 20, 200 requests/s for 20 s

1. **Region**: the shipped factories (kyoso/simulators/factories/*.yaml) cloned into
   ``--factories`` factories of ``--machines`` machines, each with its own factory id,
   seed and machine ids; ``--days`` of history up to now, one sample per machine every
   ``--interval-s``, written into a new store as a gateway would have sent it: SQLite, or
   with ``--store influxdb`` a fresh influxd of its own (Debian's 1.6.7, loopback).
2. **Server**: a platform key made with ``kyoso api keys create``, then ``kyoso api`` as
   its own process (uvicorn, one worker) on a free loopback port, configured only through
   ``KYOSO_API_*``. Data may not go stale during the run (it would withdraw capacity and
   make answers cheaper): the staleness threshold is one hour; the key's request rate is
   not limited (the load stands for many callers); everything else is default.
3. **Load**, from this process, loopback only, over kept-alive HTTP/1.1 connections of a
   small asyncio client (tens of microseconds of CPU a request: not the limit here):

   - *cold*: the first ``GET /v1/capacity?horizon_h=24``, nothing computed or learnt yet;
   - *open loop*: ``--rate`` requests/s for ``--seconds``, after ``--warmup-s`` at that
     rate which are not counted (the live views the cold answer read are past their
     bound when it is done: the first requests wait for them, as after any pause; the
     cold phase measures that), each sent at its scheduled time
     whatever the answers before it (on a new connection if none is free, up to
     ``--max-connections``), its latency counted from that scheduled time: a slow answer
     delays nobody's clock, so queueing is measured, not hidden (no coordinated omission);
     with ``--hog``, straight after it, the same again with another process busy on one
     core (``python -c "while True: pass"``, started half a second of the stream before
     and killed after the phase), and the trivial page below on that schedule with that
     core busy; then the trivial page on the quiet machine (what answering at that rate
     costs alone). A steady stream finds its figures computed ahead; a request after a
     pause longer than the live views' time to live waits for them (the *cold* phase and
     the first requests after the idle spell before the closed loop below);
   - *closed loop* (the raw limits of the same server in the same run): ``--connections``
     connections each sending its next request when its answer arrives, for
     ``--closed-seconds``: the regional query; the same query with If-None-Match set to
     the ETag of the answer just before (a poller's request: 304 while the figures are
     unchanged, which saves the body); and a trivial page (``/docs/oauth2-redirect``, a
     constant): what uvicorn and FastAPI cost alone;
   - *restart*: the server stopped (SIGTERM) and started again over the same store and
     the load profiles the first process kept (``profile_cache_path``); its first answer.

Printed: per phase, throughput, p50/p99/max latency, the server's CPU (% of one core, from
/proc), this client's, and the answers by status; and the size of the regional answer.
``--json PATH`` also writes them there (for ``python -m bench``).
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from influx_raw import start_influxd
from loadgen import OK, Connection, Phase, Pool, closed_loop, get, measured, open_loop, timed
from procstat import free_port

from kyoso.contract import GatewayStatus
from kyoso.influx.client import InfluxConfig
from kyoso.simulators.config import (
    ClampSourceConfig,
    FactoryConfig,
    MachineConfig,
    ModbusServerConfig,
    ModbusSourceConfig,
    MTConnectSourceConfig,
    OpcuaSourceConfig,
    SlmpSourceConfig,
    load_factory,
    shipped_factories,
)
from kyoso.simulators.history import history_descriptions, history_samples
from kyoso.simulators.runner import FactorySimulation
from kyoso.store import InfluxStore, SqliteStore

GATEWAY: Final = "gw-01"
REGIONAL: Final = "/v1/capacity?horizon_h=24"
TRIVIAL: Final = "/docs/oauth2-redirect"
KYOSO: Final = Path(sys.executable).parent / "kyoso"


# --- the region ------------------------------------------------------------------------------


def clone_region(factories: int, machines: int) -> list[FactoryConfig]:
    """``factories`` configs of ``machines`` machines each, cycling through the shipped ones.

    Factory ``k`` is shipped factory ``k mod 3`` renamed ``<name>-<k>`` with its own seed;
    its machines cycle through the template's, renamed ``<id>-<copy>``, each Modbus one on
    a server of its own, each clamp with a sensor of its own.
    """
    templates = [load_factory(path) for path in shipped_factories()]
    configs = []
    for k in range(factories):
        template = templates[k % len(templates)]
        cloned: list[MachineConfig] = []
        servers: dict[str, ModbusServerConfig] = {}
        for j in range(machines):
            base = template.machines[j % len(template.machines)]
            machine_id = f"{base.id}-{j // len(template.machines)}"
            source: (
                ClampSourceConfig
                | ModbusSourceConfig
                | MTConnectSourceConfig
                | OpcuaSourceConfig
                | SlmpSourceConfig
            )
            if isinstance(base.source, ClampSourceConfig):
                source = base.source.model_copy(update={"sensor": f"clamp-{k}-{j}"})
            elif isinstance(
                base.source, MTConnectSourceConfig | OpcuaSourceConfig | SlmpSourceConfig
            ):
                source = base.source.model_copy(update={"port": 0})  # a server of its own
            else:
                servers[f"srv-{j}"] = ModbusServerConfig(port=0)
                source = base.source.model_copy(update={"server": f"srv-{j}", "unit": 1})
            cloned.append(base.model_copy(update={"id": machine_id, "source": source}))
        configs.append(
            FactoryConfig.model_validate(
                template.model_copy(
                    update={
                        "factory": f"{template.factory}-{k:02d}",
                        "seed": template.seed * 100 + k,
                        "machines": cloned,
                        "modbus_servers": servers,
                    }
                ).model_dump()
            )
        )
    return configs


async def write_region(
    store: SqliteStore | InfluxStore,
    configs: list[FactoryConfig],
    start: datetime,
    end: datetime,
    interval_s: float,
) -> int:
    """Each factory's history over ``[start, end)`` into a new store; the samples written."""
    written = 0
    async with store:
        for config in configs:
            sim = FactorySimulation(config, start.timestamp())
            history = history_samples(
                sim, start.timestamp(), end.timestamp(), interval_s=interval_s
            )
            for samples in history.values():
                await store.write_samples(config.factory, GATEWAY, "history", samples)
                written += len(samples)
            for description in history_descriptions(config, start.timestamp(), gateway=GATEWAY):
                await store.write_description(description)
            await store.write_status(
                GatewayStatus(
                    factory=config.factory,
                    gateway=GATEWAY,
                    session="history",
                    status="online",
                    ts=start,
                    reason="connected",
                )
            )
    return written


# --- the server ------------------------------------------------------------------------------


def new_store(
    kind: str, workdir: Path
) -> tuple[SqliteStore | InfluxStore, dict[str, str], subprocess.Popen[bytes] | None]:
    """A new store of ``kind`` under ``workdir``, the API's settings that name it, and the
    influxd started for it (None for SQLite)."""
    if kind == "influxdb":
        influxd, influx_port = start_influxd(workdir)
        url = f"http://127.0.0.1:{influx_port}"
        settings = {"KYOSO_API_STORE": "influxdb", "KYOSO_API_INFLUX__URL": url}
        return InfluxStore(InfluxConfig(url=url)), settings, influxd
    path = workdir / "store.sqlite3"
    settings = {"KYOSO_API_STORE": "sqlite", "KYOSO_API_SQLITE_PATH": str(path)}
    return SqliteStore(path, synchronous="normal"), settings, None


def make_key(keys: Path) -> str:
    """A new platform key, through the CLI."""
    command = [str(KYOSO), "api", "keys", "create", "--keys", str(keys)]
    made = subprocess.run(
        [*command, "--name", "bench", "--scope", "platform"],
        check=True,
        capture_output=True,
        text=True,
    )
    return made.stdout.strip()


def start_server(
    workdir: Path, store: dict[str, str], keys: Path, port: int
) -> subprocess.Popen[bytes]:
    """``kyoso api`` on ``port`` over the store its ``KYOSO_API_*`` settings in ``store`` name."""
    env = {
        **os.environ,
        **store,
        "KYOSO_API_HOST": "127.0.0.1",
        "KYOSO_API_PORT": str(port),
        "KYOSO_API_KEYS": str(keys),
        "KYOSO_API_BOOKINGS_PATH": str(workdir / "bookings.sqlite3"),
        "KYOSO_API_PROFILE_CACHE_PATH": str(workdir / "profiles.sqlite3"),
        "KYOSO_API_CAPACITY__STALE_AFTER_S": "3600",
        # The load stands for many platform callers, sent with one key: its fair-use rate
        # (20/s by default) would answer most of it 429. Concurrency limits stay as they are.
        "KYOSO_API_LIMITS__RATE_PER_S": "100000",
        "KYOSO_API_LIMITS__BURST": "100000",
    }
    log = (workdir / "server.log").open("wb")
    return subprocess.Popen([str(KYOSO), "api"], env=env, stdout=log, stderr=log)


def serving(workdir: Path, store: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """:func:`start_server` on a free port, once it answers; and the port."""
    port = free_port()
    server = start_server(workdir, store, workdir / "keys.sqlite3", port)
    asyncio.run(wait_ready(port, server, 30.0))
    return server, port


async def wait_ready(port: int, server: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("kyoso api exited before it was ready")
        try:
            connection = await Connection.open(port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            status, _, _ = await connection.send(get(TRIVIAL, port))
        finally:
            connection.close()
        if status == 200:
            return
    raise RuntimeError("kyoso api did not answer in time")


class Hog:
    """Another process busy on one core while a phase runs: a loop that never sleeps,
    killed (by its pid, through its handle) when the phase ends."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> "Hog":
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "while True: pass"
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.process is not None:
            self.process.kill()
            await self.process.wait()


async def first_answer(name: str, port: int, key: str, pid: int) -> Phase:
    """The server's first answer to the regional query."""
    pool = Pool(port, 1)

    async def first(phase: Phase) -> None:
        await timed(pool, get(REGIONAL, port, key), phase, time.monotonic())

    try:
        return await measured(f"{name}: first {REGIONAL}", pid, first)
    finally:
        pool.close()


async def drive(args: argparse.Namespace, port: int, key: str, pid: int) -> dict[str, Any]:
    cold = await first_answer("cold", port, key, pid)
    pool = Pool(port, args.max_connections)
    regional = get(REGIONAL, port, key)
    _, size, etag = await pool.send(regional)

    phases = {"cold": cold}
    rate, seconds, n, seconds_c = args.rate, args.seconds, args.connections, args.closed_seconds
    # Steady state: what the cold answer left past its bound is computed again first.
    await open_loop(pool, regional, rate, args.warmup_s)(Phase("warm-up"))
    phases["open"] = await measured(
        f"open loop {rate:g}/s: {REGIONAL}", pid, open_loop(pool, regional, rate, seconds)
    )
    late_s = phases["open"].late_s
    opened = pool.opened
    if args.hog:  # straight after the quiet phase: the same stream, a core taken from it
        async with Hog():  # spinning for half a second of the stream before it is measured
            await open_loop(pool, regional, rate, 0.5)(Phase("hog starting"))
            phases["open_hog"] = await measured(
                f"open loop {rate:g}/s, a core busy: {REGIONAL}",
                pid,
                open_loop(pool, regional, rate, seconds),
            )
            phases["open_hog_trivial"] = await measured(
                f"open loop {rate:g}/s, a core busy: {TRIVIAL} (trivial)",
                pid,
                open_loop(pool, get(TRIVIAL, port), rate, seconds),
            )
    phases["open_trivial"] = await measured(
        f"open loop {rate:g}/s: {TRIVIAL} (trivial)",
        pid,
        open_loop(pool, get(TRIVIAL, port), rate, seconds),
    )
    phases["closed"] = await measured(
        f"closed x{n}: {REGIONAL}", pid, closed_loop(pool, regional, n, seconds_c, OK)
    )
    # A poller sends the ETag of its last answer: take it now, as a poller would have.
    _, _, current = await pool.send(regional)
    conditional = get(REGIONAL, port, key, current)
    for name, title, request, status in [
        ("closed_etag", f"closed x{n}: same with If-None-Match", conditional, OK | {304}),
        ("closed_trivial", f"closed x{n}: {TRIVIAL} (trivial)", get(TRIVIAL, port), OK),
    ]:
        phases[name] = await measured(title, pid, closed_loop(pool, request, n, seconds_c, status))
    pool.close()

    print(f"regional answer: {size} bytes, ETag {etag}")
    print(
        f"open loop: sent at most {1000 * late_s:.1f} ms after schedule; "
        f"{opened} connections opened by then"
    )
    print()
    header = f"{'phase':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(f"{header} {'server':>8} {'client':>8}  answers")
    for phase in phases.values():
        print(phase.row())
    return {
        "answer_bytes": size,
        "late_s": late_s,
        "connections_opened": opened,
        "phases": {name: phase.figures() for name, phase in phases.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factories", type=int, default=50)
    parser.add_argument("--machines", type=int, default=20, help="machines per factory")
    parser.add_argument("--days", type=float, default=2.0, help="history up to now")
    parser.add_argument("--interval-s", type=float, default=900.0, help="sample interval")
    parser.add_argument("--rate", type=float, default=200.0, help="open loop, requests/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="open loop duration")
    parser.add_argument(
        "--warmup-s", type=float, default=2.0, help="open loop, before it is measured"
    )
    parser.add_argument("--connections", type=int, default=8, help="closed loop")
    parser.add_argument("--max-connections", type=int, default=256, help="open loop")
    parser.add_argument("--closed-seconds", type=float, default=8.0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--hog", action="store_true", help="open loop again with another process busy on a core"
    )
    parser.add_argument(
        "--store", choices=("sqlite", "influxdb"), default="sqlite", help="where the API reads"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kyoso-bench-api-"))
    server: subprocess.Popen[bytes] | None = None
    influxd: subprocess.Popen[bytes] | None = None
    try:
        built = time.monotonic()
        configs = clone_region(args.factories, args.machines)
        end = datetime.now(UTC).replace(microsecond=0)
        start = end - timedelta(days=args.days)
        store, settings, influxd = new_store(args.store, workdir)
        samples = asyncio.run(write_region(store, configs, start, end, args.interval_s))
        machines = sum(len(c.machines) for c in configs)
        print(
            f"region: {len(configs)} factories, {machines} machines, {args.days:g} days at "
            f"{args.interval_s:g} s: {samples} samples in {args.store}, built in "
            f"{time.monotonic() - built:.1f} s"
        )
        key = make_key(workdir / "keys.sqlite3")
        server, port = serving(workdir, settings)
        figures = asyncio.run(drive(args, port, key, server.pid))
        # A restart over the profiles the first process kept (the store and the file as it
        # left them): what a deploy or a crash costs the first caller.
        server.terminate()
        server.wait(30)
        server, port = serving(workdir, settings)
        restart = asyncio.run(first_answer("restart, profiles kept", port, key, server.pid))
        print(restart.row())
        figures["phases"]["restart"] = restart.figures()
        if args.json:
            figures.update(
                factories=len(configs), machines=machines, samples=samples, store=args.store
            )
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        for process in (server, influxd):
            if process is not None:
                process.terminate()
                process.wait(10)
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
