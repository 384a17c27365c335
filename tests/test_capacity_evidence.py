"""When a machine's capacity is withdrawn and which reason wins, how long a stop is
expected to last, and how far its figures can be trusted."""

from datetime import UTC, datetime, timedelta

import pytest

from kyoso.capacity.confidence import CALIBRATION, confidence
from kyoso.capacity.evidence import withdrawal
from kyoso.capacity.repair import RepairRecord, stop
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MAX_INTERVAL_S
from kyoso.store import StateRun

RULES = CapacityRules(min_history_h=8)
ENOUGH = 8 * 3600.0


@pytest.mark.parametrize(
    ("offline", "unreadable", "observed_s", "reason"),
    [
        (False, False, ENOUGH, None),
        (True, True, 0.0, "offline"),  # a silent gateway says nothing of its machines
        (False, True, 0.0, "unreadable"),
        (False, False, ENOUGH - 1, "insufficient_history"),
    ],
)
def test_the_first_missing_evidence_names_the_withdrawal(
    offline: bool, unreadable: bool, observed_s: float, reason: str | None
) -> None:
    assert (
        withdrawal(offline=offline, unreadable=unreadable, observed_s=observed_s, rules=RULES)
        == reason
    )


NOON = datetime(2026, 11, 2, 12, tzinfo=UTC)
MAX_INTERVAL = timedelta(seconds=MAX_INTERVAL_S)


def _run(seconds: float, *, ongoing: bool = False) -> StateRun:
    return StateRun("m1", NOON - timedelta(seconds=seconds), NOON, seconds, ongoing)


def test_a_stop_is_minor_until_it_has_lasted_the_allowance() -> None:
    rules = CapacityRules(minor_stop_max_s=300, repair_estimate_s=7200)
    assert stop(None, RepairRecord(), rules) is None
    assert stop(60.0, RepairRecord(), rules) == ("minor_stop", 240.0)
    assert stop(300.0, RepairRecord(), rules) == ("down", 7200.0)


def test_only_finished_stops_of_the_allowance_or_longer_are_breakdowns() -> None:
    rules = CapacityRules(minor_stop_max_s=300)
    runs = [_run(90), _run(299), _run(300, ongoing=True), _run(1200), _run(5000, ongoing=True)]
    # The last two end at noon still down: the one learnt until 13:00 went on past noon
    # (a later sample had no down time); the one learnt until noon may still go on.
    assert RepairRecord.learn(runs, rules, NOON + 2 * MAX_INTERVAL).breakdowns_s == (
        300.0,
        1200.0,
        5000.0,
    )
    assert RepairRecord.learn(runs, rules, NOON).breakdowns_s == (1200.0,)


def test_without_breakdowns_on_record_the_prior_is_expected() -> None:
    assert RepairRecord().remaining_s(600.0, 7200.0) == 7200.0


def test_a_machine_that_is_repaired_quickly_is_expected_back_soon() -> None:
    record = RepairRecord((1200.0,) * 20)  # twenty 20-minute breakdowns
    remaining = record.remaining_s(600.0, 7200.0)
    assert remaining == pytest.approx((20 * 600.0 + 7200.0) / 21)
    assert remaining < 1000.0  # minutes, not the 2 h prior


def test_a_stop_longer_than_any_on_record_is_expected_to_last_the_prior_again() -> None:
    record = RepairRecord((1200.0,) * 20)
    assert record.remaining_s(1800.0, 7200.0) == 7200.0


def test_the_learnt_repair_decides_a_breakdown() -> None:
    rules = CapacityRules(minor_stop_max_s=300, repair_estimate_s=7200)
    record = RepairRecord((900.0, 1500.0, 2100.0))
    kind, remaining = stop(600.0, record, rules) or ("", 0.0)
    assert kind == "down"
    assert remaining == pytest.approx((300.0 + 900.0 + 1500.0 + 7200.0) / 4)


def test_confidence_is_one_minus_the_measured_error_for_that_much_history() -> None:
    for days, error in CALIBRATION:
        assert confidence(days * 86_400) == pytest.approx(max(0.0, 1 - error))
    (_, first_error), (last, last_error) = CALIBRATION[0], CALIBRATION[-1]
    assert confidence(0.0) == pytest.approx(max(0.0, 1 - first_error))  # below the first
    assert confidence(10 * last * 86_400) == pytest.approx(1 - last_error)  # and beyond
    middle = (CALIBRATION[3][0] + CALIBRATION[4][0]) / 2
    between = 1 - (CALIBRATION[3][1] + CALIBRATION[4][1]) / 2
    assert confidence(middle * 86_400) == pytest.approx(between)  # linear in between


def test_more_history_never_lowers_confidence() -> None:
    values = [confidence(hours * 3600.0) for hours in range(0, 40 * 24, 6)]
    assert all(0 <= v <= 1 for v in values)
    assert values == sorted(values)
