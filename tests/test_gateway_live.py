"""The gateway's own loops against a simulated factory in compressed time.

Faulty devices (dead, slow, busy) must not slow the others; samples flow to the broker;
/healthz, /readyz and /metrics answer.
"""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from services import Mosquitto, http_get

from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.http import health_server
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import Fault, FaultKind
from kyoso.simulators.runner import SimClock, Simulation, SimulationOptions

START = datetime(2026, 1, 7, 0, 0, tzinfo=UTC).timestamp()
SCALE = 5.0
POLL_S = 1.0
RUN_WALL_S = 4.0


@pytest.mark.integration
def test_faulty_devices_do_not_slow_the_others(mosquitto: Mosquitto, tmp_path: Path) -> None:
    factory = next(
        f for f in map(load_factory, shipped_factories()) if f.factory == "mori-plastics"
    )
    faults = {
        "imm-02": Fault(FaultKind.NO_RESPONSE),
        "imm-03": Fault(FaultKind.SLOW, delay_s=0.8),
        "imm-04": Fault(FaultKind.BUSY),
    }

    async def main() -> tuple[dict[str, int], str, tuple[int, int, int]]:
        clock = SimClock(START, SCALE)
        options = SimulationOptions(ephemeral_ports=True, faults=faults)
        async with Simulation([factory], clock, options) as sim:
            config = gateway_config(
                factory,
                sim.endpoints[factory.factory],
                gateway="gw-01",
                broker={"host": mosquitto.host, "port": mosquitto.port},
                outbox_path=tmp_path / "outbox.sqlite3",
                sensor_broker={"host": mosquitto.host, "port": mosquitto.port},
                poll_interval_s=POLL_S,
                publish_interval_s=5.0,
            )
            for machine in config["machines"]:
                if "modbus" in machine["source"]:
                    machine["source"]["modbus"]["timeout_s"] = 0.5
            config["http"] = {"port": 0}
            gateway = Gateway(GatewayConfig.model_validate(config), clock=clock)
            health = health_server(gateway, gateway.config.http)
            await health.start()
            stop = asyncio.Event()
            task = asyncio.create_task(gateway.run(stop))
            await asyncio.sleep(RUN_WALL_S)
            base = f"http://127.0.0.1:{health.port}"
            metrics = await asyncio.to_thread(http_get, base + "/metrics")
            ready = await asyncio.to_thread(http_get, base + "/readyz")
            missing = await asyncio.to_thread(http_get, base + "/nope")
            polls = dict(gateway.polls)
            stop.set()
            await task
            await health.stop()
            acked = gateway.publisher.stats.acked_samples
            assert metrics[0] == 200
            return polls, metrics[1], (ready[0], missing[0], acked)

    polls, metrics, (ready, missing, acked) = asyncio.run(main())
    expected = RUN_WALL_S * SCALE / POLL_S
    # The healthy machine keeps its period within 10 % while its neighbours (each behind its
    # own endpoint) are dead, slow or busy.
    assert abs(polls["imm-01"] - expected) <= 0.1 * expected, polls
    assert polls["imm-02"] < expected / 2  # timeouts, then an open circuit
    assert ready == 200
    assert missing == 404
    assert acked > 0
    assert 'kyoso_gateway_polls_total{machine="imm-01"}' in metrics
    assert 'kyoso_gateway_poll_errors_total{machine="imm-02",reason="timeout"}' in metrics
    assert 'reason="exception_6"' in metrics
    assert 'kyoso_gateway_counter_implausible_total{counter="good",machine="imm-01"} 0.0' in metrics
