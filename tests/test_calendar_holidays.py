"""National holidays in shift calendars (contract 1.2): a country's public holidays from the
holidays library, the shop's own days off and its working days; planned busy time follows
them, and the plain list of dates works as before (kyoso/contract/holidays.py)."""

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kyoso.contract import (
    Break,
    ContractError,
    MachineDescription,
    Shift,
    ShiftCalendar,
    decode,
    encode,
)
from kyoso.contract.holidays import HolidayCalendar, public_holidays
from kyoso.gateway.config import load_config
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.simulators.history import history_descriptions

TOKYO = ZoneInfo("Asia/Tokyo")
EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"
DESCRIPTION = Path(__file__).resolve().parent / "contract_examples" / "machine_description.json"
TOPIC = "kyoso/v1/mori-plastics/gw-01/machines/imm-01"

# 内閣府「国民の祝日について」: the public holidays of 2026 and 2027, substitute holidays
# (振替休日: 2026-05-06, 2027-03-22) and the citizens' holiday (国民の休日: 2026-09-22)
# included. Written out here as the ground truth the library is held to.
OFFICIAL = {
    2026: [
        "2026-01-01",  # 元日
        "2026-01-12",  # 成人の日
        "2026-02-11",  # 建国記念の日
        "2026-02-23",  # 天皇誕生日
        "2026-03-20",  # 春分の日
        "2026-04-29",  # 昭和の日
        "2026-05-03",  # 憲法記念日
        "2026-05-04",  # みどりの日
        "2026-05-05",  # こどもの日
        "2026-05-06",  # 振替休日
        "2026-07-20",  # 海の日
        "2026-08-11",  # 山の日
        "2026-09-21",  # 敬老の日
        "2026-09-22",  # 国民の休日
        "2026-09-23",  # 秋分の日
        "2026-10-12",  # スポーツの日
        "2026-11-03",  # 文化の日
        "2026-11-23",  # 勤労感謝の日
    ],
    2027: [
        "2027-01-01",  # 元日
        "2027-01-11",  # 成人の日
        "2027-02-11",  # 建国記念の日
        "2027-02-23",  # 天皇誕生日
        "2027-03-21",  # 春分の日
        "2027-03-22",  # 振替休日
        "2027-04-29",  # 昭和の日
        "2027-05-03",  # 憲法記念日
        "2027-05-04",  # みどりの日
        "2027-05-05",  # こどもの日
        "2027-07-19",  # 海の日
        "2027-08-11",  # 山の日
        "2027-09-20",  # 敬老の日
        "2027-09-23",  # 秋分の日
        "2027-10-11",  # スポーツの日
        "2027-11-03",  # 文化の日
        "2027-11-23",  # 勤労感謝の日
    ],
}

WEEKDAYS_8_17 = Shift(
    name="day",
    days=["mon", "tue", "wed", "thu", "fri"],
    start=time(8),
    end=time(17),
    breaks=[Break(start=time(12), end=time(13))],
)
SATURDAY_8_12 = Shift(name="saturday", days=["sat"], start=time(8), end=time(12))
NIGHT_22_6 = Shift(
    name="night", days=["mon", "tue", "wed", "thu", "fri"], start=time(22), end=time(6)
)


def calendar(holidays: Any, *shifts: Shift) -> ShiftCalendar:
    return ShiftCalendar.model_validate(
        {"timezone": "Asia/Tokyo", "shifts": list(shifts or [WEEKDAYS_8_17]), "holidays": holidays}
    )


def midnight(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time(), TOKYO)


def hours_on(cal: ShiftCalendar, day: str) -> float:
    """Planned hours of the local day ``day``."""
    start = midnight(day)
    return cal.planned_seconds(start, start + timedelta(days=1)) / 3600


def days_without_shifts(cal: ShiftCalendar, year: int) -> list[str]:
    day, found = date(year, 1, 1), []
    while day.year == year:
        if cal.shifts_of(day) is None:
            found.append(day.isoformat())
        day += timedelta(days=1)
    return found


# --- a country's public holidays --------------------------------------------------------


@pytest.mark.parametrize("year", sorted(OFFICIAL))
def test_japan_resolves_to_the_cabinet_office_list(year: int) -> None:
    assert days_without_shifts(calendar("jp"), year) == OFFICIAL[year]
    assert days_without_shifts(calendar({"country": "JP"}), year) == OFFICIAL[year]


def test_the_country_code_is_read_in_any_case_and_kept_in_upper_case() -> None:
    assert calendar("jp") == calendar("JP") == calendar("Jp")
    assert calendar("jp").holidays == "JP"
    rules = calendar({"country": "jp"}).holidays
    assert isinstance(rules, HolidayCalendar)
    assert rules.country == "JP"


@pytest.mark.parametrize(
    ("holiday", "after"),
    [
        ("2026-05-06", "2026-05-07"),  # 振替休日, a Wednesday
        ("2026-09-22", "2026-09-24"),  # 国民の休日 between two holidays
        ("2027-03-22", "2027-03-23"),  # 振替休日 of a Sunday equinox
        ("2026-11-23", "2026-11-24"),  # 勤労感謝の日, a Monday
    ],
)
def test_a_holiday_plans_nothing_and_the_day_after_is_a_normal_day(
    holiday: str, after: str
) -> None:
    cal = calendar("jp")
    assert hours_on(cal, holiday) == 0
    assert hours_on(cal, after) == 8
    assert hours_on(calendar([]), holiday) == 8  # the same weekday without the country


def test_every_query_of_the_calendar_honours_the_holidays() -> None:
    cal = calendar("jp", WEEKDAYS_8_17, NIGHT_22_6)
    # 2026-05-01 (Fri) to 05-07 (Thu): the Golden Week holidays start no shift; Friday's
    # night shift runs into Saturday; the 6th's (substitute holiday) night shift starts none.
    between = cal.shifts_between(midnight("2026-05-01"), midnight("2026-05-08"))
    starts = [(s.name, begin.astimezone(TOKYO).date().isoformat()) for s, begin, _ in between]
    assert starts == [
        ("night", "2026-04-30"),  # Thursday's, into the morning of the 1st
        ("day", "2026-05-01"),
        ("night", "2026-05-01"),
        ("day", "2026-05-07"),
        ("night", "2026-05-07"),
    ]
    assert cal.shift_at(midnight("2026-05-06") + timedelta(hours=10)) is None
    assert not cal.is_planned(midnight("2026-05-06") + timedelta(hours=10))
    in_progress = cal.shift_at(midnight("2026-05-02") + timedelta(hours=3))
    assert in_progress is not None
    assert in_progress[0].name == "night"
    assert cal.is_planned(midnight("2026-05-07") + timedelta(hours=10))
    intervals = cal.planned_intervals(midnight("2026-05-05"), midnight("2026-05-08"))
    assert intervals[0][0] == midnight("2026-05-07").replace(hour=8).astimezone(UTC)


def test_a_subdivision_adds_its_own_holidays() -> None:
    national = calendar("de")
    bavaria = calendar({"country": "de", "subdivision": "by"})
    assert isinstance(bavaria.holidays, HolidayCalendar)
    assert bavaria.holidays.subdivision == "BY"
    assert hours_on(national, "2026-01-06") == 8  # Heilige Drei Könige: Bavaria's only
    assert hours_on(bavaria, "2026-01-06") == 0
    assert hours_on(bavaria, "2026-12-25") == hours_on(national, "2026-12-25") == 0


def test_a_year_of_a_country_is_resolved_once() -> None:
    cal = calendar("jp")
    public_holidays.cache_clear()
    for _ in range(50):
        cal.planned_seconds(midnight("2026-05-01"), midnight("2026-05-08"))
        cal.shift_at(midnight("2026-05-06"))
    info = public_holidays.cache_info()
    assert (info.misses, info.hits > 0) == (1, True)


# --- the shop's days off and working days -------------------------------------------------


def test_days_off_take_dates_and_inclusive_ranges_across_a_new_year() -> None:
    cal = calendar(
        {
            "country": "jp",
            "days_off": ["2026-06-23", "2026-08-13..2026-08-16", "2026-12-29..2027-01-03"],
        }
    )
    assert hours_on(cal, "2026-06-23") == 0  # 慰霊の日 (Okinawa), a Tuesday
    assert [hours_on(cal, f"2026-08-{d}") for d in range(12, 18)] == [8, 0, 0, 0, 0, 8]
    end_of_year = [hours_on(cal, f"2026-12-{d}") for d in range(28, 32)]
    new_year = [hours_on(cal, f"2027-01-0{d}") for d in range(1, 6)]
    assert end_of_year + new_year == [8, 0, 0, 0, 0, 0, 0, 8, 8]


def test_a_working_saturday_runs_the_shifts_it_names() -> None:
    cal = calendar({"country": "jp", "working_days": [{"date": "2026-12-19", "shifts_of": "mon"}]})
    assert hours_on(calendar("jp"), "2026-12-19") == 0
    assert hours_on(cal, "2026-12-19") == 8
    assert cal.shifts_of(date(2026, 12, 19)) == "mon"
    assert hours_on(cal, "2026-12-26") == 0  # the next Saturday as before
    own = calendar(
        {"country": "jp", "working_days": [{"date": "2026-05-04"}]}, WEEKDAYS_8_17, SATURDAY_8_12
    )
    assert hours_on(own, "2026-05-04") == 8  # a Monday holiday worked as a Monday
    assert hours_on(own, "2026-05-05") == 0


def test_a_worked_holiday_and_a_worked_day_off_have_planned_time() -> None:
    cal = calendar(
        {
            "country": "jp",
            "days_off": ["2026-08-13..2026-08-16"],
            "working_days": [{"date": "2026-11-23"}, {"date": "2026-08-15", "shifts_of": "fri"}],
        }
    )
    assert hours_on(cal, "2026-11-23") == 8
    assert hours_on(cal, "2026-08-15") == 8  # a Saturday inside お盆
    assert hours_on(cal, "2026-08-14") == 0
    assert cal.is_planned(midnight("2026-11-23") + timedelta(hours=9))
    shift = cal.shift_at(midnight("2026-11-23") + timedelta(hours=9))
    assert shift is not None
    assert shift[0].name == "day"


def test_a_calendar_of_days_without_a_country() -> None:
    cal = calendar({"days_off": ["2026-12-29..2027-01-03"]})
    assert hours_on(cal, "2026-12-29") == 0
    assert hours_on(cal, "2027-01-11") == 8  # 成人の日 is no day off without the country


@settings(max_examples=100, deadline=None)
@given(
    days=st.lists(
        st.tuples(st.dates(date(2026, 1, 1), date(2027, 12, 31)), st.integers(0, 20)),
        max_size=6,
    ),
    first=st.dates(date(2026, 1, 1), date(2027, 12, 24)),
)
def test_days_off_plan_as_the_list_of_their_dates(
    days: list[tuple[date, int]], first: date
) -> None:
    """Ranges are their dates: the same plan as the old list of every date they hold."""
    written = [d.isoformat() if n == 0 else f"{d}..{d + timedelta(days=n)}" for d, n in days]
    listed = sorted({d + timedelta(days=i) for d, n in days for i in range(n + 1)})
    ranged = calendar({"days_off": written}, WEEKDAYS_8_17, NIGHT_22_6)
    plain = calendar(listed, WEEKDAYS_8_17, NIGHT_22_6)
    start = midnight(first.isoformat())
    end = start + timedelta(days=7)
    assert ranged.planned_intervals(start, end) == plain.planned_intervals(start, end)
    assert ranged.shifts_between(start, end) == plain.shifts_between(start, end)


# --- the plain list, as before ---------------------------------------------------------------


def test_the_plain_list_of_dates_works_and_travels_as_before() -> None:
    cal = calendar([date(2026, 12, 31), date(2027, 1, 1)])
    assert cal.holidays == [date(2026, 12, 31), date(2027, 1, 1)]
    assert hours_on(cal, "2026-12-31") == 0
    assert hours_on(cal, "2027-01-11") == 8
    assert '"holidays":["2026-12-31","2027-01-01"]' in cal.model_dump_json()
    payload = DESCRIPTION.read_bytes()
    message = decode(TOPIC, payload)
    assert isinstance(message, MachineDescription)
    assert message.calendar.holidays == [date(2026, 12, 31), date(2027, 1, 1)]
    assert b'"holidays":["2026-12-31","2027-01-01"]' in encode(message)


# --- refusals ------------------------------------------------------------------------------------


def _described(holidays: Any) -> bytes:
    document = json.loads(DESCRIPTION.read_text(encoding="utf-8"))
    document["calendar"]["holidays"] = holidays
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("holidays", "message"),
    [
        (
            "xx",
            "calendar.holidays.country: Value error, unknown country code 'xx': the holidays "
            "library",
        ),
        ("jpn", "calendar.holidays.country: String should match pattern '^[A-Za-z]{2}$'"),
        (
            {"country": "zz"},
            "calendar.holidays.rules.country: Value error, unknown country code 'zz'",
        ),
        (
            {"country": "jp", "subdivision": "47"},
            "calendar.holidays.rules.subdivision: Value error, country JP has no subdivisions",
        ),
        (
            {"country": "de", "subdivision": "XX"},
            "calendar.holidays.rules.subdivision: Value error, country DE has no subdivision 'XX'",
        ),
        (
            {"days_off": ["2026-08-16..2026-08-13"]},
            "calendar.holidays.rules.days_off.0.range: Value error, the range "
            "2026-08-16..2026-08-13 ends before it starts",
        ),
        (
            {"days_off": ["2026-01-01..2027-01-02"]},
            "calendar.holidays.rules.days_off.0.range: Value error, the range "
            "2026-01-01..2027-01-02 is longer than 366 days",
        ),
        (
            {"working_days": [{"date": "2026-12-21"}, {"date": "2026-12-21"}]},
            "calendar.holidays.rules.working_days: Value error, working_days name 2026-12-21 twice",
        ),
        (
            {"working_days": [{"date": "2026-12-19", "shifts_of": "sat"}]},
            "calendar: Value error, holidays: working day 2026-12-19 would start no shift: none "
            "starts on sat; name a weekday whose shifts run that day, e.g. shifts_of: mon",
        ),
        (
            {"working_days": [{"date": "2026-12-19"}]},
            "calendar: Value error, holidays: working day 2026-12-19 would start no shift",
        ),
    ],
    ids=repr,
)
def test_a_bad_holiday_rule_is_refused_precisely(holidays: Any, message: str) -> None:
    with pytest.raises(ContractError) as refused:
        decode(TOPIC, _described(holidays))
    assert refused.value.reason == "schema"
    assert str(refused.value).startswith(message), str(refused.value)


def test_an_unknown_country_is_a_precise_validation_error_in_a_configuration() -> None:
    with pytest.raises(ValidationError) as refused:
        calendar("xx")
    (error,) = refused.value.errors()
    assert error["loc"] == ("holidays", "country")
    assert error["msg"].startswith("Value error, unknown country code 'xx': the holidays library ")
    assert error["msg"].endswith("has no public holidays for it (ISO 3166-1 alpha-2, e.g. 'JP')")


# --- shipped configurations, and the trip over the wire -----------------------------------


def test_the_gateway_example_names_japan_and_still_validates() -> None:
    config = load_config(EXAMPLE, {"KYOSO_BROKER_PASSWORD": "x"})
    (cal,) = config.calendars.values()
    assert isinstance(cal.holidays, HolidayCalendar)
    assert cal.holidays.country == "JP"
    assert cal.shifts_of(date(2026, 12, 31)) is None  # its own
    assert cal.shifts_of(date(2027, 1, 11)) is None  # 成人の日


@pytest.mark.parametrize("path", shipped_factories(), ids=lambda p: p.stem)
def test_a_demo_factory_round_trips_through_the_contract_with_its_meaning(path: Path) -> None:
    factory = load_factory(path)
    descriptions = history_descriptions(
        factory, datetime(2026, 4, 1, tzinfo=UTC).timestamp(), gateway="gw-01"
    )
    start, end = midnight("2026-04-01"), midnight("2027-04-01")
    named = [d.calendar for d in descriptions if isinstance(d.calendar.holidays, HolidayCalendar)]
    assert named, "every demo factory names Japan in a calendar"
    for sent in descriptions:
        topic = f"kyoso/v1/{sent.factory}/gw-01/machines/{sent.machine}"
        received = decode(topic, encode(sent))
        assert isinstance(received, MachineDescription)
        assert received == sent
        assert received.calendar.planned_intervals(start, end) == (
            sent.calendar.planned_intervals(start, end)
        )
        assert days_without_shifts(received.calendar, 2026) == (
            days_without_shifts(sent.calendar, 2026)
        )
    for cal in named:
        assert isinstance(cal.holidays, HolidayCalendar)
        assert cal.holidays.country == "JP"
        assert set(OFFICIAL[2026]) <= set(days_without_shifts(cal, 2026))
