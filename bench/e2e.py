"""End to end: a machine's state register changes, how long until the store and the API say so.

Starts a Mosquitto, ``kyoso ingest`` into a SQLite store, ``kyoso api`` over the same store
(as shipped: live views read again within ``view_ttl_s``) and, in this process, a
simulated Modbus TCP machine whose state register the bench sets (counters and signals
are the simulator's own). Then, twice, a ``kyoso gateway`` polling the machine every 1 s
with samples every 10 s: first with ``min_sample_s: null`` (a change waits for the
interval's end, as before), then with
``min_sample_s: 1.0`` (a change closes the sample at the poll that sees it). Each run flips
the register between running and setup, each flip at a random moment once the previous one
is visible, and times it until the store's latest sample of the machine (read every 20 ms)
and the API's ``/v1/factories/{f}/machines/{m}`` (asked every 20 ms) show the new state.
The raw limit beside it: QoS 1 publish to delivery through the same broker in the same run,
and the poll period, which bounds how soon the gateway can see a change. ``--json PATH``
also writes the figures there (for ``python -m bench``).

    .venv/bin/python bench/e2e.py --flips 20 --before-flips 5
"""

import argparse
import asyncio
import dataclasses
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from procstat import free_port, start_mosquitto

from kyoso.api.keys import ApiKeyStore, parse_scope
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MachineState
from kyoso.simulators.behaviour import MachineModel, Snapshot, machine_seed
from kyoso.simulators.config import FactoryConfig
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import ModbusServers
from kyoso.store import SqliteStore

FACTORY, GATEWAY, MACHINE = "e2e-factory", "gw-e2e", "m1"
POLL_S, PUBLISH_S = 1.0, 10.0
RULES = CapacityRules()  # the API as shipped: its freshness bounds are part of the figure
LOOK_EVERY_S = 0.02
FLIPS = (MachineState.RUNNING, MachineState.SETUP)
KYOSO = str(Path(sys.executable).with_name("kyoso"))


class FlipModel(MachineModel):
    """The simulator's machine, showing ``shown`` in its state register and no alarm."""

    shown = MachineState.IDLE

    def snapshot(self, moment: float) -> Snapshot:
        return dataclasses.replace(super().snapshot(moment), state=self.shown, alarm=0)


def _factory() -> FactoryConfig:
    """One quick machine, on a calendar planned around the clock (idle is never planned)."""
    return FactoryConfig.model_validate(
        {
            "factory": FACTORY,
            "name": "End to end",
            "seed": 3,
            "calendars": {
                "always": {
                    "timezone": "UTC",
                    "shifts": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                "start": "00:00", "end": "00:00"}],
                }
            },
            "modbus_servers": {"line": {"port": 0}},
            "machines": [
                {
                    "id": MACHINE,
                    "name": "Machine one",
                    "calendar": "always",
                    "capabilities": [{"process": "cnc_turning"}],
                    "ideal_cycle_time_s": 28,
                    "behaviour": {"cycle_time_s": 30, "job_parts": [5, 20], "setup_s": [300, 900],
                                  "idle_gap_s": 600, "mtbf_h": 1, "mttr_min": 10},
                    "source": {"kind": "modbus", "server": "line", "unit": 1},
                }
            ],
        }
    )  # fmt: skip


@dataclass
class Flip:
    """One change of the register: when it happened and when each reader saw it."""

    at: float
    """time.monotonic() of the change."""
    wall: float
    """time.time() of the change."""
    stored: float = 0.0
    """Monotonic time the store's latest sample showed it."""
    served: float = 0.0
    """Monotonic time the API showed it."""
    polled: float = 0.0
    """Wall time of the poll that saw it (the ts of the sample that showed it)."""
    received: float = 0.0
    """Wall time the ingest received that sample."""


class Readers:
    """The store, read directly, and the API, over HTTP with an admin key."""

    def __init__(self, store: SqliteStore, api_port: int, key: str) -> None:
        self.store = store
        self.api_port = api_port
        self.headers = {"Authorization": f"Bearer {key}"}
        self.path = f"/v1/factories/{FACTORY}/machines/{MACHINE}"

    async def stored(self, state: MachineState, since_wall: float, flip: Flip) -> float:
        """When the store's latest sample shows ``state`` in a sample ending after the flip."""
        while True:
            latest = (await self.store.latest_samples(FACTORY)).get(MACHINE)
            now = time.monotonic()
            if latest is not None:
                sample = latest.sample
                if sample.state is state and sample.ts.timestamp() >= since_wall:
                    flip.polled = sample.ts.timestamp()
                    flip.received = latest.received_at.timestamp()
                    return now
            await asyncio.sleep(LOOK_EVERY_S)

    async def served(self, state: MachineState) -> float:
        """When the API shows ``state`` (the previous state is shown until then)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=5)
        try:
            while True:
                body = await asyncio.to_thread(self._get, connection)
                now = time.monotonic()
                if body.get("state") == state.value:
                    return now
                await asyncio.sleep(LOOK_EVERY_S)
        finally:
            connection.close()

    def _get(self, connection: http.client.HTTPConnection) -> dict[str, Any]:
        connection.request("GET", self.path, headers=self.headers)
        response = connection.getresponse()
        body = response.read()
        if response.status == 404:  # not described yet
            return {}
        if response.status != 200:
            raise RuntimeError(f"the API answered {response.status}: {body[:200]!r}")
        found: dict[str, Any] = json.loads(body)
        return found


async def _flips(
    model: FlipModel, readers: Readers, count: int, spread_s: float, timeout_s: float
) -> list[Flip]:
    """One unmeasured flip that shows the gateway is through, then ``count`` measured ones,
    each ``uniform(0, spread_s)`` after the previous one became visible everywhere."""
    done: list[Flip] = []
    for i in range(count + 1):
        state = FLIPS[0] if model.shown is not FLIPS[0] else FLIPS[1]
        flip = Flip(time.monotonic(), time.time())
        model.shown = state
        async with asyncio.timeout(timeout_s):
            flip.stored, flip.served = await asyncio.gather(
                readers.stored(state, flip.wall, flip), readers.served(state)
            )
        if i:
            done.append(flip)
        await asyncio.sleep(random.uniform(0, spread_s))
    return done


def _percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))]


def _figures(values: list[float], unit: float = 1.0, digits: int = 2, suffix: str = "s") -> str:
    return "  ".join(
        f"{name} {_percentile(values, q) * unit:.{digits}f} {suffix}"
        for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
    )


def _summary(values: list[float]) -> dict[str, float]:
    return {name: _percentile(values, q) for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))}


def _report(label: str, flips: list[Flip]) -> dict[str, Any]:
    stored, served = [f.stored - f.at for f in flips], [f.served - f.at for f in flips]
    print(f"{label}, {len(flips)} flips:")
    print(f"  register -> store : {_figures(stored)}")
    print(f"  register -> API   : {_figures(served)}")
    steps = {
        "register -> the poll that saw it (the sample's end)": [f.polled - f.wall for f in flips],
        "-> the ingest received it": [f.received - f.polled for f in flips],
        "-> readable in the store": [f.stored - f.at - (f.received - f.wall) for f in flips],
        "-> the API": [f.served - f.stored for f in flips],
    }
    print("  steps (p50 / max):")
    for name, values in steps.items():
        print(f"    {name}: {_percentile(values, 0.5):.3f} / {max(values):.3f} s")
    return {
        "flips": len(flips),
        "register_to_store_s": _summary(stored),
        "register_to_api_s": _summary(served),
    }


def _raw_broker(port: int, messages: int) -> list[float]:
    """QoS 1 publish to delivery through the broker, one message at a time."""
    arrived = threading.Event()
    subscribed = threading.Event()

    def client(role: str) -> mqtt.Client:
        made = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-e2e-{role}-{uuid.uuid4().hex[:6]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        made.connect("127.0.0.1", port)
        made.loop_start()
        return made

    subscriber = client("sub")
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.on_message = lambda *_: arrived.set()
    subscriber.subscribe("bench/e2e/raw", qos=1)
    subscribed.wait(10)
    publisher = client("pub")
    payload = os.urandom(600)  # about a one-sample batch
    latencies = []
    for _ in range(messages):
        arrived.clear()
        started = time.perf_counter()
        publisher.publish("bench/e2e/raw", payload, qos=1)
        if not arrived.wait(5):
            raise RuntimeError("a raw message was not delivered")
        latencies.append(time.perf_counter() - started)
    for made in (publisher, subscriber):
        made.disconnect()
        made.loop_stop()
    return latencies


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _answers(port: int, path: str, needle: str = "") -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status == 200 and needle in response.read().decode()
    except OSError:
        return False
    finally:
        connection.close()


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=out)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


async def _run_gateway(
    work: Path,
    model: FlipModel,
    readers: Readers,
    endpoints: dict[str, Any],
    broker_port: int,
    *,
    min_sample_s: float | None,
    flips: int,
) -> list[Flip]:
    config = gateway_config(
        _factory(),
        endpoints,
        gateway=GATEWAY,
        broker={"host": "127.0.0.1", "port": broker_port},
        outbox_path=work / f"outbox-{min_sample_s}.sqlite3",
        poll_interval_s=POLL_S,
        publish_interval_s=PUBLISH_S,
    )
    config["min_sample_s"] = min_sample_s
    config["http"] = {"port": 0}
    path = work / f"gateway-{min_sample_s}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [KYOSO, "--log-level", "WARNING", "gateway", "--config", str(path)]
    gateway = _start(command, {}, work / "gateway.log")
    try:
        # Before: a flip may wait for a whole interval. Flips land at random phases of it.
        spread = PUBLISH_S if min_sample_s is None else 2 * POLL_S
        return await _flips(model, readers, flips, spread, timeout_s=3 * PUBLISH_S)
    finally:
        await asyncio.to_thread(_stop, gateway)


async def _bench(
    work: Path, broker_port: int, api_port: int, key: str, args: Any
) -> dict[str, Any]:
    factory = _factory()
    [machine] = factory.machines
    model = FlipModel(
        machine.id,
        machine.behaviour,
        factory.calendars[machine.calendar],
        machine_seed(factory.seed, machine.id),
        time.time(),
    )
    async with (
        ModbusServers(factory, {machine.id: model}, time.time) as servers,
        SqliteStore(work / "store.sqlite3", synchronous="normal") as store,
    ):
        readers = Readers(store, api_port, key)
        endpoints = dict(servers.endpoints)
        runs = [(None, args.before_flips), (1.0, args.flips)]
        figures = {}
        for min_sample_s, flips in runs:
            if not flips:
                continue
            done = await _run_gateway(
                work, model, readers, endpoints, broker_port, min_sample_s=min_sample_s,
                flips=flips,
            )  # fmt: skip
            label = "before (min_sample_s: null)" if min_sample_s is None else "after (1.0)"
            figures["before" if min_sample_s is None else "after"] = _report(label, done)
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=20, help="flips with min_sample_s 1.0")
    parser.add_argument(
        "--before-flips", type=int, default=5, help="flips with min_sample_s null (0: skip)"
    )
    parser.add_argument("--raw-messages", type=int, default=200, help="raw broker messages")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kyoso-bench-e2e-") as tmp:
        work = Path(tmp)
        broker, broker_port = start_mosquitto(tmp)
        store_path = work / "store.sqlite3"
        ingest_port, api_port = free_port(), free_port()
        ingest = _start(
            [KYOSO, "--log-level", "WARNING", "ingest"],
            {
                "KYOSO_INGEST_STORE": "sqlite",
                "KYOSO_INGEST_SQLITE_PATH": str(store_path),
                "KYOSO_INGEST_MQTT__HOST": "127.0.0.1",
                "KYOSO_INGEST_MQTT__PORT": str(broker_port),
                "KYOSO_INGEST_MQTT__CLIENT_ID": "bench-e2e-ingest",
                "KYOSO_INGEST_HTTP__PORT": str(ingest_port),
                "KYOSO_INGEST_DEAD_LETTER_PATH": str(work / "dead-letters.sqlite3"),
            },
            work / "ingest.log",
        )
        processes = [ingest, broker]
        try:
            _wait(
                lambda: _answers(ingest_port, "/metrics", "kyoso_ingest_broker_connected 1.0"),
                "the ingest",
            )
            keys = ApiKeyStore(work / "keys.sqlite3", create=True)
            key = keys.create("bench", parse_scope("admin")).key
            keys.close()
            api = _start(
                [KYOSO, "--log-level", "WARNING", "api"],
                {
                    "KYOSO_API_STORE": "sqlite",
                    "KYOSO_API_SQLITE_PATH": str(store_path),
                    "KYOSO_API_KEYS": str(work / "keys.sqlite3"),
                    "KYOSO_API_BOOKINGS_PATH": str(work / "bookings.sqlite3"),
                    "KYOSO_API_PROFILE_CACHE_PATH": str(work / "profiles.sqlite3"),
                    "KYOSO_API_PORT": str(api_port),
                    "KYOSO_API_LIMITS__RATE_PER_S": "1000",
                    "KYOSO_API_LIMITS__BURST": "1000",
                },
                work / "api.log",
            )
            processes.insert(0, api)
            _wait(lambda: _answers(api_port, "/healthz"), "the API")
            print(
                f"1 simulated Modbus TCP machine, gateway polling every {POLL_S:g} s with "
                f"samples every {PUBLISH_S:g} s, kyoso ingest -> SQLite, kyoso api "
                f"(view_ttl_s {RULES.view_ttl_s:g}, cache_ttl_s {RULES.cache_ttl_s:g}); "
                f"mosquitto, loopback, {os.cpu_count()} cores"
            )
            figures = asyncio.run(_bench(work, broker_port, api_port, key, args))
            raw = _raw_broker(broker_port, args.raw_messages)
            print(
                f"raw limit: broker publish -> deliver (QoS 1, same broker): "
                f"{_figures(raw, 1000, 2, 'ms')}; the gateway sees a change at its next "
                f"poll: 0 to {POLL_S:g} s"
            )
            figures["raw_broker_s"] = _summary(raw)
            figures.update(
                poll_s=POLL_S,
                publish_s=PUBLISH_S,
                view_ttl_s=RULES.view_ttl_s,
                cache_ttl_s=RULES.cache_ttl_s,
            )
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2) + "\n")
        except Exception:
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-2000:]}", file=sys.stderr)
            raise
        finally:
            for process in processes:
                _stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
