"""CPU and memory of one gateway polling 50, 200 and 400 simulated Modbus machines each second.

For each size: starts a Mosquitto, a simulated factory of that many Modbus machines (each
on its own port, the register map of docs/simulators.md) in one process, and ``kyoso
gateway`` in another, polling every machine at 1 s and publishing a sample per machine
every 10 s, and at once when a machine's state changes (``min_sample_s`` 1.0, the default);
no ingest runs, so samples leave the outbox at the broker's PUBACK. After a warm-up it
measures the gateway process's CPU time and resident memory from /proc, and prints the
Modbus requests per poll cycle against one request per field. The reference is the raw
limit of this machine: one core, 100 %.

    .venv/bin/python bench/gateway.py --machines 50 200 400 --seconds 60
"""

import argparse
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from procstat import cpu_seconds, free_port, rss_mib, start_mosquitto

from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.modbus_decode import plan_device
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import Endpoint

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


def _measure(machines: int, seconds: float, warmup: float) -> None:
    """Run the gateway over ``machines`` simulated machines and print its figures."""
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
    print(
        f"{len(checked.machines)} machines: gateway CPU "
        f"{100 * (cpu1 - cpu0) / (wall1 - wall0):.2f} % of one core (limit: 100 %), RSS "
        f"{rss:.1f} MiB; Modbus requests per poll cycle {requests} merged vs {fields} one per "
        f"field; {polls:.0f} polls, {float(published[1]) if published else 0:.0f} samples "
        f"published in {warmup + seconds:.0f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--machines", type=int, nargs="+", default=[50, 200, 400], help="gateway sizes to run"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    args = parser.parse_args()
    print("Modbus TCP machines polled every 1 s, a sample every 10 s and at each state change")
    for machines in args.machines:
        _measure(machines, args.seconds, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
