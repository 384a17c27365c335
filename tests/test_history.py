"""Backfilled history: exact against the ground truth, valid on the wire, counters as read."""

import itertools
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from simfactory import machine, small_factory

from kyoso.contract import (
    COUNTER_GOOD,
    COUNTER_REJECT,
    MAX_MESSAGE_BYTES,
    InvalidIdError,
    MachineState,
    Sample,
    decode,
    encode,
    samples_topic,
)
from kyoso.gateway.machine import counter_delta
from kyoso.gateway.modbus_decode import decode_number
from kyoso.simulators.behaviour import COUNTER_MODULUS, MachineModel
from kyoso.simulators.config import (
    FactoryConfig,
    ModbusSourceConfig,
    MTConnectSourceConfig,
    OpcuaSourceConfig,
    RegisterMapConfig,
    SlmpSourceConfig,
    WordOrder,
    load_factory,
    shipped_factories,
)
from kyoso.simulators.endpoints import AgentEndpoint, Endpoint, ServerEndpoint, SlmpEndpoint
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.history import BATCH_SAMPLES, history_batches, history_samples
from kyoso.simulators.registers import (
    ALARM,
    GOOD_COUNTER,
    LOAD_PCT,
    POWER_KW,
    REJECT_COUNTER,
    Field,
    MeterReader,
    RegisterImage,
    register_image,
)
from kyoso.simulators.runner import FactorySimulation

ORIGIN = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday, 09:00 in Tokyo
HOUR = 3600.0
DAY = 86_400.0
FACTORIES = [load_factory(p) for p in shipped_factories()]
IDS = [f.factory for f in FACTORIES]


def true_seconds(model: MachineModel, start: float, end: float) -> dict[MachineState, float]:
    """Seconds per state in ``[start, end)``, straight from the model's segments."""
    totals: dict[MachineState, float] = {}
    for seg in model.segments:
        overlap = min(seg.end, end) - max(seg.start, start)
        if overlap > 0:
            totals[seg.state] = totals.get(seg.state, 0.0) + overlap
    return totals


def true_parts(model: MachineModel, start: float, end: float) -> tuple[int, int]:
    """(good, reject) parts completed in ``(start, end]``, segment by segment."""
    good = rejects = 0
    for seg in model.segments:
        good_end, rejects_end = seg.parts_until(end)
        good_start, rejects_start = seg.parts_until(start)
        good += good_end - good_start
        rejects += rejects_end - rejects_start
    return good, rejects


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (ORIGIN + DAY, ORIGIN + 2 * DAY),
        (ORIGIN + 30 * HOUR + 17.25, ORIGIN + 54 * HOUR - 0.125),
    ],
    ids=["aligned", "unaligned"],
)
@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_durations_and_parts_add_up_to_the_ground_truth(
    factory: FactoryConfig, start: float, end: float
) -> None:
    sim = FactorySimulation(factory, ORIGIN)
    history = history_samples(sim, start, end)
    assert list(history) == [m.id for m in factory.machines]
    for machine_id, samples in history.items():
        model = sim.models[machine_id]
        truth = true_seconds(model, start, end)
        for state in MachineState:
            summed = math.fsum(s.durations_s.get(state, 0.0) for s in samples)
            assert summed == pytest.approx(truth.get(state, 0.0), abs=1e-6), (machine_id, state)
        good = sum(s.counters[COUNTER_GOOD].delta for s in samples)
        rejects = sum(s.counters[COUNTER_REJECT].delta for s in samples)
        assert (good, rejects) == true_parts(model, start, end)
        assert good > 0, "the window should see work"
        for sample in samples:
            end_s = sample.ts.timestamp()
            assert sample.state is model.segment_at(end_s).state
            assert math.fsum(sample.durations_s.values()) == pytest.approx(sample.interval_s)


def test_an_unaligned_window_gets_partial_first_and_last_intervals() -> None:
    start, end = ORIGIN + 100.5, ORIGIN + 400.25
    history = history_samples(FactorySimulation(FACTORIES[0], ORIGIN), start, end)
    for samples in history.values():
        ends = [s.ts.timestamp() for s in samples]
        assert ends == [ORIGIN + 120, ORIGIN + 180, ORIGIN + 240, ORIGIN + 300, ORIGIN + 360, end]
        assert [s.interval_s for s in samples] == [19.5, 60, 60, 60, 60, 40.25]


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_batches_round_trip_on_their_topic_in_sequence(factory: FactoryConfig) -> None:
    sim = FactorySimulation(factory, ORIGIN)
    topic = samples_topic(factory.factory, "gw-01")
    batches = list(
        history_batches(
            sim, ORIGIN + 2 * HOUR, ORIGIN + 8 * HOUR, gateway="gw-01", session="s1", first_seq=7
        )
    )
    assert len(batches) == 6 * 60
    machines = [m.id for m in factory.machines]
    seqs: list[int] = []
    for batch in batches:
        assert decode(topic, encode(batch)) == batch
        assert batch.session == "s1"
        assert [s.machine for s in batch.samples] == machines
        assert len({s.ts for s in batch.samples}) == 1
        seqs.extend(s.seq for s in batch.samples)
    assert seqs == list(range(7, 7 + len(machines) * len(batches)))


def test_samples_carry_what_the_simulators_gateway_config_reads() -> None:
    for factory in FACTORIES:
        endpoints: dict[str, Endpoint | AgentEndpoint | SlmpEndpoint | ServerEndpoint] = {
            m.id: Endpoint("127.0.0.1", 5020, 1)
            for m in factory.machines
            if isinstance(m.source, ModbusSourceConfig)
        }
        endpoints.update(
            (m.id, AgentEndpoint("127.0.0.1", 5024, m.id))
            for m in factory.machines
            if isinstance(m.source, MTConnectSourceConfig)
        )
        endpoints.update(
            (m.id, SlmpEndpoint("127.0.0.1", 5032, "tcp", "3e"))
            for m in factory.machines
            if isinstance(m.source, SlmpSourceConfig)
        )
        endpoints.update(
            (m.id, ServerEndpoint("127.0.0.1", 4840, m.id))
            for m in factory.machines
            if isinstance(m.source, OpcuaSourceConfig)
        )
        config = gateway_config(
            factory, endpoints, gateway="gw-01", broker={}, outbox_path=Path("unused")
        )
        history = history_samples(FactorySimulation(factory, ORIGIN), ORIGIN, ORIGIN + HOUR)
        for entry in config["machines"]:
            for sample in history[entry["id"]]:
                assert sample.counters.keys() == entry["counters"].keys()
                assert list(sample.signals) == entry["signals"]
                assert (sample.alarm is not None) == ("alarm" in entry["state"])
                assert sample.missing == []


def decoded(image: RegisterImage, field: Field, word_order: WordOrder) -> int | float:
    """A holding register value as the gateway decodes it."""
    words = [image.holding[field.address + i] for i in range(field.count)]
    return decode_number(words, field.dtype, word_order)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_modbus_values_are_those_the_gateway_decodes_from_the_registers(
    factory: FactoryConfig,
) -> None:
    sim = FactorySimulation(factory, ORIGIN)
    history = history_samples(sim, ORIGIN + DAY, ORIGIN + DAY + HOUR)
    for config in factory.machines:
        source = config.source
        if not isinstance(source, RegisterMapConfig):  # Modbus, or SLMP on D devices
            continue
        model = sim.models[config.id]
        meters = MeterReader(model)
        order = source.word_order
        for sample in history[config.id]:
            at = sample.ts.timestamp()
            image = register_image(model.snapshot(at), source, name=config.id, meters=meters.at(at))
            assert sample.alarm == decoded(image, ALARM, order)
            assert sample.counters[COUNTER_GOOD].total == decoded(image, GOOD_COUNTER, order)
            assert sample.counters[COUNTER_REJECT].total == decoded(image, REJECT_COUNTER, order)
            assert sample.signals["load_pct"].last == decoded(image, LOAD_PCT, order)
            assert sample.signals["power_kw"].last == decoded(image, POWER_KW, order)


def total(sample: Sample, counter: str) -> int:
    """The raw counter a sample carries; history always carries one."""
    value = sample.counters[counter].total
    assert value is not None
    return value


def expected_totals(
    samples: list[Sample], counter: str, start: int, zone: ZoneInfo | None
) -> list[int]:
    """The raw counter at each sample's end, from the deltas alone.

    It starts at ``start`` and, with a ``zone``, restarts from 0 at each local midnight.
    Midnights fall on interval ends here, so a sample ending at one reads 0 and all its
    parts belong to the day before.
    """
    totals = []
    count = start
    day = samples[0].ts.astimezone(zone).date() if zone is not None else None
    for sample in samples:
        if zone is not None and (today := sample.ts.astimezone(zone).date()) != day:
            count, day = 0, today
        else:
            count += sample.counters[counter].delta
        totals.append(count % COUNTER_MODULUS)
    return totals


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_totals_roll_over_and_reset_as_the_registers_do(factory: FactoryConfig) -> None:
    history = history_samples(
        FactorySimulation(factory, ORIGIN), ORIGIN, ORIGIN + 2 * DAY, interval_s=300
    )
    for config in factory.machines:
        samples = history[config.id]
        source = config.source
        start = source.counter_start if isinstance(source, RegisterMapConfig) else 0
        daily = isinstance(source, RegisterMapConfig) and source.counter_reset_daily
        zone = ZoneInfo(factory.calendars[config.calendar].timezone) if daily else None
        for counter in (COUNTER_GOOD, COUNTER_REJECT):
            totals = [total(s, counter) for s in samples]
            assert totals == expected_totals(samples, counter, start, zone), (config.id, counter)
        pairs = list(itertools.pairwise(samples))
        drops = [
            total(b, COUNTER_GOOD)
            for a, b in pairs
            if total(b, COUNTER_GOOD) < total(a, COUNTER_GOOD)
        ]
        if config.id in ("cnc-04", "imm-04"):
            assert start > COUNTER_MODULUS - 10_000
            assert len(drops) == 1, "a good-part counter near 2**32 rolls over once"
            # The gateway's own rule derives the same deltas from successive totals.
            for a, b in pairs:
                derived = counter_delta(total(a, COUNTER_GOOD), total(b, COUNTER_GOOD), 32)
                assert derived == b.counters[COUNTER_GOOD].delta
        elif daily:
            assert drops, f"{config.id} resets at midnight"
            assert set(drops) == {0}
        else:
            assert not drops, f"{config.id} neither rolls over nor resets"


def test_a_factory_of_more_than_batch_samples_machines_splits_each_interval() -> None:
    machines = [machine(f"m-{i:03d}", f"s{i // 200}", i % 200 + 1, "ABCD") for i in range(251)]
    factory = small_factory("big", 9, ["s0", "s1"], machines)
    topic = samples_topic("big", "gw-01")
    batches = list(
        history_batches(FactorySimulation(factory, ORIGIN), ORIGIN, ORIGIN + 120, gateway="gw-01")
    )
    assert [len(b.samples) for b in batches] == [BATCH_SAMPLES, 1, BATCH_SAMPLES, 1]
    assert len({b.session for b in batches}) == 1
    seqs = [s.seq for b in batches for s in b.samples]
    assert seqs == list(range(502))
    for batch in batches:
        payload = encode(batch)
        assert len(payload) < MAX_MESSAGE_BYTES / 2
        assert decode(topic, payload) == batch


def test_history_is_reproducible() -> None:
    def one_hour() -> list[bytes]:
        sim = FactorySimulation(FACTORIES[0], ORIGIN)
        batches = history_batches(sim, ORIGIN, ORIGIN + HOUR, gateway="gw-01", session="s1")
        return [encode(b) for b in batches]

    assert one_hour() == one_hour()


def test_an_empty_window_publishes_nothing() -> None:
    sim = FactorySimulation(FACTORIES[0], ORIGIN)
    assert list(history_batches(sim, ORIGIN + 60, ORIGIN + 60, gateway="gw-01")) == []


@pytest.mark.parametrize(
    ("start", "end", "options", "message"),
    [
        (ORIGIN - 1, ORIGIN + 60, {}, "before the simulation origin"),
        (ORIGIN + 60, ORIGIN, {}, "before it starts"),
        (ORIGIN, ORIGIN + 60, {"interval_s": 0}, "interval_s"),
        (ORIGIN, ORIGIN + 60, {"interval_s": 3601}, "interval_s"),
        (ORIGIN, ORIGIN + 60, {"first_seq": -1}, "first_seq"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    start: float, end: float, options: dict[str, Any], message: str
) -> None:
    sim = FactorySimulation(FACTORIES[0], ORIGIN)
    with pytest.raises(ValueError, match=message):
        history_batches(sim, start, end, gateway="gw-01", **options)
    with pytest.raises(ValueError, match=message):
        history_samples(sim, start, end, **options)


def test_bad_ids_are_refused() -> None:
    sim = FactorySimulation(FACTORIES[0], ORIGIN)
    with pytest.raises(InvalidIdError, match="gateway"):
        history_batches(sim, ORIGIN, ORIGIN + 60, gateway="GW 1")
    with pytest.raises(InvalidIdError, match="session"):
        history_batches(sim, ORIGIN, ORIGIN + 60, gateway="gw-01", session="")
