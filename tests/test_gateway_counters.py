"""Part counters that cannot lie: a drop is a reset only once confirmed, an implausible
jump is refused, and a real Modbus device reading 0 for one poll adds no phantom parts.

The rule is stated in kyoso/gateway/machine.py; each test names the readings it feeds.
"""

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from services import Mosquitto
from simfactory import machine, small_factory
from test_gateway_acceptance import ManualClock
from test_gateway_config import ENV, EXAMPLE
from test_gateway_publisher import Collector, until

from kyoso.contract import COUNTER_GOOD, Sample, ShiftCalendar
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import CounterConfig, GatewayConfig, MachineConfig, load_config
from kyoso.gateway.machine import CounterTracker, MachineTracker
from kyoso.simulators.behaviour import MachineModel, Snapshot, machine_seed
from kyoso.simulators.config import ModbusSourceConfig
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import ModbusServers

MONDAY_NOON = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
CALENDAR = ShiftCalendar.model_validate(
    {"timezone": "UTC", "shifts": [{"days": ["mon"], "start": "06:00", "end": "18:00"}]}
)


def feed(counter: CounterTracker, raws: Sequence[int]) -> list[int | None]:
    """What each reading books, the readings one second apart."""
    return [counter.read(raw, MONDAY_NOON + i) for i, raw in enumerate(raws)]


def unlimited(width_bits: int = 32) -> CounterTracker:
    return CounterTracker("m1", "good", width_bits=width_bits, max_parts_per_s=None)


def at_most(parts_per_s: float, width_bits: int = 32) -> CounterTracker:
    return CounterTracker("m1", "good", width_bits=width_bits, max_parts_per_s=parts_per_s)


# -- the rule, reading by reading ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [None, 0.15])
def test_a_transient_zero_counts_nothing(rate: float | None) -> None:
    """The defect: 0 read once between 1,000,000 and 1,000,001 was 1,000,001 parts."""
    counter = CounterTracker("m1", "good", width_bits=32, max_parts_per_s=rate)
    assert feed(counter, [1_000_000, 0, 1_000_001]) == [0, None, 1]
    assert counter.total == 1_000_001
    assert counter.implausible == 0


def test_a_reset_counts_once_the_next_reading_confirms_it() -> None:
    """Parts since the reset are the value read when it is confirmed: 3 then 5 books 5."""
    counter = unlimited()
    assert feed(counter, [1000, 3, 5, 7]) == [0, None, 5, 2]


def test_a_reset_that_has_not_counted_yet_is_confirmed_by_the_same_value() -> None:
    assert feed(unlimited(), [1000, 0, 0, 1]) == [0, None, 0, 1]


def test_a_second_drop_replaces_the_suspected_reset() -> None:
    """Below the held value is no confirmation: the lower one is held in its place."""
    assert feed(unlimited(), [1000, 500, 3, 4]) == [0, None, None, 4]


def test_a_drop_into_the_upper_half_is_a_suspected_reset_not_a_rollover() -> None:
    counter = unlimited()
    assert feed(counter, [2**32 - 3, 2**31, 2**31 + 2]) == [0, None, None]
    # Confirmed as a reset, but 2**31 parts since it is more than a sample may carry: not
    # counted; the counter goes on from there.
    assert counter.implausible == 1
    assert feed(counter, [2**31 + 5]) == [3]
    counter = unlimited()
    assert feed(counter, [2**20, 2**10, 2**10 + 2]) == [0, None, 2**10 + 2]


@pytest.mark.parametrize(
    ("width", "raws", "booked"),
    [
        (16, [2**16 - 1, 1], [0, 2]),
        (16, [65_000, 10, 12], [0, 546, 2]),
        (32, [2**32 - 3, 4], [0, 7]),
        (64, [2**64 - 1, 0], [0, 1]),
    ],
)
def test_rollovers_count_at_once(width: int, raws: list[int], booked: list[int]) -> None:
    assert feed(unlimited(width), raws) == booked
    # a rate that admits the parts: still counted at once
    assert feed(at_most(1000.0, width), raws) == booked


def test_a_garbage_jump_is_refused_and_the_count_goes_on_from_before_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """10 s ideal cycle: 1000, then 4,000,000,000 one second later, then 1001."""
    counter = at_most(1.5 / 10)
    with caplog.at_level(logging.WARNING, logger="kyoso.gateway.machine"):
        assert feed(counter, [1000, 4_000_000_000, 1001]) == [0, None, 1]
    assert counter.implausible == 1
    assert counter.total == 1001
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    for part in ("m1", "good", "1000", "4000000000", "1.0 s"):
        assert part in message, message


def test_a_device_stuck_at_garbage_never_injects_a_huge_delta() -> None:
    """A jump confirmed by a second reading becomes the baseline, counting nothing; the way
    back (a rollover this time) is refused the same way."""
    counter = at_most(1.5 / 10)
    booked = feed(counter, [1000, 4_000_000_000, 4_000_000_000, 4_000_000_000, 1005, 1006])
    assert booked == [0, None, 0, 0, None, 1]
    assert counter.implausible == 2


def test_a_jump_confirmed_by_counting_on_is_counted_from_the_jump() -> None:
    """An operator presetting the counter: the jump is refused, what follows it counts."""
    counter = at_most(1.0)
    assert feed(counter, [10, 5000, 5002, 5003]) == [0, None, 2, 1]
    assert counter.implausible == 1


def test_the_rate_admits_one_part_of_slack_over_the_time_since_the_last_good_reading() -> None:
    counter = at_most(0.1)  # one part per 10 s
    assert counter.read(0, MONDAY_NOON) == 0
    assert counter.read(2, MONDAY_NOON + 10) == 2  # one part in 10 s, plus one of slack
    assert counter.read(5, MONDAY_NOON + 20) is None  # three parts in 10 s: refused
    # 20 s after the last good reading, 2 + 1 parts are plausible: the count was real
    assert counter.read(5, MONDAY_NOON + 30) == 3
    assert counter.implausible == 1


def test_a_confirmed_reset_showing_too_many_parts_is_refused_but_taken_as_the_baseline() -> None:
    """5,000,000 -> 4,000,000 -> 4,000,001 is no reset that made 4,000,001 parts in 2 s."""
    counter = at_most(1.0)
    assert feed(counter, [5_000_000, 4_000_000, 4_000_001, 4_000_003]) == [0, None, None, 2]
    assert counter.implausible == 1


def test_without_a_rate_a_jump_ahead_is_trusted_up_to_what_a_sample_may_carry() -> None:
    """No ideal cycle time and no max_parts_per_s: nothing to judge a jump by but the
    contract's limit of parts in one sample (a larger one would fail the whole sample)."""
    assert feed(unlimited(), [1000, 900_000_000]) == [0, 899_999_000]
    counter = unlimited()
    assert feed(counter, [1000, 4_000_000_000, 4_000_000_005]) == [0, None, 5]
    assert counter.implausible == 1


# -- the machine's samples ----------------------------------------------------------------------


def tracker(ideal_cycle_time_s: float | None = 10.0, **counter: Any) -> MachineTracker:
    config = MachineConfig.model_validate(
        {
            "id": "m1",
            "name": "M1",
            "calendar": "c",
            "ideal_cycle_time_s": ideal_cycle_time_s,
            "source": {"mqtt": {"topic": "t", "values": {"code": "c", "n": "n"}}},
            "state": {"from_code": {"field": "code", "map": {3: "running"}}},
            "counters": {"good": {"field": "n", **counter}},
        }
    )
    return MachineTracker(config, CALENDAR, MONDAY_NOON)


def closed(t: MachineTracker, end: float) -> Sample:
    sample = t.sample(end)
    assert sample is not None
    return sample


def test_a_held_reading_alone_makes_the_counter_missing_and_the_total_stays() -> None:
    t = tracker()
    t.observe(MONDAY_NOON + 1, {"code": 3, "n": 1_000_000}, set())
    t.observe(MONDAY_NOON + 9, {"code": 3, "n": 0}, set())  # held, after a good reading
    first = closed(t, MONDAY_NOON + 10)
    t.observe(MONDAY_NOON + 11, {"code": 3, "n": 4_000_000_000}, set())  # refused
    second = closed(t, MONDAY_NOON + 20)
    t.observe(MONDAY_NOON + 21, {"code": 3, "n": 1_000_002}, set())
    third = closed(t, MONDAY_NOON + 30)
    assert (first.counters["good"].delta, first.counters["good"].total) == (0, 1_000_000)
    assert first.missing == []
    assert second.counters == {}
    assert second.missing == ["good"]
    assert (third.counters["good"].delta, third.counters["good"].total) == (2, 1_000_002)
    assert third.missing == []
    assert t.implausible == {"good": 1}


def test_the_rate_comes_from_the_ideal_cycle_time_unless_the_counter_declares_one() -> None:
    derived = tracker(ideal_cycle_time_s=10.0)  # 1.5 / 10 s: 40 parts in 10 s is too many
    declared = tracker(ideal_cycle_time_s=10.0, max_parts_per_s=5.0)
    none = tracker(ideal_cycle_time_s=None)
    for t in (derived, declared, none):
        t.observe(MONDAY_NOON, {"code": 3, "n": 100}, set())
        t.observe(MONDAY_NOON + 10, {"code": 3, "n": 140}, set())
    assert derived.implausible == {"good": 1}
    assert declared.implausible == {"good": 0}
    assert none.implausible == {"good": 0}
    samples = [closed(t, MONDAY_NOON + 10) for t in (derived, declared, none)]
    assert [s.counters["good"].delta for s in samples] == [0, 40, 40]


def test_max_parts_per_s_must_be_positive() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        tracker(max_parts_per_s=0)


def test_the_example_spells_out_the_real_counter_defaults() -> None:
    first = load_config(EXAMPLE, ENV).machines[0]
    assert first.counters["good"] == CounterConfig(field="good_count")


# -- F11 transient zeros: a real Modbus device, the gateway's own loop, a real broker -----------

START = datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp()  # a Monday, in the 06-22 shift
POLL_S = 10.0
PUBLISH_S = 60.0
POLLS = 360  # one hour


class ZeroOnceModel(MachineModel):
    """A controller that shows 0 in its good-part counter at one moment: a slave answering
    before its registers are loaded. Everything else is the simulator's own model."""

    zero_at: float | None = None

    def snapshot(self, moment: float) -> Snapshot:
        snap = super().snapshot(moment)
        if moment == self.zero_at:
            return dataclasses.replace(snap, good_counter=0)
        return snap


@pytest.mark.integration
def test_a_transient_zero_on_a_real_modbus_device_adds_no_phantom_parts(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    factory_id = f"zero-{uuid.uuid4().hex[:12]}"
    factory = small_factory(
        factory_id, 11, ["line"], [machine("m1", "line", 1, "ABCD", counter_start=1_000_000)]
    )
    [config] = factory.machines
    assert isinstance(config.source, ModbusSourceConfig)
    model = ZeroOnceModel(
        config.id,
        config.behaviour,
        factory.calendars[config.calendar],
        machine_seed(factory.seed, config.id),
        START,
        counter_start=config.source.counter_start,
    )
    moments = [START + i * POLL_S for i in range(POLLS + 1)]
    # the glitch falls in a run: parts are counted across it
    model.zero_at = next(
        at
        for before, at, after in zip(moments, moments[1:], moments[2:], strict=False)
        if model.totals_at(before)[0] < model.totals_at(after)[0]
    )
    clock = ManualClock(START)
    collector = Collector(mosquitto, factory_id, "gw-01")

    async def main() -> dict[str, int]:
        async with ModbusServers(factory, {config.id: model}, clock.now) as servers:
            settings = gateway_config(
                factory,
                servers.endpoints,
                gateway="gw-01",
                broker={"host": mosquitto.host, "port": mosquitto.port},
                outbox_path=tmp_path / "outbox.sqlite3",
                poll_interval_s=POLL_S,
                publish_interval_s=PUBLISH_S,
            )
            gateway = Gateway(GatewayConfig.model_validate(settings), clock=clock)
            await gateway.start()
            await gateway.publisher.wait_connected()
            for at in moments:
                clock.moment = at
                await gateway.poll(config.id)
                if at > START and (at - START) % PUBLISH_S == 0:
                    gateway.emit(at)
            await gateway.publisher.wait_drained()
            # a sample per interval, and one more per state change (closed at its poll)
            submitted = gateway.outbox.last_seq + 1
            await until(lambda: len(collector.seqs()) >= submitted, 10, "every sample")
            await gateway.stop()
            return gateway.trackers[config.id].implausible

    try:
        implausible = asyncio.run(main())
        samples = [s for _, batch in collector.batches() for s in batch.samples]
    finally:
        collector.close()
    assert sum(s.interval_s for s in samples) == pytest.approx(POLLS * POLL_S)
    true_parts = model.totals_at(moments[-1])[0] - model.totals_at(START)[0]
    assert true_parts > 0
    assert sum(s.counters[COUNTER_GOOD].delta for s in samples) == true_parts
    assert all(COUNTER_GOOD not in s.missing for s in samples)
    assert implausible == {"good": 0, "reject": 0}
