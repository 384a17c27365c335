"""Whole simulated factories: ground truth, time scaling, clamps over MQTT, the CLI."""

import asyncio
import itertools
import json
import logging
import socket
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.client import AsyncModbusTcpClient
from services import Mosquitto

from kyoso.contract import MachineState
from kyoso.simulators.clamp import sensor_topic
from kyoso.simulators.config import ClampSourceConfig, load_factory, shipped_factories
from kyoso.simulators.endpoints import Endpoint
from kyoso.simulators.groundtruth import read_ground_truth, state_seconds
from kyoso.simulators.runner import SimClock, Simulation, SimulationOptions

START = datetime(2026, 1, 7, 0, 0, tzinfo=UTC).timestamp()  # a Wednesday, 09:00 in Tokyo
FACTORIES = [load_factory(p) for p in shipped_factories()]


def run_simulation(options: SimulationOptions, seconds: float, scale: float) -> None:
    async def main() -> None:
        async with Simulation(FACTORIES, SimClock(START, scale), options):
            await asyncio.sleep(seconds)

    asyncio.run(main())


@pytest.mark.integration
def test_same_seed_same_ground_truth_and_tiling(tmp_path: Path) -> None:
    """Two runs with a day of backfill at 600x give identical logs for their common span."""
    runs = []
    for name in ("a", "b"):
        options = SimulationOptions(
            backfill_s=86_400,
            ephemeral_ports=True,
            ground_truth_dir=tmp_path / name,
            flush_interval_s=0.2,
        )
        run_simulation(options, seconds=1.5, scale=600)
        runs.append(
            {
                f.factory: read_ground_truth(tmp_path / name / f"{f.factory}.jsonl")
                for f in FACTORIES
            }
        )
    first, second = runs
    # The live part ran on past the backfill at 600x: ~15 simulated minutes in 1.5 s.
    live = [s for machines in first.values() for segs in machines.values() for s in segs]
    assert any(s.end.timestamp() > START + 300 for s in live)
    for factory in FACTORIES:
        for machine in factory.machines:
            a = first[factory.factory][machine.id]
            b = second[factory.factory][machine.id]
            common = min(len(a), len(b))
            assert common > 3
            assert a[:common] == b[:common]
            assert a[0].start == datetime.fromtimestamp(START - 86_400, UTC)
            for before, after in itertools.pairwise(a):
                assert before.end == after.start


@pytest.mark.integration
def test_modbus_registers_follow_the_simulated_clock() -> None:
    async def main() -> None:
        options = SimulationOptions(ephemeral_ports=True)
        async with Simulation(FACTORIES, SimClock(START, 1.0), options) as sim:
            endpoint = sim.endpoints["okada-machining"]["cnc-03"]
            assert isinstance(endpoint, Endpoint)
            client = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=2)
            await client.connect()
            reply = await client.read_holding_registers(0, count=2, device_id=endpoint.unit)
            client.close()
            snap = sim.model("okada-machining", "cnc-03").snapshot(sim.clock.now())
            codes = {"planned_stop": 0, "idle": 1, "setup": 2, "running": 3, "down": 4}
            assert reply.registers == [codes[snap.state.value], snap.alarm]

    asyncio.run(main())


@pytest.mark.integration
def test_clamps_publish_vendor_json_through_a_real_broker(mosquitto: Mosquitto) -> None:
    clamps = [
        (f, m) for f in FACTORIES for m in f.machines if isinstance(m.source, ClampSourceConfig)
    ]
    topics = {sensor_topic(m.source.sensor): (f.factory, m.id) for f, m in clamps}  # type: ignore[union-attr]
    received: dict[str, list[dict[str, object]]] = {t: [] for t in topics}
    subscribed = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe("sensors/+/tele/SENSOR")
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, msg: received[msg.topic].append(json.loads(msg.payload))
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert subscribed.wait(10)

        async def main() -> None:
            options = SimulationOptions(
                ephemeral_ports=True, mqtt_host=mosquitto.host, mqtt_port=mosquitto.port
            )
            async with Simulation(FACTORIES, SimClock(START, 10.0), options) as sim:
                await asyncio.sleep(3)
                for topic, (factory, machine) in topics.items():
                    model = sim.model(factory, machine)
                    good, rejects = model.totals_at(sim.clock.now())
                    last = received[topic][-1]
                    counters = last["COUNTER"]
                    assert isinstance(counters, dict)
                    assert 0 <= good - counters["C1"] <= 2  # a part may finish since
                    assert 0 <= rejects - counters["C2"] <= 1

        asyncio.run(main())
    finally:
        client.loop_stop()
        client.disconnect()
    for topic, messages in received.items():
        assert len(messages) >= 4, topic  # 5 s period at 10x over 3 s
        first = messages[0]
        assert set(first) == {"Time", "ENERGY", "COUNTER"}
        energy = first["ENERGY"]
        assert isinstance(energy, dict)
        assert energy["Current"] >= 0
        assert "+" not in str(first["Time"])
        assert "Z" not in str(first["Time"])


def test_ground_truth_state_seconds_add_up(tmp_path: Path) -> None:
    options = SimulationOptions(
        backfill_s=7 * 86_400, ephemeral_ports=True, ground_truth_dir=tmp_path
    )
    run_simulation(options, seconds=0.1, scale=1)
    truth = read_ground_truth(tmp_path / "mori-plastics.jsonl")
    start = datetime.fromtimestamp(START - 7 * 86_400, UTC)
    end = datetime.fromtimestamp(START - 86_400, UTC)
    for machine, segments in truth.items():
        seconds = state_seconds(segments, start, end)
        assert sum(seconds.values()) == pytest.approx((end - start).total_seconds()), machine
        assert seconds.get(MachineState.RUNNING, 0) > 0, machine


def kyoso(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kyoso.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_cli_check_reports_each_error_with_its_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    source = (shipped_factories()[0]).read_text()
    seed_line = source.splitlines().index("seed: 3303") + 1
    bad.write_text(
        source.replace("calendar: around-the-clock", "calendar: nope", 1).replace(
            "seed: 3303", "seed: x"
        )
    )
    result = kyoso("simulate", "--check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:{seed_line}: seed: Input should be a valid integer" in result.stderr
    good = kyoso("simulate", "--check")
    assert good.returncode == 0
    assert "okada-machining: 8 machines, ok" in good.stdout


def test_cli_list_and_bad_arguments() -> None:
    listing = kyoso("simulate", "--list")
    assert listing.returncode == 0
    assert "cnc-04" in listing.stdout
    assert "DCBA" in listing.stdout
    assert "clamp sensors/okada-clamp-01/tele/SENSOR" in listing.stdout
    for args in (["--backfill", "7 days"], ["--fault", "cnc-01=melt"], ["--start", "2026-01-05"]):
        result = kyoso("simulate", *args)
        assert result.returncode == 2, args
        assert "error:" in result.stderr


@pytest.mark.integration
def test_cli_runs_for_a_duration_and_writes_ground_truth(tmp_path: Path) -> None:
    result = kyoso(
        "simulate", "--ephemeral-ports", "--backfill", "1d", "--duration", "1s",
        "--ground-truth", str(tmp_path), "--fault", "cnc-02=busy:0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "okada-machining/cnc-02: modbus 127.0.0.1:" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{f.factory}.jsonl" for f in FACTORIES
    )


@pytest.mark.integration
def test_clamps_lose_nothing_when_the_broker_is_up_and_say_when_it_is_not(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """Readings before the first connection are not taken, so not lost: no warning then."""
    factory = next(f for f in FACTORIES if any(m.source.kind == "clamp" for m in f.machines))

    async def run(port: int) -> Simulation:
        options = SimulationOptions(ephemeral_ports=True, mqtt_host=mosquitto.host, mqtt_port=port)
        async with Simulation([factory], SimClock(START, 10.0), options) as sim:
            await asyncio.sleep(2)
        return sim

    with caplog.at_level(logging.WARNING, logger="kyoso.simulators.clamp"):
        up = asyncio.run(run(mosquitto.port))
    publisher = up.publishers[factory.factory]
    assert publisher.published > 0
    assert publisher.lost == 0
    assert not caplog.records
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind((mosquitto.host, 0))
        port = closed.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="kyoso.simulators.clamp"):
            down = asyncio.run(run(port))
    assert down.publishers[factory.factory].published == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"clamps: cannot reach broker {mosquitto.host}:{port}, retrying"
    ]
