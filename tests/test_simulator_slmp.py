"""The simulated MELSEC PLC: the Modbus twin's ground truth on D devices and bits.

The PLC's clock is driven by hand, so a shift passes in a moment; the gateway reads it over
real TCP (and UDP) sockets and publishes through a real Mosquitto, as the Modbus machines'
acceptance test does (tests/test_gateway_acceptance.py).
"""

import asyncio
from pathlib import Path

import pytest
from services import Mosquitto
from simfactory import slmp_machine, small_factory
from test_gateway_acceptance import (
    POLL_S,
    PUBLISH_S,
    ManualClock,
    SampleCollector,
    _check_against_truth,
    _wait_for_samples,
    poll_a_shift,
)
from test_gateway_acceptance import START as GATEWAY_START

from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.modbus_decode import Value
from kyoso.gateway.slmp import SlmpSource
from kyoso.gateway.slmp_config import SlmpConfig
from kyoso.simulators.config import (
    FACTORIES_DIR,
    FactoryConfig,
    SlmpSourceConfig,
    load_factory,
)
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import Fault, FaultKind
from kyoso.simulators.registers import (
    ALARM,
    GOOD_COUNTER,
    LOAD_PCT,
    REJECT_COUNTER,
    STATE,
    MeterReader,
    register_image,
)
from kyoso.simulators.runner import FactorySimulation, SimClock, Simulation, SimulationOptions
from kyoso.simulators.slmp import slmp_plcs

START = 1_767_772_800.0  # 2026-01-07 08:00 UTC


def _factory(timezone: str = "UTC", **source: object) -> FactoryConfig:
    config = small_factory("press-works", 2202, [], [slmp_machine("press-01", **source)])
    dumped = config.model_dump()
    dumped["calendars"]["days"]["timezone"] = timezone
    return FactoryConfig.model_validate(dumped)


def test_the_live_block_is_the_register_maps_at_every_moment() -> None:
    """D0-D9 hold what the Modbus twin's holding registers hold, in MELSEC's word order."""
    factory = _factory()
    sim = FactorySimulation(factory, START)
    model = sim.models["press-01"]
    source = factory.machines[0].source
    assert isinstance(source, SlmpSourceConfig)
    assert source.word_order == "CDAB"
    moment = [START]
    fields = {
        "state": {"device": f"D{STATE.address}"},
        "alarm": {"device": f"D{ALARM.address}"},
        "good": {"device": f"D{GOOD_COUNTER.address}", "type": "uint32"},
        "reject": {"device": f"D{REJECT_COUNTER.address}", "type": "uint32"},
        "load": {"device": f"D{LOAD_PCT.address}", "type": "float32"},
        "running": {"device": "X0"},
        "alarm_bit": {"device": "X1"},
    }

    async def scenario() -> list[tuple[float, dict[str, Value]]]:
        [plc] = slmp_plcs(factory, sim.models, lambda: moment[0]).values()
        await plc.start()
        seen: list[tuple[float, dict[str, Value]]] = []
        try:
            config = SlmpConfig.model_validate(
                {"host": "127.0.0.1", "port": plc.port, "frame": "4e", "fields": fields}
            )
            async with SlmpSource(config) as reader:
                while moment[0] < START + 12 * 3600:
                    moment[0] += 613
                    reading = await reader.poll()
                    assert reading.missing == {}
                    seen.append((moment[0], dict(reading.values)))
        finally:
            await plc.stop()
        return seen

    meters = MeterReader(model)
    states = set()
    for at, values in asyncio.run(scenario()):
        snap = model.snapshot(at)
        image = register_image(snap, source, name="press-01", meters=meters.at(at))
        assert values["state"] == source.state_codes[snap.state.value]
        assert values["alarm"] == snap.alarm
        assert values["good"] == snap.good_counter
        assert values["reject"] == snap.reject_counter
        assert values["running"] == image.discrete_inputs[0]
        assert values["alarm_bit"] == image.discrete_inputs[1]
        states.add(snap.state)
    assert len(states) >= 3  # the half day went through running, setup, idle...


def test_the_factory_file_accepts_slmp_machines() -> None:
    config = _factory(transport="udp", frame="4e", word_order="ABCD")
    source = config.machines[0].source
    assert isinstance(source, SlmpSourceConfig)
    assert (source.transport, source.frame, source.word_order) == ("udp", "4e", "ABCD")
    doubled = config.model_dump()
    doubled["modbus_servers"] = {"cell": {"port": 5032}}
    doubled["machines"][0]["source"]["port"] = 5032
    with pytest.raises(ValueError, match="machine press-01: port 5032 already used"):
        FactoryConfig.model_validate(doubled)


def test_sato_sheetmetals_punch_speaks_slmp_and_resets_daily() -> None:
    factory = load_factory(FACTORIES_DIR / "sato-sheetmetal.yaml")
    punch = next(m for m in factory.machines if m.id == "punch-01")
    assert isinstance(punch.source, SlmpSourceConfig)
    assert punch.source.port == 5032
    assert punch.source.counter_reset_daily
    assert "punch-01" not in factory.modbus_servers


def test_the_simulation_serves_and_lists_the_plc(tmp_path: Path) -> None:
    factory = _factory()
    options = SimulationOptions(
        ephemeral_ports=True, faults={"press-01": Fault(FaultKind.NO_RESPONSE)}
    )

    async def scenario() -> None:
        async with Simulation([factory], SimClock(START), options) as sim:
            endpoint = sim.endpoints["press-works"]["press-01"]
            assert str(endpoint).endswith("/tcp 3E")
            plc = sim.plc("press-works", "press-01")
            fields = {"state": {"device": "D0"}}
            config = SlmpConfig.model_validate(
                {"host": "127.0.0.1", "port": plc.port, "timeout_s": 0.5, "fields": fields}
            )
            async with SlmpSource(config) as reader:
                assert (await reader.poll()).missing.keys() == {"state"}  # the fault holds
                sim.set_fault("press-works", "press-01", None)
                assert (await reader.poll()).missing == {}

    asyncio.run(scenario())


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_the_gateway_reads_the_ground_truth_through_the_plc(
    mosquitto: Mosquitto, tmp_path: Path, transport: str
) -> None:
    """The gateway polls the PLC in simulated time, the PLC restarts mid-shift, and the
    states and parts it publishes are the truth's."""
    factory = _factory(timezone="Asia/Tokyo", transport=transport)
    clock = ManualClock(GATEWAY_START)
    sims = {factory.factory: FactorySimulation(factory, GATEWAY_START)}
    collector = SampleCollector(mosquitto)

    async def main() -> dict[str, list[float]]:
        [plc] = slmp_plcs(factory, sims[factory.factory].models, clock.now).values()
        await plc.start()
        config = gateway_config(
            factory,
            {"press-01": plc.endpoint},
            gateway="gw-01",
            broker={"host": mosquitto.host, "port": mosquitto.port},
            outbox_path=tmp_path / "outbox.sqlite3",
            poll_interval_s=POLL_S,
            publish_interval_s=PUBLISH_S,
        )
        assert config["machines"][0]["source"]["slmp"]["transport"] == transport
        gateway = Gateway(GatewayConfig.model_validate(config), clock=clock)

        async def before_poll(step: int) -> None:
            if step == 900:  # a power cycle mid-job: the gateway reconnects by itself
                await plc.restart()

        polls = await poll_a_shift(gateway, clock, "press-01", before_poll)
        await plc.stop()
        return polls

    try:
        polls = asyncio.run(main())
        assert _wait_for_samples(collector, sims)
    finally:
        collector.close()
    _check_against_truth(collector.batches, sims, polls)
