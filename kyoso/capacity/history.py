"""A machine's history as a load profile reads it, kept hour by hour so that the profile is
learnt incrementally: the hours read once are kept, and each update reads only the hours
since (and the last few again, for data written late), drops those that left the lookback
and learns the profile from what it keeps.

What is kept per hour is exactly what :meth:`LoadProfile.build` takes from an hourly window
(:func:`~kyoso.capacity.forecast.hour_load`), and the profile is learnt by the same code
(:meth:`LoadProfile.of_week_hours`), in the same order: the same hours give the same
profile, to the last bit, whether they were read at once or hour by hour.
"""

import functools
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from kyoso.contract import MachineDescription, ShiftCalendar
from kyoso.store import StateWindow

from .forecast import LoadProfile, hour_load, week_hours
from .repair import DownSamples, RepairRecord

__all__ = ["FactoryHistory", "Learnt", "LoadHistory", "hour_index"]

_HOUR: Final = timedelta(hours=1)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def hour_index(moment: datetime) -> int:
    """The whole UTC hour ``moment`` starts, in hours since 1970 (``ValueError`` if it is not
    a whole hour)."""
    index, rest = divmod(moment - _EPOCH, _HOUR)
    if rest:
        raise ValueError(f"{moment.isoformat()} is not a whole hour")
    return int(index)


def _hour_start(index: int) -> datetime:
    """The start of hour ``index`` (hours since 1970), in UTC."""
    return _EPOCH + index * _HOUR


def _zeros(count: int) -> "array[float]":
    return array("d", bytes(8 * count))


@dataclass(frozen=True, slots=True)
class LoadHistory:
    """One machine's busy, lost and observed seconds (:data:`HourLoad`) in each whole UTC
    hour of ``[first, first + len)``, hours counted since 1970. Never changed once made."""

    first: int = 0
    busy: "array[float]" = field(default_factory=lambda: _zeros(0))
    lost: "array[float]" = field(default_factory=lambda: _zeros(0))
    observed: "array[float]" = field(default_factory=lambda: _zeros(0))

    def __post_init__(self) -> None:
        if not len(self.busy) == len(self.lost) == len(self.observed):
            raise ValueError("a load history needs as many busy, lost and observed hours")

    @property
    def end(self) -> int:
        """The hour after its last."""
        return self.first + len(self.observed)

    @classmethod
    def of(cls, windows: Sequence[StateWindow]) -> "LoadHistory":
        """The hours of one machine's hourly ``windows`` (each a whole UTC hour, in time
        order: ``ValueError`` otherwise); hours between them are unobserved."""
        if not windows:
            return cls()
        first = hour_index(windows[0].start)
        count = hour_index(windows[-1].start) + 1 - first
        busy, lost, observed = _zeros(count), _zeros(count), _zeros(count)
        for window in windows:
            if window.end - window.start != _HOUR:
                raise ValueError(f"a window of {window.end - window.start}, not of an hour")
            begin, busy_s, lost_s, observed_s = hour_load(window)
            i = hour_index(begin) - first
            busy[i], lost[i], observed[i] = busy_s, lost_s, observed_s
        return cls(first, busy, lost, observed)

    def within(self, start: int, end: int) -> "LoadHistory":
        """Its hours within ``[start, end)`` (those it does not have are unobserved)."""
        start, end = max(start, self.first), min(end, self.end)
        if end <= start:
            return LoadHistory(start)
        a, b = start - self.first, end - self.first
        return LoadHistory(start, self.busy[a:b], self.lost[a:b], self.observed[a:b])

    def then(self, newer: "LoadHistory", since: int) -> "LoadHistory":
        """Its hours before ``since`` followed by ``newer``'s (which read them again from
        ``since`` on: what ``newer`` does not have from there is unobserved)."""
        newer = newer.within(since, newer.end)
        older = self.within(self.first, since)
        if not len(older.observed):
            return newer
        if not len(newer.observed):
            return older
        gap = _zeros(newer.first - older.end)
        return LoadHistory(
            older.first,
            older.busy + gap + newer.busy,
            older.lost + gap + newer.lost,
            older.observed + gap + newer.observed,
        )

    def same_as(self, other: "LoadHistory", start: int, end: int) -> bool:
        """Whether both have the same figures in every hour of ``[start, end)`` (an hour one
        of them does not have is unobserved)."""
        return _padded(self, start, end) == _padded(other, start, end)

    def profile(self, calendar: ShiftCalendar, start: datetime, end: datetime) -> LoadProfile:
        """The load profile over ``[start, end)`` (whole hours) of the hours it has there:
        :meth:`LoadProfile.build` of those hours' windows."""
        first, last = hour_index(start), hour_index(end)
        kept = self.within(first, last)
        week = week_hours(calendar.timezone, start, last - first)
        offset = kept.first - first
        seen = [i for i, observed in enumerate(kept.observed) if observed > 0]
        return LoadProfile.of_week_hours(
            ((week[offset + i], kept.busy[i], kept.lost[i], kept.observed[i]) for i in seen),
            _hour_start(kept.first + seen[0]) if seen else None,
            _planned_s(calendar.model_dump_json(), start, end),
            end,
        )


@functools.lru_cache(maxsize=1024)
def _planned_s(calendar: str, start: datetime, end: datetime) -> float:
    """The planned time of a calendar (as JSON) over weeks: the same for every machine that
    follows it, of a factory and of its neighbours; computed once."""
    return ShiftCalendar.model_validate_json(calendar).planned_seconds(start, end)


def _padded(
    history: LoadHistory, start: int, end: int
) -> tuple["array[float]", "array[float]", "array[float]"]:
    """Its figures in each hour of ``[start, end)``, zeros where it has none."""
    hours = history.within(start, end)
    if not len(hours.observed):
        return _zeros(end - start), _zeros(end - start), _zeros(end - start)
    before, after = _zeros(hours.first - start), _zeros(end - hours.end)
    return (
        before + hours.busy + after,
        before + hours.lost + after,
        before + hours.observed + after,
    )


@dataclass(frozen=True, slots=True)
class Learnt:
    """What a machine's history teaches: its load profile and its breakdowns."""

    profile: LoadProfile
    repairs: RepairRecord


class FactoryHistory:
    """A factory's history over ``[start, end)`` (whole hours) as capacity learns from it:
    each machine's hours (:class:`LoadHistory`), its samples with down time
    (:class:`DownSamples`) and the breakdowns they tell (:class:`RepairRecord`). Never
    changed once made, but for the profiles learnt from it, kept per machine as long as its
    calendar."""

    __slots__ = ("_learnt", "down", "end", "factory", "loads", "relearnt_at", "repairs", "start")

    def __init__(
        self,
        factory: str,
        start: datetime,
        end: datetime,
        relearnt_at: datetime,
        *,
        loads: Mapping[str, LoadHistory],
        down: Mapping[str, DownSamples],
        repairs: Mapping[str, RepairRecord],
    ) -> None:
        self.factory = factory
        self.start = start
        self.end = end
        self.relearnt_at = relearnt_at
        """When the whole window was last read from the store (not hour by hour)."""
        self.loads = loads
        self.down = down
        """Each machine's samples with down time ending in ``(start, end]``."""
        self.repairs = repairs
        """Each machine's breakdowns (:meth:`RepairRecord.learn` of its down runs over the
        window); a machine without any has none."""
        self._learnt: dict[str, tuple[ShiftCalendar, Learnt]] = {}

    def learnt(self, description: MachineDescription) -> Learnt:
        """What the described machine's history teaches: :meth:`LoadProfile.build` of its
        hours over the window, had they been read at once, and its breakdowns."""
        machine, calendar = description.machine, description.calendar
        known = self._learnt.get(machine)
        if known is not None and (known[0] is calendar or known[0] == calendar):
            return known[1]
        hours = self.loads.get(machine, LoadHistory())
        profile = hours.profile(calendar, self.start, self.end)
        found = Learnt(profile, self.repairs.get(machine, RepairRecord()))
        self._learnt[machine] = (calendar, found)
        return found
