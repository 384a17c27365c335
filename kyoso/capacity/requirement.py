"""What an order asks of a machine beyond its process: the part's material, size, thickness,
weight, the press force and the tolerance, matched against the capabilities a machine's
description states. Pure; no store, no HTTP.

Rules (docs/api.md, "Search"):

- **Where described.** A machine qualifies for an attribute only if one of its capabilities
  of the process states it: an envelope, a thickness limit, a force, a weight limit or a
  tolerance left out cannot be promised, so it does not qualify (materials: an empty list
  states none).
- **One capability meets all.** The attributes asked for are met by the same capability
  entry of the process (a machine that lists a process twice, with two materials and two
  envelopes, qualifies by either entry, not by a mix of both).
- **The part fits in some orientation.** A part of ``(a, b, c)`` millimetres fits an envelope
  of ``(x, y, z)`` when some axis-aligned rotation of it does: sorted, each side of the part
  is at most the matching side of the envelope (this is exactly "some permutation fits").
  Tilted placements are not counted: a diagonal fit is the shop's to offer, not ours to
  promise.
- **Bounds.** thickness at most ``max_thickness_mm``; the force needed at most
  ``force_kn``; the part's weight at most ``max_part_kg``; the tolerance asked (the
  part's tightest, as a ± half-width) at least the machine's ``tolerance_mm``.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from kyoso.contract import Capability, Material, Process

__all__ = ["Requirement"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """The attributes an order asks for; None: not asked."""

    material: Material | None = None
    part_mm: tuple[float, float, float] | None = None
    thickness_mm: float | None = None
    force_kn: float | None = None
    part_kg: float | None = None
    tolerance_mm: float | None = None

    @property
    def asks(self) -> bool:
        """Whether anything beyond the process is asked (if not, every machine qualifies and
        no description need be read)."""
        return self != Requirement()

    def met_by(self, process: Process, capabilities: Iterable[Capability]) -> bool:
        """Whether one of ``capabilities`` of ``process`` meets every attribute asked."""
        return any(c.process == process and self._met(c) for c in capabilities)

    def _met(self, c: Capability) -> bool:
        if self.material is not None and self.material not in c.materials:
            return False
        if self.part_mm is not None and (
            c.envelope_mm is None
            or any(p > e for p, e in zip(sorted(self.part_mm), sorted(c.envelope_mm), strict=True))
        ):
            return False
        if self.tolerance_mm is not None and (
            c.tolerance_mm is None or c.tolerance_mm > self.tolerance_mm
        ):
            return False
        return (
            _at_most(self.thickness_mm, c.max_thickness_mm)
            and _at_most(self.force_kn, c.force_kn)
            and _at_most(self.part_kg, c.max_part_kg)
        )


def _at_most(asked: float | None, limit: float | None) -> bool:
    """Not asked, or at most the machine's stated ``limit`` (an unstated one: no)."""
    return asked is None or (limit is not None and asked <= limit)
