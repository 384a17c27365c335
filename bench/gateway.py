"""CPU and memory of one gateway polling 50 simulated Modbus machines every second.

Starts a Mosquitto, a simulated factory of 50 Modbus machines (each on its own port, the
register map of docs/simulators.md) in one process, and ``kyoso gateway`` in another,
polling every machine at 1 s and publishing a sample per machine every 10 s. After a
warm-up it measures the gateway process's CPU time and resident memory from /proc, and
prints the Modbus requests per poll cycle against one request per field. The reference is
the raw limit of this machine: one core, 100 %.

    .venv/bin/python bench/gateway.py --seconds 60
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
MACHINES = 50


def _factory_file(path: Path) -> None:
    """A factory of MACHINES copies of the shipped cnc-02, each on its own server."""
    source = next(p for p in shipped_factories() if "okada" in p.name)
    base = yaml.safe_load(source.read_text())
    template = next(m for m in base["machines"] if m["id"] == "cnc-02")
    base["factory"] = "bench-factory"
    base["modbus_servers"] = {f"m{i:02d}": {"port": 0} for i in range(MACHINES)}
    base["machines"] = [
        {
            **template,
            "id": f"m{i:02d}",
            "source": {**template["source"], "server": f"m{i:02d}", "unit": 1},
        }
        for i in range(MACHINES)
    ]
    path.write_text(yaml.safe_dump(base))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    args = parser.parse_args()
    kyoso = str(Path(sys.executable).with_name("kyoso"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        factory_path = work / "factory.yaml"
        _factory_file(factory_path)
        broker, broker_port = start_mosquitto(tmp)
        sim = subprocess.Popen(
            [kyoso, "simulate", str(factory_path), "--ephemeral-ports"],
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
            http_port = free_port()
            config["http"] = {"port": http_port}
            (work / "gateway.yaml").write_text(yaml.safe_dump(config))
            checked = GatewayConfig.model_validate(config)
            gateway = subprocess.Popen(
                [kyoso, "--log-level", "WARNING", "gateway", "--config", str(work / "gateway.yaml")]
            )
            time.sleep(args.warmup)
            cpu0, wall0 = cpu_seconds(gateway.pid), time.monotonic()
            time.sleep(args.seconds)
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
    print(f"machines: {len(checked.machines)} Modbus TCP, polled every 1 s, sample every 10 s")
    print(f"Modbus requests per poll cycle: {requests} merged vs {fields} one per field")
    print(f"gateway CPU: {100 * (cpu1 - cpu0) / (wall1 - wall0):.2f} % of one core (limit: 100 %)")
    print(f"gateway RSS: {rss:.1f} MiB")
    polls = sum(
        float(v) for v in re.findall(r"^kyoso_gateway_polls_total\S* (\S+)$", metrics, re.M)
    )
    acked = re.search(r"^kyoso_gateway_samples_acked_total (\S+)$", metrics, re.M)
    print(
        f"polls done: {polls:.0f}; samples acknowledged by the broker: {acked[1] if acked else 0}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
