"""Capacity in time, computed by hand: the forecast hour by hour, held load on top of it,
buckets of days, shifts and hours that add up to the window, free blocks, and when N hours
of work can start and finish."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyoso.capacity.forecast import (
    HOURS_PER_WEEK,
    Booking,
    CapacityFigures,
    LoadProfile,
    forecast,
    free_in,
    hourly,
)
from kyoso.capacity.phased import (
    bucketed,
    buckets,
    earliest_finish,
    earliest_start,
    free_blocks,
    summed,
    withdrawn,
)
from kyoso.contract import Break, Shift, ShiftCalendar

H = 3600.0
MONDAY_8 = datetime(2026, 11, 2, 8, tzinfo=UTC)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
DAY = ShiftCalendar(timezone="UTC", shifts=[Shift(days=WEEKDAYS, start="08:00", end="16:00")])
HALF_BUSY = LoadProfile(
    busy=(0.5,) * HOURS_PER_WEEK,
    lost=(0.1,) * HOURS_PER_WEEK,
    observed_s=28 * 24 * H,
    planned_s=20 * 8 * H,
    method="hour_of_week",
)


def _hours(figures: CapacityFigures) -> tuple[float, ...]:
    parts = (figures.total_s, figures.committed_s, figures.unattainable_s, figures.available_s)
    return tuple(round(x / H, 6) for x in parts)


def _held(hours: float, start_h: float = 0, length_h: float = 8) -> Booking:
    start = MONDAY_8 + timedelta(hours=start_h)
    return Booking(start, start + timedelta(hours=length_h), hours)


def test_held_load_comes_on_top_of_the_expected_load() -> None:
    """A platform's hold is work from outside the factory: 2 h held where 4 h of the
    factory's own work are expected commit 6 h (a booking of 2 h would commit 4 h)."""
    figures = forecast(DAY, HALF_BUSY, MONDAY_8, timedelta(hours=8), held=[_held(2)])
    assert _hours(figures) == (8.0, 6.0, 0.8, 1.2)
    assert "held" in figures.reasons


def test_holds_take_what_their_window_has_left_in_the_order_placed() -> None:
    """3.2 h are available; the first hold takes 2 h, the second finds 1.2 h of its 2 h:
    nothing is over-committed, nothing left available."""
    figures = forecast(DAY, HALF_BUSY, MONDAY_8, timedelta(hours=8), held=[_held(2), _held(2)])
    assert _hours(figures) == (8.0, 7.2, 0.8, 0.0)


def test_a_hold_fills_only_its_own_window() -> None:
    """1 h held in the first two hours takes their 0.8 h available and no more."""
    figures, cut = hourly(DAY, HALF_BUSY, MONDAY_8, timedelta(hours=8), held=[_held(1, length_h=2)])
    assert _hours(figures) == (8.0, 4.8, 0.8, 2.4)
    assert [round(s.available_s / H, 6) for s in cut] == [0.0, 0.0] + [0.4] * 6
    assert free_in(cut, MONDAY_8, MONDAY_8 + timedelta(hours=8)) == pytest.approx(2.4 * H)


@given(
    busy=st.lists(st.floats(0, 0.9), min_size=HOURS_PER_WEEK, max_size=HOURS_PER_WEEK),
    lost=st.floats(0, 0.2),
    repair_h=st.none() | st.floats(0, 30),
    bookings=st.lists(
        st.tuples(st.integers(-24, 24 * 8), st.integers(1, 48), st.floats(0.1, 60)), max_size=4
    ),
    holds=st.lists(
        st.tuples(st.integers(0, 24 * 6), st.integers(1, 48), st.floats(0.1, 30)), max_size=4
    ),
)
@settings(max_examples=150, deadline=None)
def test_the_hours_add_up_to_the_forecast_and_never_overfill(
    busy: list[float],
    lost: float,
    repair_h: float | None,
    bookings: list[tuple[int, int, float]],
    holds: list[tuple[int, int, float]],
) -> None:
    profile = LoadProfile(
        tuple(busy), (lost,) * HOURS_PER_WEEK, 28 * 24 * H, 20 * 8 * H, "hour_of_week"
    )
    declared = [_held(n, a, length) for a, length, n in bookings] or None
    held = [_held(n, a, length) for a, length, n in holds]
    week, down_now = timedelta(days=7), repair_h is not None
    repair = timedelta(hours=repair_h or 0)
    expected = forecast(
        DAY, profile, MONDAY_8, week,
        down_now=down_now, repair_estimate=repair, bookings=declared, held=held,
    )  # fmt: skip
    figures, cut = hourly(
        DAY, profile, MONDAY_8, week,
        down_now=down_now, repair_estimate=repair, bookings=declared, held=held,
    )  # fmt: skip
    assert _hours(figures) == pytest.approx(_hours(expected), abs=1e-6)
    assert figures.reasons == expected.reasons
    for s in cut:
        assert min(s.total_s, s.committed_s, s.unattainable_s) >= -1e-9
        assert s.committed_s + s.unattainable_s <= s.total_s + 1e-6
    sums = [sum(getattr(s, n) for s in cut) for n in ("total_s", "committed_s", "unattainable_s")]
    parts = (figures.total_s, figures.committed_s, figures.unattainable_s)
    assert sums == pytest.approx(parts, abs=1e-6)


TOKYO = ShiftCalendar(
    timezone="Asia/Tokyo",
    shifts=[
        Shift(
            name="day",
            days=WEEKDAYS,
            start="08:00",
            end="17:00",
            breaks=[Break(start="12:00", end="13:00")],
        ),
        Shift(name="night", days=["mon"], start="22:00", end="06:00"),
    ],
    holidays=[date(2026, 11, 3)],  # Culture Day
)
TOKYO_MONDAY = datetime(2026, 11, 2, tzinfo=UTC) - timedelta(hours=9)  # Monday 00:00 JST


def test_days_are_the_factorys_local_days_and_add_up_to_the_window() -> None:
    figures, cut = hourly(TOKYO, HALF_BUSY, TOKYO_MONDAY, timedelta(days=3))
    days = buckets("day", TOKYO, TOKYO_MONDAY, TOKYO_MONDAY + timedelta(days=3), "Asia/Tokyo")
    assert [d.label for d in days] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert days[0].start == TOKYO_MONDAY
    sums = bucketed(cut, days)
    # Monday: 8 h of the day shift and the night shift's first 2 h; Tuesday, a holiday:
    # the Monday night shift's last 6 h; Wednesday: 8 h.
    assert [round(d.total_s / H, 6) for d in sums] == [10.0, 6.0, 8.0]
    assert sum(d.total_s for d in sums) == pytest.approx(figures.total_s)
    assert sum(d.available_s for d in sums) == pytest.approx(figures.available_s)


def test_shifts_are_each_machines_own_and_a_holiday_starts_none() -> None:
    start, end = TOKYO_MONDAY, TOKYO_MONDAY + timedelta(days=3)
    shifts = buckets("shift", TOKYO, start, end, "UTC")
    assert [s.label for s in shifts] == ["day 2026-11-02", "night 2026-11-02", "day 2026-11-04"]
    assert shifts[1].end - shifts[1].start == timedelta(hours=8)
    _, cut = hourly(TOKYO, HALF_BUSY, start, end - start)
    assert [round(f.total_s / H, 6) for f in bucketed(cut, shifts)] == [8.0, 8.0, 8.0]


def test_hours_of_a_half_hour_zone_share_the_utc_hours_in_proportion() -> None:
    india = ShiftCalendar(
        timezone="Asia/Kolkata", shifts=[Shift(days=WEEKDAYS, start="09:00", end="11:00")]
    )
    start = datetime(2026, 11, 2, 3, 30, tzinfo=UTC)  # 09:00 IST
    _, cut = hourly(india, HALF_BUSY, start - timedelta(hours=1), timedelta(hours=4))
    hours = buckets("hour", india, start - timedelta(hours=1), start + timedelta(hours=3),
                    "Asia/Kolkata")  # fmt: skip
    assert hours[1].label == "2026-11-02T09:00"
    assert hours[1].start == start
    figures = bucketed(cut, hours)
    assert [round(f.total_s / H, 6) for f in figures] == [0.0, 1.0, 1.0, 0.0]
    assert [round(f.available_s / H, 6) for f in figures] == [0.0, 0.4, 0.4, 0.0]


def test_buckets_of_several_machines_add_up_by_bucket() -> None:
    _, cut = hourly(TOKYO, HALF_BUSY, TOKYO_MONDAY, timedelta(days=1))
    shifts = buckets("shift", TOKYO, TOKYO_MONDAY, TOKYO_MONDAY + timedelta(days=1), "UTC")
    alone = list(zip(shifts, bucketed(cut, shifts), strict=True))
    both = summed(alone + alone)
    assert [b.label for b, _ in both] == ["day 2026-11-02", "night 2026-11-02"]
    assert [round(f.total_s / H, 6) for _, f in both] == [16.0, 4.0]


def test_free_blocks_stop_at_breaks_bookings_and_holds() -> None:
    booked = [Booking(TOKYO_MONDAY + timedelta(hours=14), TOKYO_MONDAY + timedelta(hours=15), 1)]
    _, cut = hourly(TOKYO, HALF_BUSY, TOKYO_MONDAY, timedelta(days=1), bookings=booked)
    blocks = free_blocks(cut)
    local = [(b.start + timedelta(hours=9), b.end + timedelta(hours=9)) for b in blocks]
    at = TOKYO_MONDAY.replace(tzinfo=None) + timedelta(hours=9)  # naive local midnight
    assert [(a.replace(tzinfo=None) - at, b.replace(tzinfo=None) - at) for a, b in local] == [
        (timedelta(hours=8), timedelta(hours=12)),  # the morning, up to the break
        (timedelta(hours=13), timedelta(hours=14)),  # the booked hour ends it
        (timedelta(hours=15), timedelta(hours=17)),
        (timedelta(hours=22), timedelta(hours=24)),  # the night shift, in the window
    ]
    assert [round(b.available_s / H, 6) for b in blocks] == [1.6, 0.4, 0.8, 0.8]
    assert earliest_start(blocks, 1.0 * H) is blocks[0]
    assert earliest_start(blocks, 2.0 * H) is None
    assert free_blocks(withdrawn(cut)) == []
    assert sum(s.available_s for s in withdrawn(cut)) == 0


def test_the_earliest_finish_splits_the_work_over_the_calendar() -> None:
    _, cut = hourly(DAY, HALF_BUSY, MONDAY_8, timedelta(days=2))
    # 0.4 h available an hour: 3.2 h on Monday, then 0.8 h more takes Tuesday's first 2 h.
    assert earliest_finish(cut, 4.0 * H) == MONDAY_8 + timedelta(days=1, hours=2)
    assert earliest_finish(cut, 7.0 * H) is None
