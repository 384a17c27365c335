"""Capacity in time: a window's figures per day, shift or hour, a machine's free blocks,
and when it could do N hours of work.

The figures are :func:`~kyoso.capacity.forecast.hourly`'s, hour by hour, summed into
buckets: days and hours of the factory's local time, or the shifts of each machine's
calendar. An hour a bucket boundary cuts (a time zone half an hour off UTC) is shared
between the two buckets in proportion, so the buckets of a window always add up to the
window's figures.

A **free block** is a run of a machine's planned time without a break in the calendar, in
which nothing is booked or held and the machine is not awaiting a repair: where one job
could run from start to end. Its available hours are the forecast's (the expected load
of the factory's own work already taken off), so a block of eight planned hours may offer
five. The **earliest start** for N hours is the first free block offering them; the
**earliest finish** is when N available hours have gone by, the work split over blocks and
shifts as the calendar cuts it.
"""

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from kyoso.contract import ShiftCalendar

from .forecast import CapacityFigures, Slice

__all__ = [
    "Block",
    "Bucket",
    "BucketKind",
    "bucketed",
    "buckets",
    "earliest_finish",
    "earliest_start",
    "free_blocks",
    "summed",
    "withdrawn",
    "within",
]

BucketKind = Literal["day", "shift", "hour"]
_HOUR: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A stretch of the window the figures are given for."""

    start: datetime
    end: datetime
    label: str
    """The local date (``2026-12-07``), the shift's name and local start date
    (``early 2026-12-07``), or the local hour (``2026-12-07T08:00``)."""


@dataclass(frozen=True, slots=True)
class Block:
    """A free block of one machine (see the module docstring)."""

    start: datetime
    end: datetime
    available_s: float


def buckets(
    kind: BucketKind, calendar: ShiftCalendar, start: datetime, end: datetime, zone: str
) -> list[Bucket]:
    """The buckets of ``kind`` overlapping ``[start, end)``: days and hours in ``zone``, shifts
    of ``calendar`` (its own time zone)."""
    if kind == "shift":
        return [
            Bucket(begin, finish, f"{shift.name} {begin.astimezone(local).date().isoformat()}")
            for shift, begin, finish in calendar.shifts_between(start, end)
            for local in [ZoneInfo(calendar.timezone)]
        ]
    here = ZoneInfo(zone)
    if kind == "hour":
        first = start.astimezone(here).replace(minute=0, second=0, microsecond=0)
        moment = first.astimezone(UTC)
        found = []
        while moment < end:
            found.append(
                Bucket(moment, moment + _HOUR, moment.astimezone(here).strftime("%Y-%m-%dT%H:%M"))
            )
            moment += _HOUR
        return found
    day = start.astimezone(here).date()
    found = []
    while (begin := _midnight(day, here)) < end:
        following = day + timedelta(days=1)
        found.append(Bucket(begin, _midnight(following, here), day.isoformat()))
        day = following
    return found


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def bucketed(cut: Sequence[Slice], into: Sequence[Bucket]) -> list[CapacityFigures]:
    """The figures of ``cut`` within each bucket (an hour partly inside, in proportion).
    Both in time order: each hour is looked at beside the buckets it may overlap only."""
    sums = [[0.0, 0.0, 0.0, 0.0] for _ in into]
    starts = [b.start for b in into]
    longest = max((b.end - b.start for b in into), default=timedelta())
    for s in cut:
        i = bisect.bisect_left(starts, s.start - longest)
        while i < len(into) and (bucket := into[i]).start < s.end:
            inside = bucket.start <= s.start and s.end <= bucket.end
            k = 1.0 if inside else s.share(bucket.start, bucket.end)
            if k > 0:
                found = sums[i]
                found[0] += s.total_s * k
                found[1] += s.committed_s * k
                found[2] += s.unattainable_s * k
                found[3] += s.available_s * k
            i += 1
    return [CapacityFigures(total, committed, lost, free) for total, committed, lost, free in sums]


def summed(
    rows: Iterable[tuple[Bucket, CapacityFigures]],
) -> list[tuple[Bucket, CapacityFigures]]:
    """Figures of the same buckets added up (machines of a capability, a factory, the
    region), in time order; a shift only some machines work is a bucket of its own."""
    found: dict[tuple[datetime, datetime, str], tuple[Bucket, CapacityFigures]] = {}
    for bucket, figures in rows:
        key = (bucket.start, bucket.end, bucket.label)
        known = found.get(key)
        found[key] = (bucket, figures if known is None else known[1] + figures)
    return [found[key] for key in sorted(found)]


def within(cut: Sequence[Slice], start: datetime, end: datetime) -> list[Slice]:
    """The part of ``cut`` within ``[start, end)`` (an hour either end cuts, in proportion)."""
    found = []
    for s in cut:
        k = s.share(start, end)
        if k >= 1:
            found.append(s)
        elif k > 0:
            found.append(
                Slice(
                    max(s.start, start),
                    min(s.end, end),
                    s.total_s * k,
                    s.committed_s * k,
                    s.unattainable_s * k,
                    s.free,
                )
            )
    return found


def withdrawn(cut: Sequence[Slice]) -> list[Slice]:
    """The hours of a machine whose capacity is withdrawn (kyoso/capacity/evidence.py):
    nothing available, nothing free, the committed load kept."""
    return [replace(s, unattainable_s=s.total_s - s.committed_s, free=False) for s in cut]


def free_blocks(cut: Sequence[Slice]) -> list[Block]:
    """The machine's free blocks, in time order."""
    blocks: list[Block] = []
    run: list[Slice] = []
    for s in [*cut, None]:
        if s is not None and s.free and (not run or run[-1].end == s.start):
            run.append(s)
            continue
        if run:
            blocks.append(Block(run[0].start, run[-1].end, math.fsum(r.available_s for r in run)))
        run = [s] if s is not None and s.free else []
    return blocks


def earliest_start(blocks: Sequence[Block], seconds: float) -> Block | None:
    """The first free block offering ``seconds`` of available time."""
    return next((b for b in blocks if b.available_s >= seconds), None)


def earliest_finish(cut: Sequence[Slice], seconds: float) -> datetime | None:
    """When ``seconds`` of available time have gone by (within an hour, in proportion to
    its available time); None if the window does not hold them."""
    left = seconds
    for s in cut:
        available = s.available_s
        if available <= 0:
            continue
        if available >= left:
            return s.start + (s.end - s.start) * (left / available)
        left -= available
    return None
