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

import bisect
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from kyoso.contract import MAX_INTERVAL_S
from kyoso.store import StateRun
from kyoso.store.base import ADJOIN, RunRow

from .rules import CapacityRules

__all__ = ["DownSamples", "RepairRecord", "Stop", "stop", "us_of"]

Stop = Literal["down", "minor_stop"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_ADJOIN_US: Final = ADJOIN // _US


def us_of(moment: datetime) -> int:
    """``moment`` in microseconds since 1970 (how :class:`DownSamples` keeps times)."""
    return (moment - _EPOCH) // _US


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
                if _breakdown(run.seconds, run.ongoing and run.end > unsure, rules)
            )
        )

    def remaining_s(self, elapsed_s: float, prior_s: float) -> float:
        """The mean residual repair time after ``elapsed_s`` (see the module docstring)."""
        longer = [t - elapsed_s for t in self.breakdowns_s if t > elapsed_s]
        return (sum(longer) + prior_s) / (len(longer) + 1)


def _breakdown(seconds: float, unfinished: bool, rules: CapacityRules) -> bool:
    return seconds >= rules.minor_stop_max_s and not unfinished


@dataclass(frozen=True, slots=True)
class DownSamples:
    """One machine's samples with down time, as a store reports them for its down runs
    (:meth:`~kyoso.store.StoreReader.state_run_rows`), in the order of their ends: what its
    repair record is learnt from, kept so that each update reads only the new samples.
    Times in microseconds since 1970; never changed once made."""

    begin: "array[int]" = field(default_factory=lambda: array("q"))
    """Where each sample's interval begins."""
    ts: "array[int]" = field(default_factory=lambda: array("q"))
    """Where each ends (its ``ts``)."""
    seconds: "array[float]" = field(default_factory=lambda: array("d"))
    """Its down seconds."""
    ended: "array[int]" = field(default_factory=lambda: array("b"))
    """Whether it ended down (1) or not (0)."""

    def __post_init__(self) -> None:
        if not len(self.begin) == len(self.ts) == len(self.seconds) == len(self.ended):
            raise ValueError("down samples need as many beginnings, ends, seconds and states")

    @classmethod
    def of(cls, rows: Iterable[RunRow]) -> "DownSamples":
        """The samples of one machine's rows (in any order)."""
        found = cls()
        for _, begin, ts, seconds, ended in sorted(rows, key=lambda row: row[2]):
            found.begin.append(us_of(begin))
            found.ts.append(us_of(ts))
            found.seconds.append(seconds)
            found.ended.append(ended)
        return found

    def between(self, after_us: int, until_us: int) -> "DownSamples":
        """Those ending in ``(after_us, until_us]``."""
        a, b = bisect.bisect_right(self.ts, after_us), bisect.bisect_right(self.ts, until_us)
        return DownSamples(self.begin[a:b], self.ts[a:b], self.seconds[a:b], self.ended[a:b])

    def then(self, newer: "DownSamples", since_us: int) -> "DownSamples":
        """Its samples ending up to ``since_us``, and ``newer``'s ending after it (which
        read them again from there)."""
        older, later = self.between(-(2**62), since_us), newer.between(since_us, 2**62)
        return DownSamples(
            older.begin + later.begin,
            older.ts + later.ts,
            older.seconds + later.seconds,
            older.ended + later.ended,
        )

    def record(self, rules: CapacityRules, until: datetime) -> RepairRecord:
        """:meth:`RepairRecord.learn` of the runs they make (the store's rules, coded in
        :func:`kyoso.store.base.chain_runs`, on microseconds: the same runs, sums and
        order), as of ``until``."""
        runs = []  # start, seconds, unfinished
        unsure = us_of(until - timedelta(seconds=MAX_INTERVAL_S))
        n, first = len(self.ts), 0
        for last in range(n):
            if (
                last + 1 < n
                and self.ended[last]
                and (abs(self.begin[last + 1] - self.ts[last]) <= _ADJOIN_US)
            ):
                continue  # the next sample goes on with this run
            seconds = math.fsum(self.seconds[first : last + 1])
            begin, ts = self.begin[first], self.ts[first]
            if self.ended[first]:
                begin = max(ts - timedelta(seconds=self.seconds[first]) // _US, begin)
            runs.append((begin, seconds, bool(self.ended[last]) and self.ts[last] > unsure))
            first = last + 1
        runs.sort(key=lambda run: run[0])  # as the store sorts runs: by start, stably
        return RepairRecord(
            tuple(
                seconds for _, seconds, unfinished in runs if _breakdown(seconds, unfinished, rules)
            )
        )


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
