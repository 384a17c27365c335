"""How long a machine down now is expected to stay down, learnt from its own breakdowns.

A stop is a **minor stop** while it has lasted less than ``minor_stop_max_s``: most stops
last a minute or two and are no breakdown, so only the rest of that allowance is expected
lost. A stop that has lasted longer is a **breakdown**, and its expected remaining time is
the machine's *mean residual repair time*: over the machine's past breakdowns (its down runs
of ``minor_stop_max_s`` or more in the lookback) that lasted longer than this one has so far,
the mean of what they lasted beyond that, with ``repair_estimate_s`` (2 h) counted as one
more such breakdown (the prior):

    remaining(elapsed) = (sum(t - elapsed for t in past if t > elapsed) + prior)
                         / (count(t > elapsed) + 1)

So a machine without breakdowns on record is expected back after the prior; one whose
breakdowns take 20 minutes is expected back in close to the 20 minutes less what has passed
as its record grows; and one down longer than any of its past breakdowns is expected down
for the prior again (when in doubt, the longer estimate).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from kyoso.contract import MAX_INTERVAL_S
from kyoso.store import StateRun

from .rules import CapacityRules

__all__ = ["RepairRecord", "Stop", "stop"]

Stop = Literal["down", "minor_stop"]


@dataclass(frozen=True, slots=True)
class RepairRecord:
    """A machine's past breakdowns, in seconds each."""

    breakdowns_s: tuple[float, ...] = ()

    @classmethod
    def learn(
        cls, runs: Sequence[StateRun], rules: CapacityRules, until: datetime
    ) -> "RepairRecord":
        """The down runs of one machine up to ``until`` that were breakdowns. A run that
        reaches the last sample interval before ``until`` still down may go on past it: it
        is not over, so it teaches nothing yet. (A run that ends still down at an earlier
        sample was followed by a sample without down time, or by a gap in the data.)"""
        unsure = until - timedelta(seconds=MAX_INTERVAL_S)
        return cls(
            tuple(
                run.seconds
                for run in runs
                if run.seconds >= rules.minor_stop_max_s and not (run.ongoing and run.end > unsure)
            )
        )

    def remaining_s(self, elapsed_s: float, prior_s: float) -> float:
        """The mean residual repair time after ``elapsed_s`` (see the module docstring)."""
        longer = [t - elapsed_s for t in self.breakdowns_s if t > elapsed_s]
        return (sum(longer) + prior_s) / (len(longer) + 1)


def stop(
    down_for_s: float | None, record: RepairRecord, rules: CapacityRules
) -> tuple[Stop, float] | None:
    """A machine down now for ``down_for_s`` (None: not down): the kind of stop, and the
    seconds it is expected to stay down."""
    if down_for_s is None:
        return None
    if down_for_s < rules.minor_stop_max_s - 1.0:  # a second of slack for sample edges
        return "minor_stop", rules.minor_stop_max_s - down_for_s
    return "down", record.remaining_s(down_for_s, rules.repair_estimate_s)
