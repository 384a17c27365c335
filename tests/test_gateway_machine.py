"""State derivation and edge accumulation: counters, thresholds, alarms, calendar, gaps."""

from datetime import UTC, datetime
from typing import Any

import pytest

from kyoso.contract import MachineState, ShiftCalendar
from kyoso.gateway.config import MachineConfig, StateConfig
from kyoso.gateway.machine import MachineTracker, StateDeriver, counter_delta

MONDAY_NOON = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()
SUNDAY_NOON = datetime(2026, 1, 4, 12, tzinfo=UTC).timestamp()
CALENDAR = ShiftCalendar.model_validate(
    {"timezone": "UTC", "shifts": [{"days": ["mon"], "start": "06:00", "end": "18:00"}]}
)
S = MachineState


@pytest.mark.parametrize(
    ("previous", "raw", "width", "delta"),
    [
        (10, 15, 32, 5),
        (15, 15, 32, 0),
        (2**32 - 3, 4, 32, 7),  # rollover
        (2**16 - 1, 1, 16, 2),
        (5000, 3, 32, None),  # a drop: a reset or a glitch, for the tracker to settle
        (2**32 - 3, 2**31, 32, None),  # a drop into the upper half is no rollover
    ],
)
def test_counter_delta(previous: int, raw: int, width: int, delta: int | None) -> None:
    assert counter_delta(previous, raw, width) == delta


def deriver(state: dict[str, Any]) -> StateDeriver:
    return StateDeriver(StateConfig.model_validate(state), CALENDAR)


CODES = {"from_code": {"field": "code", "map": {1: "idle", 3: "running", 4: "down"}}}
CLAMP = {
    "from_threshold": {
        "field": "amps",
        "levels": [{"state": "running", "above": 9}, {"state": "idle", "above": 1}],
        "hysteresis": 0.5,
    }
}


def test_code_map_alarm_and_unknown() -> None:
    d = deriver({**CODES, "alarm": {"field": "alarm"}})
    assert d.derive({"code": 3, "alarm": 0}, MONDAY_NOON) is S.RUNNING
    assert d.derive({"code": 3, "alarm": 17}, MONDAY_NOON) is S.DOWN
    assert d.derive({"code": 9}, MONDAY_NOON) is S.UNKNOWN
    assert d.derive({}, MONDAY_NOON) is S.UNKNOWN


def test_calendar_turns_idle_and_down_into_planned_stop_but_keeps_overtime_work() -> None:
    d = deriver(CODES)
    assert d.derive({"code": 1}, SUNDAY_NOON) is S.PLANNED_STOP
    assert d.derive({"code": 4}, SUNDAY_NOON) is S.PLANNED_STOP
    assert d.derive({"code": 3}, SUNDAY_NOON) is S.RUNNING
    assert (
        deriver({**CODES, "planned_stops_from_calendar": False}).derive({"code": 1}, SUNDAY_NOON)
        is S.IDLE
    )


def test_thresholds_with_hysteresis() -> None:
    d = deriver(CLAMP)
    readings = [0.2, 1.2, 9.5, 8.7, 8.4, 1.2, 0.7, 0.4]
    states = [d.derive({"amps": a}, MONDAY_NOON + i) for i, a in enumerate(readings)]
    assert states == [S.DOWN, S.IDLE, S.RUNNING, S.RUNNING, S.IDLE, S.IDLE, S.IDLE, S.DOWN]


def test_min_dwell_filters_short_blips() -> None:
    rules = {"from_threshold": {**CLAMP["from_threshold"], "min_dwell_s": 5}}
    d = deriver(rules)
    assert d.derive({"amps": 12}, MONDAY_NOON) is S.RUNNING
    assert d.derive({"amps": 0.1}, MONDAY_NOON + 1) is S.RUNNING  # a 2 s dip is ignored
    assert d.derive({"amps": 12}, MONDAY_NOON + 3) is S.RUNNING
    assert d.derive({"amps": 0.1}, MONDAY_NOON + 4) is S.RUNNING
    assert d.derive({"amps": 0.1}, MONDAY_NOON + 9) is S.DOWN  # held for 5 s


def tracker() -> MachineTracker:
    config = MachineConfig.model_validate(
        {
            "id": "m1",
            "name": "M1",
            "calendar": "c",
            "source": {"mqtt": {"topic": "t", "values": {"code": "c", "n": "n", "kw": "kw"}}},
            "state": CODES,
            "counters": {"good": {"field": "n"}},
            "signals": ["kw"],
        }
    )
    return MachineTracker(config, CALENDAR, MONDAY_NOON)


def test_tracker_accumulates_durations_counters_and_signals() -> None:
    t = tracker()
    t.observe(MONDAY_NOON + 2, {"code": 1, "n": 100, "kw": 1.0}, set())
    t.observe(MONDAY_NOON + 5, {"code": 3, "n": 101, "kw": 9.0}, set())
    t.observe(MONDAY_NOON + 8, {"code": 3, "n": 104, "kw": 8.0}, set())
    sample = t.sample(MONDAY_NOON + 10)
    assert sample is not None
    assert sample.interval_s == 10
    assert sample.durations_s == {S.UNKNOWN: 2.0, S.IDLE: 3.0, S.RUNNING: 5.0}
    assert sample.state is S.RUNNING
    assert sample.counters["good"].delta == 4
    assert sample.counters["good"].total == 104
    stats = sample.signals["kw"]
    assert (stats.last, stats.min, stats.max, stats.count) == (8.0, 1.0, 9.0, 3)
    assert stats.mean == pytest.approx(6.0)
    assert sample.missing == []


def test_a_silent_device_makes_unknown_time_and_missing_values() -> None:
    t = tracker()
    t.observe(MONDAY_NOON, {"code": 3, "n": 7, "kw": 5.0}, set())
    first = t.sample(MONDAY_NOON + 10)
    assert first is not None
    t.observe(MONDAY_NOON + 14, {}, {"code", "n", "kw"})  # the device stopped answering
    second = t.sample(MONDAY_NOON + 20)
    assert second is not None
    assert second.durations_s == {S.RUNNING: 4.0, S.UNKNOWN: 6.0}
    assert second.missing == ["kw"]
    assert second.counters["good"].delta == 0  # the last reading stands, nothing new
    assert t.sample(MONDAY_NOON + 20) is None  # an empty interval yields no sample


def test_an_early_close_needs_a_change_between_polls_and_a_sample_to_close() -> None:
    """The first poll has no previous state to differ from; a change seen at the moment a
    sample closed has nothing to close and waits for the next poll."""
    t = MachineTracker(tracker().config, CALENDAR, MONDAY_NOON, min_sample_s=1.0)
    assert t.observe(MONDAY_NOON + 1, {"code": 3, "n": 1, "kw": 1.0}, set()) is None
    assert t.sample(MONDAY_NOON + 10) is not None
    assert t.observe(MONDAY_NOON + 10, {"code": 1, "n": 2, "kw": 1.0}, set()) is None
    early = t.observe(MONDAY_NOON + 11, {"code": 1, "n": 4, "kw": 1.0}, set())
    assert early is not None
    assert (early.interval_s, early.durations_s, early.state) == (1, {S.IDLE: 1.0}, S.IDLE)
    assert early.counters["good"].delta == 3  # the readings at 10 s and 11 s
    assert t.observe(MONDAY_NOON + 12, {"code": 1, "n": 5, "kw": 1.0}, set()) is None
