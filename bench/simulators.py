"""CPU and memory of the shipped demo factories simulated in real time.

Starts a Mosquitto for the clamp sensors and ``kyoso simulate`` (all shipped factories,
a week of backfill) as a separate process, polls every Modbus machine once a second the
way a gateway would (one read of the 20 live holding registers), and measures the
simulator process's CPU time and resident memory from /proc over the window. The
reference is the raw limit of this machine: one core, 100 %.

    .venv/bin/python bench/simulators.py --seconds 60
"""

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procstat import cpu_seconds, rss_mib, start_mosquitto
from pymodbus.client import AsyncModbusTcpClient

_ENDPOINT = re.compile(r"^(\S+)/(\S+): modbus (\S+):(\d+) unit (\d+)$")


async def _poll(endpoints: list[tuple[str, int, int]], seconds: float) -> tuple[int, int]:
    clients: dict[tuple[str, int], AsyncModbusTcpClient] = {}
    for host, port, _ in endpoints:
        if (host, port) not in clients:
            clients[(host, port)] = AsyncModbusTcpClient(host, port=port, timeout=1, retries=0)
            await clients[(host, port)].connect()
    ok = failed = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    next_at = loop.time()
    while loop.time() < deadline:
        for host, port, unit in endpoints:
            reply = await clients[(host, port)].read_holding_registers(0, count=20, device_id=unit)
            if reply.isError():
                failed += 1
            else:
                ok += 1
        next_at += 1.0
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    for client in clients.values():
        client.close()
    return ok, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    args = parser.parse_args()
    kyoso = Path(sys.executable).with_name("kyoso")
    with tempfile.TemporaryDirectory() as tmp:
        broker, broker_port = start_mosquitto(tmp)
        sim = subprocess.Popen(
            [str(kyoso), "simulate", "--ephemeral-ports", "--backfill", "7d",
             "--mqtt", f"127.0.0.1:{broker_port}", "--ground-truth", f"{tmp}/truth"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sim.stdout is not None
            endpoints: list[tuple[str, int, int]] = []
            clamps = 0
            for line in sim.stdout:
                if match := _ENDPOINT.match(line.strip()):
                    endpoints.append((match[3], int(match[4]), int(match[5])))
                elif ": mqtt " in line:
                    clamps += 1
                elif line.startswith("simulating"):
                    break
            time.sleep(2)  # let start-up work settle before measuring
            cpu0, wall0, own0 = cpu_seconds(sim.pid), time.monotonic(), time.process_time()
            ok, failed = asyncio.run(_poll(endpoints, args.seconds))
            cpu1, wall1, own1 = cpu_seconds(sim.pid), time.monotonic(), time.process_time()
            rss = rss_mib(sim.pid)
        finally:
            sim.terminate()
            sim.wait(10)
            broker.terminate()
            broker.wait(10)
    wall = wall1 - wall0
    print(f"machines: {len(endpoints)} Modbus (polled 1/s), {clamps} current clamps")
    print(f"window: {wall:.1f} s, Modbus reads ok {ok}, failed {failed}")
    print(f"simulator CPU: {100 * (cpu1 - cpu0) / wall:.2f} % of one core (limit: 100 %)")
    print(f"simulator RSS: {rss:.1f} MiB")
    print(f"poller CPU (for reference): {100 * (own1 - own0) / wall:.2f} % of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
