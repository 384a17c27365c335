"""CPU and memory of one gateway polling 50, 200 and 400 simulated Modbus machines each second.

For each size: starts a Mosquitto, a simulated factory of that many Modbus machines (each
on its own port, the register map of docs/simulators.md) in one process, and ``kyoso
gateway`` in another, polling every machine at 1 s and publishing a sample per machine
every 10 s, and at once when a machine's state changes (``min_sample_s`` 1.0, the default);
no ingest runs, so samples leave the outbox at the broker's PUBACK. After a warm-up it
measures the gateway process's CPU time and resident memory from /proc, and prints the
Modbus requests per poll cycle against one request per field. The references: the raw
limit of this machine, one core, 100 %; and, in the same run over the same simulated
machines, a bare poller (this file with ``--poller``: pymodbus's async client, one per
machine, making the gateway's merged requests each second and nothing else: no decoding,
state, outbox or MQTT), measured the same way over ``--poller-seconds``: what polling
alone costs. ``--json PATH`` also writes the figures there (for ``python -m bench``).

    .venv/bin/python bench/gateway.py --machines 50 200 400 --seconds 60
"""

import argparse
import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from procstat import cpu_seconds, free_port, rss_mib, start_mosquitto
from pymodbus.client import AsyncModbusTcpClient

from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.modbus_decode import plan_device
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.simulators.endpoints import Endpoint
from kyoso.simulators.gateways import gateway_config

_ENDPOINT = re.compile(r"^(\S+)/(\S+): modbus (\S+):(\d+) unit (\d+)$")


def _factory_file(path: Path, machines: int) -> None:
    """A factory of ``machines`` copies of the shipped cnc-02, each on its own server,
    working around the clock (on any day the bench runs, the machines are at work)."""
    source = next(p for p in shipped_factories() if "okada" in p.name)
    base = yaml.safe_load(source.read_text())
    template = next(m for m in base["machines"] if m["id"] == "cnc-02")
    base["factory"] = "bench-factory"
    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    base["calendars"] = {
        template["calendar"]: {
            "timezone": "UTC",
            "shifts": [{"days": every_day, "start": "00:00", "end": "00:00"}],
        }
    }
    base["modbus_servers"] = {f"m{i:03d}": {"port": 0} for i in range(machines)}
    base["machines"] = [
        {
            **template,
            "id": f"m{i:03d}",
            "source": {**template["source"], "server": f"m{i:03d}", "unit": 1},
        }
        for i in range(machines)
    ]
    path.write_text(yaml.safe_dump(base))


async def _poll(plan: list[dict[str, Any]], ready: Path) -> tuple[int, int, int]:
    """Each machine's requests once a second until SIGTERM: answers, failures, and cycles
    that took longer than their second. ``ready`` is written once every client is
    connected."""
    clients = {
        (m["host"], m["port"]): AsyncModbusTcpClient(
            m["host"], port=m["port"], timeout=1, retries=0
        )
        for m in plan
    }
    await asyncio.gather(*(client.connect() for client in clients.values()))
    counts = [0, 0]
    late = 0

    async def once(machine: dict[str, Any]) -> None:
        client = clients[machine["host"], machine["port"]]
        for table, start, count in machine["requests"]:
            call = {
                "coil": client.read_coils,
                "discrete_input": client.read_discrete_inputs,
                "holding": client.read_holding_registers,
                "input": client.read_input_registers,
            }[table]
            try:
                reply = await call(start, count=count, device_id=machine["unit"])
                counts[reply.isError()] += 1
            except Exception:  # a failure is counted, not fatal
                counts[1] += 1

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.to_thread(ready.write_text, "ready\n")
    next_at = loop.time()
    while not stop.is_set():
        await asyncio.gather(*(once(machine) for machine in plan))
        next_at += 1.0
        if next_at < loop.time():
            late += 1
            next_at = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - loop.time()))
    for client in clients.values():
        client.close()
    return counts[0], counts[1], late


def _poller(plan_path: Path) -> int:
    """The bare poller's process: polls until SIGTERM, then prints its answers, failures
    and late cycles."""
    ready = plan_path.with_suffix(".ready")
    ok, failed, late = asyncio.run(_poll(json.loads(plan_path.read_text()), ready))
    print(f"{ok} {failed} {late}")
    return 0


def _measure_poller(
    work: Path, checked: GatewayConfig, endpoints: dict[str, Any], seconds: float, warmup: float
) -> dict[str, float]:
    """CPU and memory of the bare poller over the same machines, measured like the
    gateway's once it is connected to all of them and warmed up."""
    plan = []
    for machine in checked.machines:
        if machine.source.modbus is None:
            continue
        endpoint = endpoints[machine.id]
        requests = [(r.table, r.start, r.count) for r in plan_device(machine.source.modbus)]
        plan.append(
            {
                "host": endpoint.host,
                "port": endpoint.port,
                "unit": endpoint.unit,
                "requests": requests,
            }
        )
    plan_path = work / "plan.json"
    plan_path.write_text(json.dumps(plan))
    poller = subprocess.Popen(
        [sys.executable, __file__, "--poller", str(plan_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not plan_path.with_suffix(".ready").exists():
            if poller.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bare poller did not connect to every machine")
            time.sleep(0.1)
        time.sleep(warmup)
        cpu0, wall0 = cpu_seconds(poller.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, wall1 = cpu_seconds(poller.pid), time.monotonic()
        rss = rss_mib(poller.pid)
        poller.terminate()
        out, _ = poller.communicate(timeout=60)
    finally:
        if poller.poll() is None:
            poller.kill()
            poller.wait()
    ok, failed, late = (int(n) for n in out.split())
    return {"cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0), "rss_mib": rss,
            "answers": ok, "failures": failed, "late_cycles": late}  # fmt: skip


def _measure(machines: int, seconds: float, warmup: float, poller_seconds: float) -> dict[str, Any]:
    """Run the gateway over ``machines`` simulated machines, then the bare poller; print and
    return their figures."""
    kyoso = str(Path(sys.executable).with_name("kyoso"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        factory_path = work / "factory.yaml"
        _factory_file(factory_path, machines)
        broker, broker_port = start_mosquitto(tmp)
        sim = subprocess.Popen(
            [kyoso, "--log-level", "WARNING", "simulate", str(factory_path), "--ephemeral-ports"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        gateway: subprocess.Popen[bytes] | None = None
        try:
            assert sim.stdout is not None
            endpoints: dict[str, Endpoint] = {}
            for line in sim.stdout:
                if match := _ENDPOINT.match(line.strip()):
                    endpoints[match[2]] = Endpoint(match[3], int(match[4]), int(match[5]))
                elif line.startswith("simulating"):
                    break
            config = gateway_config(
                load_factory(factory_path),
                endpoints,
                gateway="gw-bench",
                broker={"host": "127.0.0.1", "port": broker_port},
                outbox_path=work / "outbox.sqlite3",
            )
            config["outbox"]["confirm"] = "broker"  # no ingest here sends store receipts
            http_port = free_port()
            config["http"] = {"port": http_port}
            (work / "gateway.yaml").write_text(yaml.safe_dump(config))
            checked = GatewayConfig.model_validate(config)
            gateway = subprocess.Popen(
                [kyoso, "--log-level", "WARNING", "gateway", "--config", str(work / "gateway.yaml")]
            )
            time.sleep(warmup)
            cpu0, wall0 = cpu_seconds(gateway.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = cpu_seconds(gateway.pid), time.monotonic()
            rss = rss_mib(gateway.pid)
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as response:
                metrics = response.read().decode()
            gateway.terminate()
            gateway.wait(15)
            bare = (
                _measure_poller(work, checked, endpoints, poller_seconds, min(warmup, 3.0))
                if poller_seconds > 0
                else None
            )
        finally:
            for process in (gateway, sim, broker):
                if process is not None:
                    process.terminate()
                    process.wait(15)
    requests = sum(len(plan_device(m.source.modbus)) for m in checked.machines if m.source.modbus)
    fields = sum(len(m.source.modbus.fields) for m in checked.machines if m.source.modbus)
    polls = sum(
        float(v) for v in re.findall(r"^kyoso_gateway_polls_total\S* (\S+)$", metrics, re.M)
    )
    published = re.search(r"^kyoso_gateway_samples_published_total (\S+)$", metrics, re.M)
    cpu_pct = 100 * (cpu1 - cpu0) / (wall1 - wall0)
    print(
        f"{len(checked.machines)} machines: gateway CPU "
        f"{cpu_pct:.2f} % of one core (limit: 100 %), RSS "
        f"{rss:.1f} MiB; Modbus requests per poll cycle {requests} merged vs {fields} one per "
        f"field; {polls:.0f} polls, {float(published[1]) if published else 0:.0f} samples "
        f"published in {warmup + seconds:.0f} s"
    )
    if bare is not None:
        print(
            f"{'':>{len(str(machines)) + 10}}bare poller CPU {bare['cpu_pct']:.2f} % of one "
            f"core, RSS {bare['rss_mib']:.1f} MiB ({bare['answers']:.0f} answers, "
            f"{bare['failures']:.0f} failures, {bare['late_cycles']:.0f} cycles over 1 s)"
        )
    return {
        "machines": len(checked.machines),
        "cpu_pct": cpu_pct,
        "rss_mib": rss,
        "requests_per_cycle": requests,
        "fields": fields,
        "polls": polls,
        "samples_published": float(published[1]) if published else 0.0,
        "bare_poller": bare,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--machines", type=int, nargs="+", default=[50, 200, 400], help="gateway sizes to run"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument(
        "--poller-seconds", type=float, default=20.0, help="bare poller's window (0: skip)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--poller", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poller is not None:
        return _poller(args.poller)
    print("Modbus TCP machines polled every 1 s, a sample every 10 s and at each state change")
    sizes = []
    for machines in args.machines:
        sizes.append(_measure(machines, args.seconds, args.warmup, args.poller_seconds))
        if args.json:  # after each size: a later one failing keeps these
            args.json.write_text(json.dumps({"sizes": sizes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
