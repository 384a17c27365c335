"""What is known of a machine's state: when it offers no capacity at all, and why (a figure
without evidence is worse than no figure, so when in doubt the machine is withdrawn and the
reason said). How long a machine down now stays down is :mod:`.repair`'s.

In order: its gateway is silent or its data stale (``offline``); it is heard but its state
has been unknown for ``unreadable_after_s`` (``unreadable``: a dead or silent device); or
less than ``min_history_h`` of its planned time has been observed in the lookback
(``insufficient_history``: a machine commissioned an hour ago has not shown its load).
"""

from typing import Literal

from .rules import CapacityRules

__all__ = ["Withdrawal", "withdrawal"]

Withdrawal = Literal["offline", "unreadable", "insufficient_history"]


def withdrawal(
    *, offline: bool, unreadable: bool, observed_s: float, rules: CapacityRules
) -> Withdrawal | None:
    """The reason the machine's capacity is withdrawn, or None when it may be offered."""
    if offline:
        return "offline"
    if unreadable:
        return "unreadable"
    if observed_s < rules.min_history_h * 3600:
        return "insufficient_history"
    return None
