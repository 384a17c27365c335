"""Shift calendars: when a machine is planned to work.

Planned busy time (PBT, ISO 22400-2) is derived from the calendar alone: weekly shifts
minus their breaks, minus holidays (a country's public holidays and the shop's own days
off, with its working days put back: :mod:`.holidays`), minus planned maintenance
windows. The simulators use it to decide when a machine works, the gateway to mark planned
stops, and the capacity service to compute total capacity, so all three agree to the
second.
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .holidays import WEEKDAYS, HolidayCalendar, Holidays, Weekday, _Strict, plan_of

__all__ = [
    "WEEKDAYS",
    "Break",
    "Interval",
    "LocalTime",
    "Maintenance",
    "Shift",
    "ShiftCalendar",
    "Weekday",
]

Interval = tuple[datetime, datetime]


def _naive(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("shift and break times are local wall-clock times without an offset")
    return value


LocalTime = Annotated[
    time,
    AfterValidator(_naive),
    # JSON Schema's "time" format demands an offset, which a wall-clock time must not have.
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?$", "examples": ["06:00"]}
    ),
]
"""A wall-clock time in the calendar's time zone, e.g. '06:00'."""

_DAY_S = 86_400


def _seconds(value: time) -> float:
    return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6


class Break(_Strict):
    """A planned pause inside a shift (local wall-clock times)."""

    start: LocalTime = Field(description="Local start time, e.g. '09:00'.", examples=["12:00"])
    end: LocalTime = Field(
        description="Local end time; before start means the next day.", examples=["12:45"]
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("a break needs end != start")
        return self


class Shift(_Strict):
    """A weekly recurring shift in the calendar's time zone."""

    name: str = Field(
        default="shift", max_length=64, description="Display name.", examples=["early"]
    )
    days: list[Weekday] = Field(
        min_length=1,
        max_length=7,
        description="Weekdays on which the shift starts.",
        examples=[["mon", "tue", "wed", "thu", "fri"]],
    )
    start: LocalTime = Field(description="Local start time, e.g. '06:00'.", examples=["06:00"])
    end: LocalTime = Field(
        description="Local end time; equal to or before start means the shift ends the next day.",
        examples=["14:30"],
    )
    breaks: list[Break] = Field(
        default_factory=list,
        max_length=16,
        description="Pauses, each within the shift.",
        examples=[[{"start": "12:00", "end": "12:45"}]],
    )

    @field_validator("days")
    @classmethod
    def _unique_days(cls, days: list[Weekday]) -> list[Weekday]:
        if len(set(days)) != len(days):
            raise ValueError("days must not repeat")
        return days

    @model_validator(mode="after")
    def _breaks_inside(self) -> Self:
        origin = _seconds(self.start)
        length = (_seconds(self.end) - origin) % _DAY_S or _DAY_S
        for pause in self.breaks:
            begin = (_seconds(pause.start) - origin) % _DAY_S
            end = (_seconds(pause.end) - origin) % _DAY_S or _DAY_S
            if not begin < end <= length:
                raise ValueError(
                    f"break {pause.start}-{pause.end} is not within the shift "
                    f"{self.start}-{self.end}"
                )
        return self


class Maintenance(_Strict):
    """A planned maintenance window: planned down time, not capacity."""

    start: AwareDatetime = Field(
        description="When it begins (RFC 3339).", examples=["2026-03-02T08:00:00+09:00"]
    )
    end: AwareDatetime = Field(
        description="When it ends, after start.", examples=["2026-03-02T17:00:00+09:00"]
    )
    reason: str = Field(
        default="", max_length=200, description="Why, in words.", examples=["spindle service"]
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("maintenance end must be after its start")
        return self


class ShiftCalendar(_Strict):
    """Weekly shifts, holidays and maintenance of one machine."""

    timezone: str = Field(
        description="IANA time zone of the shift times, e.g. 'Europe/Berlin'.",
        examples=["Asia/Tokyo"],
    )
    shifts: list[Shift] = Field(
        default_factory=list, max_length=32, description="The weekly shifts."
    )
    holidays: Holidays = Field(
        default_factory=list,
        description="Days on which no shift starts: a list of local dates (at most 400); a "
        "country code whose public holidays they are (since 1.2); or an object with a "
        "country, the shop's own days off and its working days (since 1.2).",
        examples=[
            ["2026-01-01", "2026-05-05"],
            "JP",
            {
                "country": "JP",
                "days_off": ["2026-08-13..2026-08-16", "2026-12-29..2027-01-03"],
                "working_days": [{"date": "2026-12-19", "shifts_of": "mon"}],
            },
        ],
    )
    maintenance: list[Maintenance] = Field(
        default_factory=list, max_length=400, description="Planned maintenance windows."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
        return name

    @model_validator(mode="after")
    def _working_days_work(self) -> Self:
        if isinstance(self.holidays, HolidayCalendar):
            for day in self.holidays.working_days:
                weekday = day.shifts_of or WEEKDAYS[day.date.weekday()]
                if not any(weekday in shift.days for shift in self.shifts):
                    raise ValueError(
                        f"holidays: working day {day.date.isoformat()} would start no shift: "
                        f"none starts on {weekday}; name a weekday whose shifts run that day, "
                        "e.g. shifts_of: mon"
                    )
        return self

    def shifts_of(self, day: date) -> Weekday | None:
        """The weekday whose shifts start on the local date ``day``: its own, another on a
        working day that says so, ``None`` on a holiday or day off."""
        return plan_of(self.holidays).shifts_of(day)

    def planned_intervals(self, start: datetime, end: datetime) -> list[Interval]:
        """Planned busy time within ``[start, end)`` as sorted, disjoint UTC intervals."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if end <= start:
            return []
        zone = ZoneInfo(self.timezone)
        first = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date()
        plan = plan_of(self.holidays)
        raw: list[Interval] = []
        day = first
        while day <= last:
            weekday = plan.shifts_of(day)
            if weekday is not None:
                for shift in self.shifts:
                    if weekday in shift.days:
                        raw.extend(_shift_intervals(shift, day, zone))
            day += timedelta(days=1)
        windows = [(m.start.astimezone(UTC), m.end.astimezone(UTC)) for m in self.maintenance]
        return _subtract(_clip(_merge(raw), start.astimezone(UTC), end.astimezone(UTC)), windows)

    def planned_seconds(self, start: datetime, end: datetime) -> float:
        """Planned busy time within ``[start, end)`` in seconds."""
        return sum((b - a).total_seconds() for a, b in self.planned_intervals(start, end))

    def shift_at(self, moment: datetime) -> tuple[Shift, datetime, datetime] | None:
        """The shift in progress at ``moment`` (in one of its breaks too), with its start and
        end in UTC; ``None`` off shift, on a holiday, or in planned maintenance."""
        if moment.tzinfo is None:
            raise ValueError("moment must be timezone-aware")
        if any(m.start <= moment < m.end for m in self.maintenance):
            return None
        zone = ZoneInfo(self.timezone)
        today = moment.astimezone(zone).date()
        plan = plan_of(self.holidays)
        for day in (today - timedelta(days=1), today):
            weekday = plan.shifts_of(day)
            for shift in self.shifts:
                if weekday in shift.days:
                    begin, finish = _shift_span(shift, day, zone)
                    if begin <= moment < finish:
                        return shift, begin.astimezone(UTC), finish.astimezone(UTC)
        return None

    def shifts_between(
        self, start: datetime, end: datetime
    ) -> list[tuple[Shift, datetime, datetime]]:
        """The shifts overlapping ``[start, end)``, in time order, each with its start and
        end in UTC, breaks included (holidays start none; maintenance does not cut them)."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        zone = ZoneInfo(self.timezone)
        day = start.astimezone(zone).date() - timedelta(days=1)
        last = end.astimezone(zone).date()
        plan = plan_of(self.holidays)
        found = []
        while day <= last:
            weekday = plan.shifts_of(day)
            if weekday is not None:
                for shift in self.shifts:
                    if weekday in shift.days:
                        begin, finish = _shift_span(shift, day, zone)
                        if begin < end and finish > start:
                            found.append((shift, begin.astimezone(UTC), finish.astimezone(UTC)))
            day += timedelta(days=1)
        return sorted(found, key=lambda item: (item[1], item[2]))

    def is_planned(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in planned busy time."""
        return bool(self.planned_intervals(moment, moment + timedelta(microseconds=1)))


def _local(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time; a time skipped by a DST change (spring
    forward) means the first instant after the gap, as a clock on the wall shows it.
    Of a time that occurs twice (fall back), the first occurrence counts."""
    wall = datetime.combine(day, at, tzinfo=zone)
    instant = wall.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return instant
    # Inside a gap: the offset changes somewhere between the two readings of the wall time.
    low = wall.replace(fold=1).astimezone(UTC)
    high = instant
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)  # transitions fall on whole seconds


def _shift_span(shift: Shift, day: date, zone: ZoneInfo) -> Interval:
    """Start and end of one shift starting on ``day``, breaks included."""
    end_day = day + timedelta(days=1) if shift.end <= shift.start else day
    return _local(day, shift.start, zone), _local(end_day, shift.end, zone)


def _shift_intervals(shift: Shift, day: date, zone: ZoneInfo) -> list[Interval]:
    """The worked intervals of one shift starting on ``day``."""
    begin, finish = _shift_span(shift, day, zone)
    pauses: list[Interval] = []
    for pause in shift.breaks:
        pause_day = day if pause.start >= shift.start else day + timedelta(days=1)
        pause_end_day = pause_day + timedelta(days=1) if pause.end <= pause.start else pause_day
        pauses.append(
            (_local(pause_day, pause.start, zone), _local(pause_end_day, pause.end, zone))
        )
    return _subtract([(begin, finish)], pauses)


def _merge(intervals: list[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _clip(intervals: list[Interval], start: datetime, end: datetime) -> list[Interval]:
    return [(max(a, start), min(b, end)) for a, b in intervals if b > start and a < end]


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    result = intervals
    for h0, h1 in holes:
        result = list(_cut(result, h0, h1))
    return result


def _cut(intervals: list[Interval], h0: datetime, h1: datetime) -> Iterator[Interval]:
    for a, b in intervals:
        if h1 <= a or h0 >= b:
            yield a, b
            continue
        if a < h0:
            yield a, h0
        if h1 < b:
            yield h1, b
