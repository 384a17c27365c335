"""The forecast of one machine's capacity, computed by hand: planned time, expected load
and losses, a repair under way, and bookings that consume the expected load."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kyoso.capacity.forecast import HOURS_PER_WEEK, Booking, LoadProfile, forecast
from kyoso.contract import Shift, ShiftCalendar

H = 3600.0
MONDAY_8 = datetime(2026, 11, 2, 8, tzinfo=UTC)
DAY = ShiftCalendar(
    timezone="UTC",
    shifts=[Shift(days=["mon", "tue", "wed", "thu", "fri"], start="08:00", end="16:00")],
)
HALF_BUSY = LoadProfile(
    busy=(0.5,) * HOURS_PER_WEEK,
    lost=(0.1,) * HOURS_PER_WEEK,
    observed_s=28 * 24 * H,
    planned_s=20 * 8 * H,
    method="hour_of_week",
)
"""Busy half of its observed time, down a tenth of it, every hour of the week."""


def _monday(
    *, repair_h: float | None = None, bookings: list[Booking] | None = None
) -> tuple[float, ...]:
    """Total, committed, unattainable and available hours of Monday's 8-hour shift."""
    figures = forecast(
        DAY,
        HALF_BUSY,
        MONDAY_8,
        timedelta(hours=8),
        down_now=repair_h is not None,
        repair_estimate=timedelta(hours=repair_h or 0),
        bookings=bookings,
    )
    parts = (figures.total_s, figures.committed_s, figures.unattainable_s, figures.available_s)
    return tuple(round(x / H, 6) for x in parts)


def _booked(hours: float, start: datetime = MONDAY_8, length_h: float = 8) -> list[Booking]:
    return [Booking(start, start + timedelta(hours=length_h), hours)]


def test_the_expected_load_and_losses_come_from_the_profile() -> None:
    # 8 h planned: a tenth lost, half expected busy, the rest available.
    assert _monday() == (8.0, 4.0, 0.8, 3.2)


def test_a_repair_under_way_makes_its_planned_time_unattainable() -> None:
    # 2 h to the repair, then 6 h with a tenth lost and half busy.
    assert _monday(repair_h=2) == (8.0, 3.0, 2.6, 2.4)


def test_a_booking_the_history_already_expects_consumes_the_expected_load() -> None:
    """2 h booked where 4 h of work are expected: committed stays 4 h (the order is one of
    those expected), never 2 h, and not 2 h + half of the other 6 h either."""
    assert _monday(bookings=_booked(2)) == (8.0, 4.0, 0.8, 3.2)


def test_a_booking_beyond_the_expected_load_commits_it() -> None:
    assert _monday(bookings=_booked(6)) == (8.0, 6.0, 0.8, 1.2)


def test_more_booked_than_the_time_can_hold_leaves_nothing_available() -> None:
    assert _monday(bookings=_booked(10)) == (8.0, 7.2, 0.8, 0.0)


def test_a_booking_consumes_only_the_hours_it_spans() -> None:
    """3 h booked in the first 4 h (2 h expected there): 3 h committed there, and the 2 h
    expected in the last 4 h as before."""
    assert _monday(bookings=_booked(3, length_h=4)) == (8.0, 5.0, 0.8, 2.2)


@pytest.mark.parametrize(
    "booking",
    [
        _booked(5, MONDAY_8 - timedelta(days=2)),  # in the past
        _booked(5, MONDAY_8 + timedelta(days=5)),  # on Saturday: no planned time
        _booked(5, MONDAY_8 + timedelta(days=1)),  # beyond the horizon
    ],
)
def test_bookings_outside_the_horizons_planned_time_change_nothing(
    booking: list[Booking],
) -> None:
    assert _monday(bookings=booking)[1:] == _monday()[1:]


@given(
    busy=st.lists(st.floats(0, 0.9), min_size=HOURS_PER_WEEK, max_size=HOURS_PER_WEEK),
    lost=st.floats(0, 0.1),
    bookings=st.lists(
        st.tuples(st.integers(-24, 24 * 8), st.integers(1, 48), st.floats(0.1, 60)), max_size=4
    ),
)
@settings(max_examples=150, deadline=None)
def test_bookings_never_lower_committed_nor_make_the_figures_disagree(
    busy: list[float], lost: float, bookings: list[tuple[int, int, float]]
) -> None:
    profile = LoadProfile(
        tuple(busy), (lost,) * HOURS_PER_WEEK, 28 * 24 * H, 20 * 8 * H, "hour_of_week"
    )
    declared = [
        Booking(MONDAY_8 + timedelta(hours=a), MONDAY_8 + timedelta(hours=a + n), hours)
        for a, n, hours in bookings
    ]
    plain = forecast(DAY, profile, MONDAY_8, timedelta(days=7))
    booked = forecast(DAY, profile, MONDAY_8, timedelta(days=7), bookings=declared)
    assert booked.committed_s >= plain.committed_s - 1e-6
    assert booked.available_s <= plain.available_s + 1e-6
    total = booked.committed_s + booked.unattainable_s + booked.available_s
    assert total == pytest.approx(booked.total_s)
