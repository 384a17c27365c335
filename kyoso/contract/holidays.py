"""Days off and working days of a shift calendar: which weekday's shifts start on a date.

A calendar's ``holidays`` come in three forms, each kept as written on the wire:

- a list of local dates (contract 1.0): no shift starts on them;
- a country code, ``"JP"``: that country's public holidays, from the ``holidays`` library
  (python-holidays), which follows each country's law — for Japan the substitute holidays
  (振替休日) and citizens' holidays (国民の休日) included;
- a :class:`HolidayCalendar`: a country's public holidays (optional, with a subdivision
  where the library knows one), the company's or the prefecture's own days off (dates and
  inclusive ranges, お盆 and 年末年始), and working days (出勤日) that override both and
  the weekly pattern.

A date resolves by one rule (:class:`DayPlan`): a working day runs the shifts of the
weekday it names (its own weekday unless ``shifts_of`` says another); otherwise a day off
or a public holiday starts no shift; otherwise the date's own weekday's shifts start.
Public holidays are resolved once per country, subdivision and year and cached, so a
lookup is a set membership; the library is imported on the first calendar naming a
country, and a consumer that never sees one does not need it.
"""

import functools
import importlib.metadata
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationInfo,
    field_validator,
)

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

MAX_RANGE_DAYS: Final = 366
"""The longest range of days off one item may name (a year, leap day included)."""

Day = date
"""A local date (named apart so that a field may be called ``date``)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


@functools.cache
def _countries() -> Mapping[str, Sequence[str]]:
    """Country codes (ISO 3166-1 alpha-2) the library knows, each with its subdivisions."""
    import holidays  # noqa: PLC0415 (only calendars naming a country need it)

    return holidays.list_supported_countries()


def _library() -> str:
    """The library named with its version, for a refusal: a gateway's may know more."""
    return f"the holidays library {importlib.metadata.version('holidays')}"


@functools.lru_cache(maxsize=4096)
def public_holidays(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """The public holidays of ``country`` (and ``subdivision``) in ``year``, observed days
    included; none in a year the library has no data for (Japan: before 1949, after 2099)."""
    import holidays  # noqa: PLC0415

    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year))


def _known_country(code: str) -> str:
    upper = code.upper()
    if upper not in _countries():
        raise ValueError(
            f"unknown country code {code!r}: {_library()} has no public holidays for it "
            "(ISO 3166-1 alpha-2, e.g. 'JP')"
        )
    return upper


CountryCode = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z]{2}$"),
    AfterValidator(_known_country),
    Field(examples=["JP"]),
]
"""A country whose public holidays the library knows, ISO 3166-1 alpha-2 in any case;
kept in upper case."""


def _range(text: str) -> str:
    first_text, last_text = text.split("..")
    try:
        first, last = date.fromisoformat(first_text), date.fromisoformat(last_text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a range of two dates: {exc}") from exc
    if last < first:
        raise ValueError(f"the range {text} ends before it starts")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise ValueError(f"the range {text} is longer than {MAX_RANGE_DAYS} days")
    return text


DateRange = Annotated[
    str,
    StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}\.\.\d{4}-\d{2}-\d{2}$"),
    AfterValidator(_range),
]
"""Local dates from the first to the last, both included: '2026-12-29..2027-01-03'."""


def _day_or_range(value: Any) -> str:
    return "range" if isinstance(value, str) and ".." in value else "date"


DayOff = Annotated[
    Annotated[Day, Tag("date")] | Annotated[DateRange, Tag("range")],
    Discriminator(_day_or_range),
]
"""A local date, or an inclusive range of them."""


def _expanded(days: Sequence[date | str]) -> frozenset[date]:
    found: set[date] = set()
    for item in days:
        if isinstance(item, date):
            found.add(item)
            continue
        first, last = (date.fromisoformat(part) for part in item.split(".."))
        found.update(first + timedelta(days=n) for n in range((last - first).days + 1))
    return frozenset(found)


class WorkingDay(_Strict):
    """A date the shop works although the calendar would not (出勤日): a Saturday, a public
    holiday or one of its own days off."""

    date: Day = Field(description="The local date.", examples=["2026-12-19"])
    shifts_of: Weekday | None = Field(
        default=None,
        description="The weekday whose shifts run that day; default: the date's own weekday. "
        "On a weekend day of a Monday-to-Friday calendar, name one, e.g. 'mon'.",
        examples=["mon"],
    )


class HolidayCalendar(_Strict):
    """A country's public holidays, the shop's own days off, and its working days."""

    country: CountryCode | None = Field(
        default=None,
        description="ISO 3166-1 alpha-2 code of the country whose public holidays are days "
        "off (from the holidays library), any case; none: only the days below.",
        examples=["JP"],
    )
    subdivision: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="A subdivision of the country (state, province) whose own public holidays "
        "count too, as the holidays library names it, e.g. 'BY' in Germany.",
        examples=["BY"],
    )
    days_off: list[DayOff] = Field(
        default_factory=list,
        max_length=400,
        description="The shop's or its region's own days off: local dates, and inclusive "
        "ranges 'YYYY-MM-DD..YYYY-MM-DD' of at most 366 days.",
        examples=[["2026-06-23", "2026-08-13..2026-08-16", "2026-12-29..2027-01-03"]],
    )
    working_days: list[WorkingDay] = Field(
        default_factory=list,
        max_length=400,
        description="Days worked although a public holiday, a day off or a weekday without "
        "shifts; each overrides the rest.",
        examples=[[{"date": "2026-12-19", "shifts_of": "mon"}]],
    )

    @field_validator("subdivision")
    @classmethod
    def _known_subdivision(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is None or "country" not in info.data:  # none, or its country refused
            return name
        country = info.data["country"]
        if country is None:
            raise ValueError("a subdivision needs its country")
        known = _countries()[country]
        if not known:
            raise ValueError(
                f"country {country} has no subdivisions in {_library()}: put a region's own "
                "days off in days_off"
            )
        spelled = {known_name.upper(): known_name for known_name in known}.get(name.upper())
        if spelled is None:
            raise ValueError(
                f"country {country} has no subdivision {name!r} in {_library()}; "
                f"it knows: {', '.join(known)}"
            )
        return spelled

    @field_validator("working_days")
    @classmethod
    def _once_each(cls, days: list[WorkingDay]) -> list[WorkingDay]:
        seen: set[date] = set()
        for day in days:
            if day.date in seen:
                raise ValueError(f"working_days name {day.date.isoformat()} twice")
            seen.add(day.date)
        return days

    @functools.cached_property
    def plan(self) -> "DayPlan":
        """What starts on each date, resolved once per calendar."""
        return DayPlan(
            _expanded(self.days_off),
            {d.date: d.shifts_of or WEEKDAYS[d.date.weekday()] for d in self.working_days},
            self.country,
            self.subdivision,
        )


class DayPlan:
    """Which weekday's shifts start on each local date (see the module docstring)."""

    __slots__ = ("_country", "_off", "_subdivision", "_working")

    def __init__(
        self,
        off: frozenset[date],
        working: Mapping[date, Weekday],
        country: str | None = None,
        subdivision: str | None = None,
    ) -> None:
        self._off = off
        self._working = working
        self._country = country
        self._subdivision = subdivision

    def shifts_of(self, day: date) -> Weekday | None:
        """The weekday whose shifts start on ``day``; ``None`` on a day off or holiday."""
        if self._working and day in self._working:
            return self._working[day]
        if day in self._off:
            return None
        if self._country is not None and day in public_holidays(
            self._country, self._subdivision, day.year
        ):
            return None
        return WEEKDAYS[day.weekday()]


def _form(value: Any) -> str:
    if isinstance(value, str):
        return "country"
    if isinstance(value, dict | HolidayCalendar):
        return "rules"
    return "dates"


Holidays = Annotated[
    Annotated[list[Day], Field(max_length=400), Tag("dates")]
    | Annotated[CountryCode, Tag("country")]
    | Annotated[HolidayCalendar, Tag("rules")],
    Discriminator(_form),
]
"""A calendar's ``holidays`` in any of its three forms."""


@functools.lru_cache(maxsize=256)
def _country_plan(country: str) -> DayPlan:
    return DayPlan(frozenset(), {}, country)


def plan_of(holidays: list[date] | str | HolidayCalendar) -> DayPlan:
    """The :class:`DayPlan` of ``holidays`` in any form; built once for the last two."""
    if isinstance(holidays, HolidayCalendar):
        return holidays.plan
    if isinstance(holidays, str):
        return _country_plan(holidays)
    return DayPlan(frozenset(holidays), {})
