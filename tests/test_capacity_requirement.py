"""What an order asks of a machine, without HTTP: the rules of kyoso/capacity/requirement.py."""

import itertools

import pytest

from kyoso.capacity.requirement import Requirement
from kyoso.contract import Capability, Material, Process

MILL = Process.CNC_MILLING_3AXIS
BRAKE = Process.PRESS_BRAKING

VF2 = Capability(
    process=MILL,
    materials=[Material.ALUMINIUM, Material.STEEL],
    envelope_mm=(762, 406, 508),
    max_part_kg=300,
    tolerance_mm=0.01,
)
BARE = Capability(process=MILL)
"""A mill whose description states nothing but its process."""


def test_nothing_asked_is_met_by_any_machine_of_the_process() -> None:
    assert not Requirement().asks
    assert Requirement(part_kg=1).asks
    assert Requirement().met_by(MILL, [BARE])
    assert not Requirement().met_by(BRAKE, [BARE])


@pytest.mark.parametrize("part", list(itertools.permutations((700, 400, 500))))
def test_a_part_fits_the_envelope_in_any_axis_aligned_orientation(
    part: tuple[float, float, float],
) -> None:
    assert Requirement(part_mm=part).met_by(MILL, [VF2])


@pytest.mark.parametrize("part", [(763, 1, 1), (510, 510, 1), (700, 450, 450), (408, 408, 408)])
def test_a_part_too_large_in_every_orientation_does_not_fit(
    part: tuple[float, float, float],
) -> None:
    assert not Requirement(part_mm=part).met_by(MILL, [VF2])


def test_bounds_hold_at_the_stated_limit() -> None:
    brake = Capability(process=BRAKE, max_thickness_mm=6, force_kn=600, max_part_kg=20)
    assert Requirement(thickness_mm=6, force_kn=600, part_kg=20).met_by(BRAKE, [brake])
    assert not Requirement(thickness_mm=6.1).met_by(BRAKE, [brake])
    assert not Requirement(force_kn=601).met_by(BRAKE, [brake])
    assert not Requirement(part_kg=20.5).met_by(BRAKE, [brake])
    assert Requirement(tolerance_mm=0.01).met_by(MILL, [VF2])  # holds ±0.01: a ±0.01 part
    assert Requirement(tolerance_mm=0.05).met_by(MILL, [VF2])
    assert not Requirement(tolerance_mm=0.005).met_by(MILL, [VF2])


@pytest.mark.parametrize(
    "asked",
    [
        Requirement(material=Material.ALUMINIUM),
        Requirement(part_mm=(1, 1, 1)),
        Requirement(thickness_mm=0.5),
        Requirement(force_kn=1),
        Requirement(part_kg=0.1),
        Requirement(tolerance_mm=10),
    ],
    ids=repr,
)
def test_an_attribute_the_description_does_not_state_does_not_qualify(
    asked: Requirement,
) -> None:
    assert not asked.met_by(MILL, [BARE])


def test_one_capability_entry_must_meet_everything_asked() -> None:
    """A machine listing a process twice qualifies by either entry, never by a mix."""
    small_steel = Capability(process=MILL, materials=[Material.STEEL], envelope_mm=(100, 100, 100))
    large_alu = Capability(
        process=MILL, materials=[Material.ALUMINIUM], envelope_mm=(900, 900, 900)
    )
    machine = [small_steel, large_alu]
    assert Requirement(material=Material.STEEL, part_mm=(50, 50, 50)).met_by(MILL, machine)
    assert Requirement(material=Material.ALUMINIUM, part_mm=(500, 50, 50)).met_by(MILL, machine)
    assert not Requirement(material=Material.STEEL, part_mm=(500, 50, 50)).met_by(MILL, machine)
