"""The seeded behaviour model: determinism, tiling, calendars, counters and statistics."""

import itertools
import random
import statistics
from datetime import UTC, datetime, time, timedelta

import pytest

from kyoso.contract import MachineState
from kyoso.contract.calendar import WEEKDAYS, Shift
from kyoso.simulators.behaviour import (
    COUNTER_MODULUS,
    MachineModel,
    Segment,
    expected_shares,
    machine_seed,
)
from kyoso.simulators.config import FactoryConfig, MachineConfig, load_factory, shipped_factories

ORIGIN = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday
DAY = 86_400.0
WEEK = 7 * DAY

FACTORIES = [load_factory(p) for p in shipped_factories()]
MACHINES = [(f, m) for f in FACTORIES for m in f.machines]


def model_of(
    factory: FactoryConfig, machine: MachineConfig, seed: int | None = None
) -> MachineModel:
    """A fresh behaviour model of a shipped machine, without counter quirks."""
    return MachineModel(
        machine.id,
        machine.behaviour,
        factory.calendars[machine.calendar],
        machine_seed(factory.seed if seed is None else seed, machine.id),
        ORIGIN,
    )


def seconds_by_state(
    segments: list[Segment], start: float, end: float
) -> dict[MachineState, float]:
    totals = dict.fromkeys(MachineState, 0.0)
    for seg in segments:
        overlap = min(seg.end, end) - max(seg.start, start)
        if overlap > 0:
            totals[seg.state] += overlap
    return totals


def test_shipped_factories_are_three_with_at_least_15_machines() -> None:
    assert len(FACTORIES) >= 3
    assert len(MACHINES) >= 15
    kinds = {m.source.kind for _, m in MACHINES}
    assert kinds == {"modbus", "clamp", "mtconnect", "opcua", "slmp"}


@pytest.mark.parametrize(("factory", "machine"), MACHINES, ids=[m.id for _, m in MACHINES])
def test_same_seed_same_timeline_whatever_the_stepping(
    factory: FactoryConfig, machine: MachineConfig
) -> None:
    end = ORIGIN + 3 * WEEK
    whole = model_of(factory, machine)
    whole.advance(end)
    stepped = model_of(factory, machine)
    steps = random.Random(7)
    moment = ORIGIN
    while moment < end:
        moment += steps.uniform(0.1, 4000)
        stepped.snapshot(moment)
    assert stepped.completed(end) == whole.completed(end)
    other = model_of(factory, machine, seed=factory.seed + 1)
    assert other.completed(end) != whole.completed(end)


@pytest.mark.parametrize(("factory", "machine"), MACHINES, ids=[m.id for _, m in MACHINES])
def test_segments_tile_time_and_follow_the_calendar(
    factory: FactoryConfig, machine: MachineConfig
) -> None:
    end = ORIGIN + 4 * WEEK
    model = model_of(factory, machine)
    segments = model.completed(end)
    assert segments[0].start == ORIGIN
    for before, after in itertools.pairwise(segments):
        assert before.end == after.start, "gap or overlap between segments"
        assert before.end > before.start
    last = segments[-1].end
    calendar = factory.calendars[machine.calendar]
    planned = calendar.planned_seconds(
        datetime.fromtimestamp(ORIGIN, UTC), datetime.fromtimestamp(last, UTC)
    )
    totals = seconds_by_state(segments, ORIGIN, last)
    assert totals[MachineState.UNKNOWN] == 0
    assert sum(totals.values()) == pytest.approx(last - ORIGIN, abs=1e-3)
    assert sum(totals.values()) - totals[MachineState.PLANNED_STOP] == pytest.approx(
        planned, abs=1e-3
    )
    for seg in segments:
        middle = datetime.fromtimestamp((seg.start + seg.end) / 2, UTC)
        assert calendar.is_planned(middle) == (seg.state != MachineState.PLANNED_STOP)


@pytest.mark.slow
@pytest.mark.parametrize(("factory", "machine"), MACHINES, ids=[m.id for _, m in MACHINES])
def test_long_run_shares_match_the_behaviour_parameters(
    factory: FactoryConfig, machine: MachineConfig
) -> None:
    """Share of planned time per state over three years vs renewal-reward theory.

    Tolerance: 5 standard errors, estimated by batch means over 39 batches of 4 weeks (five,
    not three, because 20 machines x 4 states make 80 checks), and never more than 3
    percentage points, so the check stays meaningful. The seeds are fixed, so the outcome
    is deterministic; a change to the model draws new timelines and is checked afresh.
    """
    model = model_of(factory, machine)
    batches = 39
    span = 4 * WEEK
    model.advance(ORIGIN + batches * span)
    expected = expected_shares(machine.behaviour)
    per_batch: dict[MachineState, list[float]] = {s: [] for s in expected}
    totals = dict.fromkeys(expected, 0.0)
    planned_total = 0.0
    for k in range(batches):
        start = ORIGIN + k * span
        seconds = seconds_by_state(model.completed(start + span), start, start + span)
        planned = sum(seconds[s] for s in expected)
        planned_total += planned
        for state in expected:
            per_batch[state].append(seconds[state] / planned)
            totals[state] += seconds[state]
    for state, share in expected.items():
        observed = totals[state] / planned_total
        tolerance = 5 * statistics.stdev(per_batch[state]) / batches**0.5
        assert tolerance < 0.03, f"{state}: batches too noisy for a meaningful check"
        assert abs(observed - share) <= tolerance, f"{state}: {observed:.4f} vs {share:.4f}"


def test_scrap_rate_and_part_counts() -> None:
    factory, machine = next((f, m) for f, m in MACHINES if m.id == "imm-01")
    model = model_of(factory, machine)
    end = ORIGIN + 8 * WEEK
    segments = model.completed(end)
    good = sum(s.parts_until(s.end)[0] for s in segments)
    rejects = sum(s.parts_until(s.end)[1] for s in segments)
    assert model.totals_at(segments[-1].end) == (good, rejects)
    assert rejects / (good + rejects) == pytest.approx(machine.behaviour.scrap_rate, rel=0.1)
    running = seconds_by_state(segments, ORIGIN, segments[-1].end)[MachineState.RUNNING]
    # Parts finish at the (per-job) cycle time, which averages to cycle_time_s.
    assert running / (good + rejects) == pytest.approx(machine.behaviour.cycle_time_s, rel=0.02)


def test_counter_rolls_over_at_32_bits() -> None:
    factory, machine = next((f, m) for f, m in MACHINES if m.id == "cnc-04")
    start = COUNTER_MODULUS - 5
    model = MachineModel(
        machine.id,
        machine.behaviour,
        factory.calendars[machine.calendar],
        1,
        ORIGIN,
        counter_start=start,
    )
    moment = ORIGIN + 2 * DAY
    snap = model.snapshot(moment)
    assert snap.good_total > 5, "the test needs enough parts to roll over"
    assert snap.good_counter == (start + snap.good_total) % COUNTER_MODULUS
    assert snap.good_counter < snap.good_total


def test_counter_resets_at_local_midnight() -> None:
    factory, machine = next((f, m) for f, m in MACHINES if m.id == "cnc-03")
    calendar = factory.calendars[machine.calendar]
    model = MachineModel(
        machine.id, machine.behaviour, calendar, 3, ORIGIN, counter_reset_daily=True
    )
    assert calendar.timezone == "Asia/Tokyo"
    midnight = datetime(2026, 1, 7, 15, tzinfo=UTC).timestamp()  # 2026-01-08 00:00 in Tokyo
    evening = model.snapshot(midnight + 20 * 3600)
    day_parts = model.totals_at(midnight + 20 * 3600)[0] - model.totals_at(midnight)[0]
    assert day_parts > 0
    assert evening.good_counter == day_parts
    assert model.snapshot(midnight + 1).good_counter == 0  # nothing runs at night


def test_expected_shares_sum_to_one() -> None:
    for _, machine in MACHINES:
        assert sum(expected_shares(machine.behaviour).values()) == pytest.approx(1.0)


def test_snapshot_before_origin_is_refused() -> None:
    factory, machine = MACHINES[0]
    with pytest.raises(ValueError, match="before the simulation origin"):
        model_of(factory, machine).snapshot(ORIGIN - 1)


def test_snapshot_signals_follow_the_state() -> None:
    factory, machine = next((f, m) for f, m in MACHINES if m.id == "cnc-01")
    model = model_of(factory, machine)
    for seg in model.completed(ORIGIN + WEEK):
        snap = model.snapshot((seg.start + seg.end) / 2)
        assert snap.state == seg.state
        assert snap.alarm == seg.alarm
        if seg.state == MachineState.RUNNING:
            assert snap.load_pct > 40
        if seg.state == MachineState.PLANNED_STOP:
            assert snap.power_kw == 0
        assert (seg.state == MachineState.DOWN) == (seg.alarm > 0)


def test_planned_stop_outside_shifts_uses_week_boundaries() -> None:
    """A Saturday shift and a holiday week: no work on the holidays."""
    factory, machine = next((f, m) for f, m in MACHINES if m.id == "cnc-01")
    model = MachineModel(
        machine.id,
        machine.behaviour,
        factory.calendars[machine.calendar],
        5,
        datetime(2026, 12, 28, tzinfo=UTC).timestamp(),
    )
    holiday = datetime(2026, 12, 30, 3, tzinfo=UTC)  # noon in Tokyo
    for hours in range(0, 24 * 3, 3):
        moment = (holiday + timedelta(hours=hours)).timestamp()
        assert model.snapshot(moment).state == MachineState.PLANNED_STOP


def test_a_calendar_without_shifts_is_one_long_planned_stop() -> None:
    factory, machine = MACHINES[0]
    idle_calendar = factory.calendars[machine.calendar].model_copy(update={"shifts": []})
    model = MachineModel(machine.id, machine.behaviour, idle_calendar, 1, ORIGIN)
    snap = model.snapshot(ORIGIN + 3 * WEEK)
    assert snap.state == MachineState.PLANNED_STOP
    segments = model.completed(ORIGIN + 3 * WEEK)
    assert {s.state for s in segments} == {MachineState.PLANNED_STOP}
    assert segments[-1].end == ORIGIN + 3 * WEEK


@pytest.mark.timeout(60)  # the calendar without a gap once looped for ever
def test_a_calendar_without_any_gap_runs_around_the_clock() -> None:
    factory, machine = MACHINES[0]
    always = factory.calendars[machine.calendar].model_copy(
        update={
            "shifts": [Shift(name="all day", days=list(WEEKDAYS), start=time(0), end=time(0))],
            "holidays": [],
            "maintenance": [],
        }
    )
    model = MachineModel(machine.id, machine.behaviour, always, 1, ORIGIN)
    end = ORIGIN + 3 * WEEK
    segments = model.completed(end)
    assert segments[0].start == ORIGIN
    assert all(a.end == b.start for a, b in itertools.pairwise(segments))
    assert segments[-1].end >= end - DAY
    assert MachineState.PLANNED_STOP not in {s.state for s in segments}
    assert {MachineState.RUNNING, MachineState.IDLE} <= {s.state for s in segments}
    stepped = MachineModel(machine.id, machine.behaviour, always, 1, ORIGIN)
    for hours in range(0, 3 * 7 * 24, 5):
        stepped.snapshot(ORIGIN + hours * 3600.0)
    assert stepped.totals_at(end) == model.totals_at(end)
