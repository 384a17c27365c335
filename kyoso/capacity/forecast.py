"""Forward capacity of one machine over a horizon (ISA-95 capability types).

For a horizon ``[as_of, as_of + H)``:

- **total** = planned busy time in the horizon, from the machine's calendar, exactly.
- **committed** = the load the machine is expected to carry: the **expected load**, for
  each hour of the horizon the machine's busy share (APT + AUST over the observed time) in
  the same local hour of the week over the lookback (default four weeks), times that
  hour's attainable time. An hour of the week seen little is shrunk towards the machine's
  overall share (one hour of evidence weighs as much as the prior), and with less than a
  week of history the overall share over the recent days is used for every hour (method
  ``recent_days``). **Bookings consume the expected load** (as orders consume a demand
  forecast in planning systems): each booking's hours are spread over its own planned
  time; over the hours the bookings span, committed is the booked load plus what is
  expected there beyond it (the rest of the expected load, in proportion to each hour's
  share), so the larger of the two: a booking never lowers committed, and declaring the
  orders the history already expected does not count them twice (in the capacity
  backtest, a region whose factories declare the work they then did: 85 % MAPE with
  bookings added on top of the expected load, 15 % with bookings consuming it, always on
  the safe side).
- **held** load (holds and orders the matching platform placed, :mod:`kyoso.api.holds`) is
  work from outside the factory: it comes on top of the committed load, never consumed by
  it, each hold taking its hours from what is available in its window in proportion to
  each hour's available time (so a hold accepted because its window had the room never
  overfills an hour), holds in the order they were placed.
- **unattainable** = the planned time of a machine that is down now, until its expected
  repair (learnt per machine, :mod:`.repair`), plus the expected losses in the rest of the
  horizon: the delay share (ADET over the observed time) by hour of the week, as above.
- **available** = total - committed - unattainable, never negative (committed is cut
  where bookings and losses exceed the planned time, so the four always add up).

The shares are taken over *observed* time (running, setup, down and idle seconds), so
time without data and ``unknown`` time neither count as idle nor as load; they lower the
**history coverage** instead (:attr:`LoadProfile.coverage`: the observed time over the
planned busy time of the lookback) and the confidence (:mod:`.confidence`).
"""

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from kyoso.contract import MachineState, ShiftCalendar
from kyoso.store import StateWindow

__all__ = [
    "HOURS_PER_WEEK",
    "Booking",
    "CapacityFigures",
    "HourLoad",
    "LoadProfile",
    "ProfileMethod",
    "Reason",
    "Slice",
    "WeekHour",
    "forecast",
    "free_in",
    "hour_load",
    "hourly",
    "week_hours",
]

HOURS_PER_WEEK: Final = 168
_HOUR: Final = timedelta(hours=1)
_PRIOR_S: Final = 3600.0
"""Evidence of the overall share, in seconds, mixed into each hour-of-week share."""

ProfileMethod = Literal["hour_of_week", "recent_days", "no_history"]
Reason = Literal[
    "forecast:hour_of_week",
    "forecast:recent_days",
    "forecast:no_history",
    "booked",
    "held",
    "down",
    "minor_stop",
    "no_planned_time",
    "offline",
    "unreadable",
    "insufficient_history",
    "history:backfilling",
]
"""How capacity figures were derived, and why they are withheld (docs/api.md)."""
_FORECAST: Final[dict[ProfileMethod, Reason]] = {
    "hour_of_week": "forecast:hour_of_week",
    "recent_days": "forecast:recent_days",
    "no_history": "forecast:no_history",
}


@dataclass(frozen=True, slots=True)
class Booking:
    """Load a factory declared for a machine: ``hours`` of work within ``[start, end)``
    (all the planned time of that span when ``hours`` is None)."""

    start: datetime
    end: datetime
    hours: float | None = None


@dataclass(frozen=True, slots=True)
class LoadProfile:
    """A machine's busy and delay shares by local hour of the week, from its history."""

    busy: tuple[float, ...]
    """Per hour of the week (Monday 00:00 local is 0): (APT + AUST) / observed."""
    lost: tuple[float, ...]
    """Per hour of the week: ADET / observed."""
    observed_s: float
    """Running, setup, down and idle seconds in the lookback."""
    planned_s: float
    """Planned busy time of the lookback (the calendar's)."""
    method: ProfileMethod

    @property
    def coverage(self) -> float:
        """Observed over planned time of the lookback, at most 1 (0 without plans)."""
        return min(1.0, self.observed_s / self.planned_s) if self.planned_s > 0 else 0.0

    @classmethod
    def build(
        cls,
        windows: Sequence[StateWindow],
        calendar: ShiftCalendar,
        start: datetime,
        end: datetime,
    ) -> "LoadProfile":
        """The profile of the hourly ``windows`` of one machine over ``[start, end)``."""
        zone = ZoneInfo(calendar.timezone)
        seen = [load for load in map(hour_load, windows) if load[3] > 0]
        return cls.of_week_hours(
            (
                (_hour_of_week(begin, zone), busy, lost, seen_s)
                for begin, busy, lost, seen_s in seen
            ),
            min((load[0] for load in seen), default=None),
            calendar.planned_seconds(start, end),
            end,
        )

    @classmethod
    def of_week_hours(
        cls, hours: Iterable["WeekHour"], first: datetime | None, planned_s: float, end: datetime
    ) -> "LoadProfile":
        """The profile of one machine's observed hours, in time order, the first of them
        beginning at ``first``, over a window ending at ``end`` with ``planned_s`` of
        planned time: what :meth:`build` does with windows, for whatever kept their sums
        (:class:`~kyoso.capacity.history.LoadHistory`)."""
        busy = [0.0] * HOURS_PER_WEEK
        lost = [0.0] * HOURS_PER_WEEK
        seen = [0.0] * HOURS_PER_WEEK
        for hour, busy_s, lost_s, observed in hours:
            busy[hour] += busy_s
            lost[hour] += lost_s
            seen[hour] += observed
        observed_s = math.fsum(seen)
        if observed_s <= 0 or first is None:
            zeros = (0.0,) * HOURS_PER_WEEK
            return cls(zeros, zeros, 0.0, planned_s, "no_history")
        overall_busy = math.fsum(busy) / observed_s
        overall_lost = math.fsum(lost) / observed_s
        if end - first < timedelta(days=7):
            flat_busy = (overall_busy,) * HOURS_PER_WEEK
            flat_lost = (overall_lost,) * HOURS_PER_WEEK
            return cls(flat_busy, flat_lost, observed_s, planned_s, "recent_days")
        return cls(
            tuple(_shrunk(b, n, overall_busy) for b, n in zip(busy, seen, strict=True)),
            tuple(_shrunk(d, n, overall_lost) for d, n in zip(lost, seen, strict=True)),
            observed_s,
            planned_s,
            "hour_of_week",
        )


HourLoad = tuple[datetime, float, float, float]
"""An hour (or window) of one machine's history: its start, and its busy (running + setup),
lost (down) and observed (running, setup, down and idle) seconds."""
WeekHour = tuple[int, float, float, float]
"""An observed hour of one machine's history: its place in the local week (Monday 00:00 is
0), and its busy, lost and observed seconds."""


def hour_load(window: StateWindow) -> HourLoad:
    """What a window of state seconds tells a load profile."""
    s = window.seconds
    running, setup = s.get(MachineState.RUNNING, 0.0), s.get(MachineState.SETUP, 0.0)
    down, idle = s.get(MachineState.DOWN, 0.0), s.get(MachineState.IDLE, 0.0)
    busy = running + setup
    return window.start, busy, down, busy + down + idle


def _shrunk(amount: float, observed: float, prior: float) -> float:
    return (amount + _PRIOR_S * prior) / (observed + _PRIOR_S)


def _hour_of_week(moment: datetime, zone: ZoneInfo) -> int:
    local = moment.astimezone(zone)
    return local.weekday() * 24 + local.hour


@functools.lru_cache(maxsize=64)
def week_hours(timezone: str, first: datetime, count: int) -> tuple[int, ...]:
    """The place in the local week of ``count`` hours from ``first``: the same weeks of
    hours for every machine of a time zone, converted once."""
    zone = ZoneInfo(timezone)
    return tuple(_hour_of_week(first + i * _HOUR, zone) for i in range(count))


@dataclass(frozen=True, slots=True)
class CapacityFigures:
    """Capacity of one machine (or a sum of machines) over a horizon, in seconds."""

    total_s: float
    committed_s: float
    unattainable_s: float
    available_s: float
    reasons: tuple[Reason, ...] = field(default=())

    def __add__(self, other: "CapacityFigures") -> "CapacityFigures":
        return CapacityFigures(
            self.total_s + other.total_s,
            self.committed_s + other.committed_s,
            self.unattainable_s + other.unattainable_s,
            self.available_s + other.available_s,
            tuple(dict.fromkeys(self.reasons + other.reasons)),
        )

    def noted(self, reason: Reason) -> "CapacityFigures":
        """The same figures with one more reason to read them with care."""
        return replace(self, reasons=tuple(dict.fromkeys((*self.reasons, reason))))

    def withdrawn(self, reason: Reason) -> "CapacityFigures":
        """The same planned time with nothing available: all but the committed load is
        unattainable (a silent gateway: capacity must not be sold on stale data)."""
        return CapacityFigures(
            self.total_s,
            self.committed_s,
            self.total_s - self.committed_s,
            0.0,
            (*self.reasons, reason),
        )


def forecast(
    calendar: ShiftCalendar,
    profile: LoadProfile,
    as_of: datetime,
    horizon: timedelta,
    *,
    down_now: bool = False,
    repair_estimate: timedelta = timedelta(hours=2),
    down_reason: Reason = "down",
    bookings: Iterable[Booking] | None = None,
    held: Sequence[Booking] = (),
) -> CapacityFigures:
    """The capacity figures of one machine over ``[as_of, as_of + horizon)``.

    Committed is the expected load (the profile's busy share of each hour). ``bookings``
    consume it (see the module docstring): over the hours they span, committed is the
    larger of the booked load and the expected load, never less than without them. The
    ``held`` load comes on top, within what is available in each hold's window."""
    hours = _hourly(
        calendar,
        profile,
        as_of,
        as_of + horizon,
        down_now=down_now,
        repair_estimate=repair_estimate,
        bookings=bookings,
    )
    if held:
        committed = math.fsum(c.committed_s for c in _place(_spread(hours), held))
    else:
        # Bookings consume the expected load of the hours they span: there, committed is
        # the larger of the booked and the expected load, within what those hours can hold.
        spanned = [h for h in hours if h.taken > 0]
        committed = math.fsum(h.expected for h in hours if h.taken <= 0) + min(
            max(math.fsum(h.taken for h in spanned), math.fsum(h.expected for h in spanned)),
            math.fsum(h.room for h in spanned),
        )
    reasons = _reasons(profile, down_now, down_reason, bookings is not None, bool(held))
    return _figures(hours, committed, reasons)


def hourly(
    calendar: ShiftCalendar,
    profile: LoadProfile,
    as_of: datetime,
    horizon: timedelta,
    *,
    down_now: bool = False,
    repair_estimate: timedelta = timedelta(hours=2),
    down_reason: Reason = "down",
    bookings: Iterable[Booking] | None = None,
    held: Sequence[Booking] = (),
) -> tuple[CapacityFigures, list["Slice"]]:
    """The figures of :func:`forecast`, and the same hour by hour (they add up to them)."""
    hours = _hourly(
        calendar,
        profile,
        as_of,
        as_of + horizon,
        down_now=down_now,
        repair_estimate=repair_estimate,
        bookings=bookings,
    )
    cut = _place(_spread(hours), held)
    reasons = _reasons(profile, down_now, down_reason, bookings is not None, bool(held))
    return _figures(hours, math.fsum(c.committed_s for c in cut), reasons), cut


def _reasons(
    profile: LoadProfile, down_now: bool, down_reason: Reason, booked: bool, held: bool
) -> list[Reason]:
    reasons: list[Reason] = ["booked"] if booked else []
    if held:
        reasons.append("held")
    reasons.append(_FORECAST[profile.method])
    if down_now:
        reasons.append(down_reason)
    return reasons


def _figures(hours: Sequence["_Hour"], committed: float, reasons: list[Reason]) -> CapacityFigures:
    total = math.fsum(h.total for h in hours)
    unattainable = math.fsum(h.unattainable for h in hours)
    if total == 0:
        reasons.append("no_planned_time")
    available = max(0.0, total - committed - unattainable)
    return CapacityFigures(total, committed, unattainable, available, tuple(reasons))


@dataclass(slots=True)  # not frozen: one per machine-hour, and frozen ones cost 5x to make
class Slice:
    """A stretch of one machine's planned time within one UTC hour, and its figures: the
    horizon's figures of :func:`forecast`, hour by hour (they add up to them)."""

    start: datetime
    end: datetime
    total_s: float
    committed_s: float
    unattainable_s: float
    free: bool
    """Neither booked nor held, and attainable (not awaiting a repair): a job could run
    here without interrupting or being interrupted by declared work."""

    @property
    def available_s(self) -> float:
        return max(0.0, self.total_s - self.committed_s - self.unattainable_s)

    def share(self, start: datetime, end: datetime) -> float:
        """The share of this stretch within ``[start, end)``."""
        inside = (min(self.end, end) - max(self.start, start)).total_seconds()
        return max(0.0, inside) / (self.end - self.start).total_seconds()


def free_in(cut: Sequence[Slice], start: datetime, end: datetime) -> float:
    """Available seconds of ``cut`` within ``[start, end)`` (an hour partly inside counts
    its available time in proportion)."""
    return math.fsum(s.available_s * s.share(start, end) for s in cut)


@dataclass(slots=True)  # not frozen: one per machine-hour, and frozen ones cost 5x to make
class _Hour:
    """A stretch of planned time within one UTC hour, as :func:`forecast` sees it."""

    begin: datetime
    end: datetime
    total: float
    unattainable: float
    """Awaiting a repair, and the expected losses."""
    room: float
    """Attainable time less expected losses: what load can fill."""
    expected: float
    """The expected load (within the room)."""
    taken: float
    """Booked load (within the attainable time)."""


def _hourly(
    calendar: ShiftCalendar,
    profile: LoadProfile,
    as_of: datetime,
    end: datetime,
    *,
    down_now: bool,
    repair_estimate: timedelta,
    bookings: Iterable[Booking] | None,
) -> list[_Hour]:
    zone = ZoneInfo(calendar.timezone)
    planned = calendar.planned_intervals(as_of, end)
    repaired = as_of + repair_estimate if down_now else as_of
    booked = None if bookings is None else _booked(calendar, bookings, planned)
    hours: list[_Hour] = []
    for a, b in planned:
        for begin, hi in _hours(a, b):
            length = (hi - begin).total_seconds()
            lo = max(begin, repaired)
            if lo >= hi:
                hours.append(_Hour(begin, hi, length, length, 0.0, 0.0, 0.0))
                continue
            seconds = (hi - lo).total_seconds()
            hour = _hour_of_week(lo, zone)
            loss = profile.lost[hour] * seconds
            taken = 0.0 if booked is None else min(seconds, booked(lo, hi))
            room = seconds - loss
            unattainable = (lo - begin).total_seconds() + loss
            expected = min(profile.busy[hour] * seconds, room)
            hours.append(_Hour(begin, hi, length, unattainable, room, expected, taken))
    return hours


def _spread(hours: Sequence[_Hour]) -> list[Slice]:
    """Each hour's share of the committed load :func:`forecast` finds: the expected load
    where nothing is booked; over the hours bookings span, their total (the larger of the
    booked and the expected load, within the room) laid first where it is booked, then
    where it is expected, then over the room left, so no hour holds more than its room."""
    spanned = {i: h for i, h in enumerate(hours) if h.taken > 0}
    base = {i: min(h.taken, h.room) for i, h in spanned.items()}
    booked = math.fsum(h.taken for h in spanned.values())
    expected = math.fsum(h.expected for h in spanned.values())
    total = min(max(booked, expected), math.fsum(h.room for h in spanned.values()))
    rest = max(0.0, total - math.fsum(base.values()))
    beyond = {i: max(0.0, h.expected - base[i]) for i, h in spanned.items()}
    first = _shares(min(rest, math.fsum(beyond.values())), beyond)
    room = {i: h.room - base[i] - first[i] for i, h in spanned.items()}
    second = _shares(rest - math.fsum(first.values()), room)
    return [
        Slice(
            h.begin,
            h.end,
            h.total,
            base[i] + first[i] + second[i] if i in spanned else h.expected,
            h.unattainable,
            i not in spanned and h.room > 0,
        )
        for i, h in enumerate(hours)
    ]


def _shares(amount: float, weights: dict[int, float]) -> dict[int, float]:
    """``amount`` split in proportion to ``weights`` (none of it when they are all 0)."""
    whole = math.fsum(weights.values())
    if amount <= 0 or whole <= 0:
        return dict.fromkeys(weights, 0.0)
    return {k: amount * w / whole for k, w in weights.items()}


def _place(cut: list[Slice], held: Sequence[Booking]) -> list[Slice]:
    """``cut`` with each held load added, in order, where its window has room left: in
    proportion to each hour's available time there (so never more than it; what finds no
    room, when the machine lost time after the hold was accepted, is not counted)."""
    for hold in held:
        room = {i: s.available_s * s.share(hold.start, hold.end) for i, s in enumerate(cut)}
        wanted = (hold.hours or 0.0) * 3600.0
        for i, seconds in _shares(min(wanted, math.fsum(room.values())), room).items():
            if seconds > 0:
                s = cut[i]
                cut[i] = replace(s, committed_s=s.committed_s + seconds, free=False)
    return cut


def _hours(start: datetime, end: datetime) -> Iterable[tuple[datetime, datetime]]:
    """``[start, end)`` cut at whole UTC hours."""
    cut = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + _HOUR
    while start < end:
        yield start, min(cut, end)
        start, cut = cut, cut + _HOUR


def _booked(
    calendar: ShiftCalendar,
    bookings: Iterable[Booking],
    planned: Sequence[tuple[datetime, datetime]],
) -> "_BookedLoad":
    spans: list[tuple[datetime, datetime, float]] = []
    for booking in bookings:
        span_planned = calendar.planned_seconds(booking.start, booking.end)
        if span_planned <= 0:
            continue
        load = span_planned if booking.hours is None else booking.hours * 3600.0
        spans.append((booking.start, booking.end, min(1.0, load / span_planned)))
    return _BookedLoad(spans)


@dataclass(frozen=True, slots=True)
class _BookedLoad:
    """Booked seconds within a stretch of planned time: each booking's load is spread
    evenly over its own planned time (as a share), overlapping bookings add up."""

    spans: list[tuple[datetime, datetime, float]]

    def __call__(self, start: datetime, end: datetime) -> float:
        return sum(
            share * (min(end, b) - max(start, a)).total_seconds()
            for a, b, share in self.spans
            if a < end and b > start
        )
