"""What the gateway's /metrics and /healthz say of its devices, whatever protocol they speak.

Four machines of the simulators (Modbus, MTConnect, SLMP, OPC UA) are switched off after
their endpoints were noted; the gateway polls them, and each one's failures by reason and
its circuit breaker show, as the Modbus machines' always did.
"""

import asyncio
from pathlib import Path
from typing import Any

from services import Mosquitto
from simfactory import machine, mtconnect_machine, opcua_machine, slmp_machine, small_factory
from test_gateway_acceptance import ManualClock

from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.http import GatewayCollector, _health
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.runner import SimClock, Simulation, SimulationOptions

KINDS = {"lathe": "modbus", "mc": "mtconnect", "press": "slmp", "mill": "opcua"}


def _switched_off(tmp_path: Path, mosquitto: Mosquitto) -> dict[str, Any]:
    """A gateway configuration reading four machines whose devices are gone."""
    factory = small_factory(
        "health-works",
        7,
        ["lathe"],
        [
            machine("lathe", "lathe", 1, "ABCD"),
            mtconnect_machine("mc"),
            slmp_machine("press"),
            opcua_machine("mill"),
        ],
    )

    async def endpoints() -> dict[str, Any]:
        options = SimulationOptions(ephemeral_ports=True)
        async with Simulation([factory], SimClock(), options) as sim:
            return dict(sim.endpoints[factory.factory])

    config = gateway_config(
        factory,
        asyncio.run(endpoints()),
        gateway="gw-01",
        broker={"host": mosquitto.host, "port": mosquitto.port},
        outbox_path=tmp_path / "outbox.sqlite3",
    )
    for entry in config["machines"]:
        device = entry["source"][KINDS[entry["id"]]]
        device.update(timeout_s=0.5, failures_to_open=2, open_s=3600)
    return config


def test_every_device_reports_its_failures_and_its_circuit(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    config = GatewayConfig.model_validate(_switched_off(tmp_path, mosquitto))
    assert {m.id: m.source.kind for m in config.machines} == KINDS

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        gateway = Gateway(config, clock=ManualClock(1_800_000_000.0))
        await gateway.start()
        try:
            for _ in range(3):
                for name in KINDS:
                    await gateway.poll(name)
            families = {f.name: f for f in GatewayCollector(gateway).collect()}
            return families, _health(gateway)
        finally:
            await gateway.stop()

    families, health = asyncio.run(scenario())
    errors: dict[str, dict[str, float]] = {}
    for sample in families["kyoso_gateway_poll_errors"].samples:
        errors.setdefault(sample.labels["machine"], {})[sample.labels["reason"]] = sample.value
    assert errors.keys() == KINDS.keys(), errors
    for name, reasons in errors.items():
        assert sum(reasons.values()) >= 3, (name, reasons)  # one a poll at least
    # the polling devices fail their requests, then their circuits refuse the third poll
    for name in ("lathe", "mc", "press"):
        assert errors[name]["circuit_open"] >= 1, (name, errors[name])
    circuits = {
        s.labels["machine"]: s.value for s in families["kyoso_gateway_circuit_open"].samples
    }
    assert {n: circuits[n] for n in ("lathe", "mc", "press")} == dict.fromkeys(
        ("lathe", "mc", "press"), 1
    )
    assert circuits.keys() == KINDS.keys()
    seconds = {s.labels["machine"] for s in families["kyoso_gateway_poll_seconds"].samples}
    assert seconds == KINDS.keys()
    assert {n: m["circuit"] for n, m in health["machines"].items() if n != "mill"} == dict.fromkeys(
        ("lathe", "mc", "press"), "open"
    )
    assert "circuit" in health["machines"]["mill"]
