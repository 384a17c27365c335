"""When a machine's capacity is withdrawn, and which reason wins."""

import pytest

from kyoso.capacity.evidence import stop, withdrawal
from kyoso.capacity.rules import CapacityRules

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


def test_a_stop_is_minor_until_it_has_lasted_the_allowance() -> None:
    rules = CapacityRules(minor_stop_max_s=300, repair_estimate_s=7200)
    assert stop(None, rules) is None
    assert stop(60.0, rules) == ("minor_stop", 240.0)
    assert stop(300.0, rules) == ("down", 7200.0)
