"""The capability taxonomy: what a machine can do, in words the matching platform shares.

A capability is a process (ISA-95 "process segment" in spirit) plus attributes that decide
whether an order fits: materials, work envelope, thickness, force, part weight and the
tolerance held. The lists are deliberately small; extending them is a contract change (new
schema minor version) agreed across the region. Every attribute but the process is
optional, and an attribute left out is not stated: a search that asks for it passes the
machine by (docs/api.md), since nobody can promise what the factory did not say.
"""

from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Process(StrEnum):
    """Manufacturing processes known to the region."""

    CNC_MILLING_3AXIS = "cnc_milling_3axis"
    CNC_MILLING_5AXIS = "cnc_milling_5axis"
    CNC_TURNING = "cnc_turning"
    CNC_GRINDING = "cnc_grinding"
    EDM_WIRE = "edm_wire"
    LASER_CUTTING = "laser_cutting"
    PUNCHING = "punching"
    PRESS_BRAKING = "press_braking"
    WELDING = "welding"
    INJECTION_MOULDING = "injection_moulding"
    EXTRUSION_BLOW_MOULDING = "extrusion_blow_moulding"
    ADDITIVE_POLYMER = "additive_polymer"
    ASSEMBLY = "assembly"


class Material(StrEnum):
    """Material families a machine can process."""

    STEEL = "steel"
    STAINLESS_STEEL = "stainless_steel"
    ALUMINIUM = "aluminium"
    TITANIUM = "titanium"
    BRASS = "brass"
    COPPER = "copper"
    CAST_IRON = "cast_iron"
    ABS = "abs"
    PA = "pa"
    PC = "pc"
    PE = "pe"
    POM = "pom"
    PP = "pp"


ENVELOPE_MAX_MM: Final = 100_000
"""The longest side a work envelope may state (100 m)."""
_Millimetres = Annotated[float, Field(gt=0, le=ENVELOPE_MAX_MM)]
TOLERANCE_FINEST_MM: Final = 0.0001
"""0.1 µm: finer is metrology, not a job shop's production."""
TOLERANCE_COARSEST_MM: Final = 10.0
"""±10 mm: coarser is no tolerance a drawing states."""


class Capability(BaseModel):
    """One process a machine offers, with the attributes an order is matched on."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    process: Process = Field(description="The process offered.", examples=["cnc_milling_3axis"])
    materials: list[Material] = Field(
        default_factory=list,
        max_length=len(Material),
        description="Materials it processes; empty: not stated.",
        examples=[["aluminium", "steel"]],
    )
    envelope_mm: tuple[_Millimetres, _Millimetres, _Millimetres] | None = Field(
        default=None,
        description="Largest work piece (x, y, z) in millimetres.",
        examples=[[800, 500, 500]],
    )
    max_thickness_mm: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Sheet or wall thickness limit.",
        examples=[6.0],
    )
    force_kn: float | None = Field(
        default=None, gt=0, le=100_000, description="Press or clamping force.", examples=[1100.0]
    )
    max_part_kg: float | None = Field(
        default=None, gt=0, le=100_000, description="Heaviest part it takes.", examples=[300.0]
    )
    tolerance_mm: float | None = Field(
        default=None,
        ge=TOLERANCE_FINEST_MM,
        le=TOLERANCE_COARSEST_MM,
        description="The finest tolerance it holds in production, as the ± half-width in "
        "millimetres (±0.01 mm: 0.01); a part whose tightest tolerance is at least this fits.",
        examples=[0.01],
    )
    """Since contract 1.1. A Japanese job shop's RFQ (見積依頼) comes with a drawing: its
    title block names the general tolerance (JIS B 0405, i.e. ISO 2768-1, nearly always
    class m) and the dimensions that matter carry an explicit ±value or an ISO 286 fit
    (JIS B 0401, H7). The shop decides on the tightest of those, and states what it can do
    the same way ("±0.005 mm対応"). A general-tolerance class says nothing about that
    dimension and an IT grade means a different width at each nominal size, so neither can
    be compared alone; one number in millimetres can, across processes (grinding ±0.002,
    machining ±0.01, moulding ±0.05, laser cutting ±0.1), and an H7 bore converts to it
    once its size is known."""

    @field_validator("materials")
    @classmethod
    def _unique(cls, materials: list[Material]) -> list[Material]:
        if len(set(materials)) != len(materials):
            raise ValueError("materials must not repeat")
        return materials
