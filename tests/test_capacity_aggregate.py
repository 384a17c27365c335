"""Capacity sums and rankings, without HTTP: the rules of kyoso/capacity/aggregate.py."""

from datetime import UTC, datetime, timedelta

import pytest

from kyoso.capacity.aggregate import (
    FactoryCapacity,
    MachineCapacity,
    as_of,
    by_process,
    offers,
    summed,
)
from kyoso.capacity.forecast import CapacityFigures
from kyoso.contract import Process

NOW = datetime(2026, 12, 7, 9, tzinfo=UTC)
H = 3600.0
MILL = Process("cnc_milling_3axis")
LATHE = Process("cnc_turning")
LASER = Process("laser_cutting")


def machine(
    name: str,
    *processes: Process,
    total_h: float,
    available_h: float,
    confidence: float = 1.0,
    shared: bool = True,
) -> MachineCapacity:
    committed = total_h - available_h
    figures = CapacityFigures(total_h * H, committed * H, 0.0, available_h * H, ("booked",))
    return MachineCapacity(name, processes, figures, confidence, 1.0, NOW, shared)


def factory(
    name: str, *machines: MachineCapacity, offline: bool = False, age_s: float = 0
) -> FactoryCapacity:
    at = NOW - timedelta(seconds=age_s)
    return FactoryCapacity(name, at, timedelta(days=1), offline, at, list(machines))


def test_a_sum_weighs_confidence_by_planned_time() -> None:
    total = summed(
        [
            machine("a", MILL, total_h=30, available_h=10, confidence=1.0),
            machine("b", MILL, total_h=10, available_h=2, confidence=0.2),
            machine("c", MILL, total_h=0, available_h=0, confidence=0.0),  # no planned time
        ]
    )
    assert total.figures.total_s == 40 * H
    assert total.figures.available_s == 12 * H
    assert total.confidence == pytest.approx((30 * 1.0 + 10 * 0.2) / 40)
    assert total.machines == 3
    assert total.figures.reasons == ("booked",)
    assert summed([]).confidence == 0.0


def test_by_process_counts_a_machine_in_each_of_its_capabilities_and_shared_ones_only() -> None:
    okada = factory(
        "okada",
        machine("mill-turn", MILL, LATHE, total_h=10, available_h=4),
        machine("lathe", LATHE, total_h=10, available_h=6),
        machine("private", LATHE, total_h=10, available_h=10, shared=False),
    )
    mori = factory("mori", machine("mill", MILL, total_h=8, available_h=1), offline=True)
    region = {p.process: p for p in by_process([okada, mori], shared_only=True)}
    assert list(region) == [MILL, LATHE]  # by process
    assert region[LATHE].total.figures.available_s == 10 * H
    assert region[LATHE].factories == 1
    assert (region[MILL].factories, region[MILL].offline_factories) == (2, 1)
    assert region[MILL].total.figures.available_s == 5 * H
    own = {p.process: p for p in by_process([okada], shared_only=False)}
    assert own[LATHE].total.figures.available_s == 20 * H
    assert own[LATHE].total.machines == 3
    only = by_process([okada, mori], shared_only=True, process=MILL)
    assert [p.process for p in only] == [MILL]


def test_figures_of_several_factories_are_as_old_as_the_oldest() -> None:
    assert as_of([factory("a", age_s=3), factory("b", age_s=9)], NOW) == NOW - timedelta(seconds=9)
    assert as_of([], NOW) == NOW


def test_offers_rank_those_that_cover_first_then_by_trusted_hours() -> None:
    region = [
        factory("big-unsure", machine("m", LASER, total_h=40, available_h=30, confidence=0.1)),
        factory("small-sure", machine("m", LASER, total_h=10, available_h=9, confidence=1.0)),
        factory("covers-b", machine("m", LASER, total_h=20, available_h=12, confidence=0.5)),
        factory("covers-a", machine("m", LASER, total_h=20, available_h=12, confidence=0.5)),
        factory("no-laser", machine("m", MILL, total_h=20, available_h=20)),
        factory("private", machine("m", LASER, total_h=20, available_h=20, shared=False)),
    ]
    ranked = offers(region, LASER, hours=10)
    # Covering first; then available hours x confidence (12 x 0.5 beats 30 x 0.1); then id.
    assert [o.factory for o in ranked] == ["covers-a", "covers-b", "big-unsure", "small-sure"]
    assert [o.covers for o in ranked] == [True, True, True, False]
    assert ranked[2].available_s == 30 * H


def test_offers_keep_only_suitable_machines() -> None:
    region = [
        factory(
            "okada",
            machine("steel", LASER, total_h=10, available_h=8),
            machine("alu", LASER, total_h=10, available_h=5),
        )
    ]
    ranked = offers(region, LASER, hours=6, suits=lambda _f, m: m.machine == "alu")
    assert [(o.machines, o.available_s, o.covers) for o in ranked] == [(1, 5 * H, False)]
    assert offers(region, LASER, hours=6, suits=lambda _f, _m: False) == []


def test_hours_without_confidence_never_cover() -> None:
    region = [factory("unproven", machine("m", LASER, total_h=40, available_h=40, confidence=0))]
    [offer] = offers(region, LASER, hours=1)
    assert offer.available_s == 40 * H
    assert not offer.covers


def test_a_factory_that_needs_fewer_machines_for_the_order_ranks_first() -> None:
    """40 h of turning: a shop summing a manual lathe's 32 h with a CNC lathe's 14 h covers
    it on paper, but the shop whose one lathe has 41 h takes the order whole."""
    region = [
        factory(
            "summing",
            machine("manual-1988", LATHE, total_h=46, available_h=32),
            machine("cnc", LATHE, total_h=46, available_h=14),
        ),
        factory("one-lathe", machine("cnc", LATHE, total_h=46, available_h=41)),
    ]
    ranked = offers(region, LATHE, hours=40)
    assert [(o.factory, o.machines_needed, o.largest_s) for o in ranked] == [
        ("one-lathe", 1, 41 * H),
        ("summing", 2, 32 * H),
    ]
    assert all(o.covers for o in ranked)
    [alone] = offers(region[:1], LATHE, hours=40, one_machine=True)
    assert (alone.covers, alone.machines_needed, alone.available_s) == (False, None, 32 * H)


def test_hours_without_confidence_do_not_count_towards_the_machines_needed() -> None:
    region = [
        factory(
            "f",
            machine("unproven", LATHE, total_h=40, available_h=40, confidence=0),
            machine("proven", LATHE, total_h=40, available_h=10, confidence=0.9),
        )
    ]
    [offer] = offers(region, LATHE, hours=20)
    assert (offer.covers, offer.machines_needed, offer.available_s) == (False, None, 50 * H)


def test_work_that_cannot_be_split_goes_to_a_machine_that_takes_it_whole() -> None:
    """12 h on one machine: the most trusted mill (10 h x 0.9) cannot take it alone, a less
    trusted one (14 h x 0.5) can: that one is offered, and covers."""
    region = [
        factory(
            "okada",
            machine("sure", MILL, total_h=20, available_h=10, confidence=0.9),
            machine("roomy", MILL, total_h=20, available_h=14, confidence=0.5),
            machine("small", MILL, total_h=20, available_h=2, confidence=1.0),
        )
    ]
    [summed_offer] = offers(region, MILL, hours=12)
    assert summed_offer.qualified == ("sure", "roomy", "small")  # most trusted first
    [alone] = offers(region, MILL, hours=12, one_machine=True)
    assert (alone.machines, alone.covers, alone.available_s) == (1, True, 14 * H)
    assert alone.qualified == ("roomy", "sure", "small")  # the one offered first
    [too_much] = offers(region, MILL, hours=15, one_machine=True)
    assert (too_much.covers, too_much.available_s) == (False, 10 * H)  # the most trusted
    assert too_much.qualified == ("sure", "roomy", "small")
