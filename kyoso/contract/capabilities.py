"""The capability taxonomy: what a machine can do, in words the matching platform shares.

A capability is a process (ISA-95 "process segment" in spirit) plus attributes that decide
whether an order fits: materials and work envelope. The lists are deliberately small;
extending them is a contract change (new schema minor version) agreed across the region.
"""

from enum import StrEnum
from typing import Annotated

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


_Millimetres = Annotated[float, Field(gt=0, le=100_000)]


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

    @field_validator("materials")
    @classmethod
    def _unique(cls, materials: list[Material]) -> list[Material]:
        if len(set(materials)) != len(materials):
            raise ValueError("materials must not repeat")
        return materials
