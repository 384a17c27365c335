"""What is known of a machine's state: when it offers no capacity at all, and why (a figure
without evidence is worse than no figure, so when in doubt the machine is withdrawn and the
reason said), and whether a machine down now is in a minor stop or a breakdown.

In order: its gateway is silent or its data stale (``offline``); it is heard but its state
has been unknown for ``unreadable_after_s`` (``unreadable``: a dead or silent device); or
less than ``min_history_h`` of its planned time has been observed in the lookback
(``insufficient_history``: a machine commissioned an hour ago has not shown its load).
"""

from typing import Literal

from .rules import CapacityRules

__all__ = ["Stop", "stop", "withdrawal"]

Stop = Literal["down", "minor_stop"]


def withdrawal(
    *, offline: bool, unreadable: bool, observed_s: float, rules: CapacityRules
) -> str | None:
    """The reason the machine's capacity is withdrawn, or None when it may be offered."""
    if offline:
        return "offline"
    if unreadable:
        return "unreadable"
    if observed_s < rules.min_history_h * 3600:
        return "insufficient_history"
    return None


def stop(down_s: float | None, rules: CapacityRules) -> tuple[Stop, float] | None:
    """A machine down now (``down_s``: its down seconds in the last ``minor_stop_max_s``;
    None: not down): a ``minor_stop`` while it has not been down that long, unattainable
    only for the rest of that allowance; a breakdown (``down``) after, unattainable until
    the expected repair. The kind and the seconds expected before it works again."""
    if down_s is None:
        return None
    if down_s < rules.minor_stop_max_s - 1.0:  # a second of slack for sample edges
        return "minor_stop", rules.minor_stop_max_s - down_s
    return "down", rules.repair_estimate_s
