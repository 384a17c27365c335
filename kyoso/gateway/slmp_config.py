"""SLMP configuration, decoding and request planning: pure code, no I/O.

A field names a device point as MELSEC writes it (``D100``, ``ZR2000``, ``M10``, ``X1F``)
and a type. Words decode with the Modbus decoder (:mod:`kyoso.gateway.modbus_decode`): a
word is a 16-bit register, and MELSEC keeps a 32-bit value's low word at the lower device
number, which is the ``CDAB`` word order and the default here. A string is ASCII with the
first character in a word's low byte, as MELSEC's string instructions store it.

Fields on one device kind are merged into batch reads as the Modbus planner merges
registers: sorted by number, joined while the gap is at most ``max_gap_*`` and the read
stays within the frame's point limit (960 words or 7168 bits).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Self

from pydantic import Field, field_validator, model_validator

from kyoso.contract import Name
from kyoso.validation import ConfigModel

from .breaker import BreakerConfig
from .modbus_decode import (
    ModbusFieldConfig,
    Value,
    WordOrder,
    decode_field,
)
from .slmp_frames import (
    DEVICES,
    MAX_BITS_PER_READ,
    MAX_DEVICE_NUMBER,
    MAX_WORDS_PER_READ,
    Device,
    DeviceAddress,
    Frame,
    Route,
    format_address,
    parse_address,
)

SlmpDataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
"""``bool`` for a bit device (X, Y, M, B); the others for word devices (D, W, R, ZR)."""

Transport = Literal["tcp", "udp"]

_WORDS: Final[dict[str, int]] = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}


class SlmpFieldConfig(ConfigModel):
    """One value read from a PLC: a device point and how its words (or bit) become a value."""

    device: str = Field(
        description="Device point as MELSEC writes it: D100, W1A, R0, ZR2000 (words); "
        "M10, X1F, Y20, B0 (bits). X, Y, B and W in hexadecimal, the others decimal."
    )
    type: SlmpDataType | None = Field(
        default=None,
        description="bool (bit devices), int16/uint16/int32/uint32/int64/uint64/float32/"
        "float64 or string (word devices); default: bool on a bit device, uint16 on a word one.",
    )
    length: int | None = Field(
        default=None,
        ge=1,
        le=2 * MAX_WORDS_PER_READ,
        description="For type string: characters, two a word, the first in the low byte.",
    )
    word_order: WordOrder | None = Field(
        default=None,
        description="Of a 32/64-bit value; default: the PLC's (CDAB, MELSEC's low word first).",
    )
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")

    @field_validator("device")
    @classmethod
    def _device(cls, text: str) -> str:
        return str(parse_address(text))

    @property
    def address(self) -> DeviceAddress:
        return parse_address(self.device)

    @property
    def dtype(self) -> SlmpDataType:
        """The configured type, or the device's default."""
        if self.type is not None:
            return self.type
        return "bool" if self.address.device.bits else "uint16"

    @property
    def points(self) -> int:
        """Words (or, on a bit device, bits) the field occupies."""
        if self.dtype == "string":
            return math.ceil((self.length or 0) / 2)
        return _WORDS.get(self.dtype, 1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        address = self.address
        if address.device.bits != (self.dtype == "bool"):
            raise ValueError(
                f"{self.device} is a bit device: use type bool"
                if address.device.bits
                else f"{self.device} is a word device: type bool needs a bit device (X, Y, M, B)"
            )
        if (self.length is not None) != (self.dtype == "string"):
            raise ValueError("type string needs length, and length needs type string")
        if self.word_order is not None and _WORDS.get(self.dtype, 1) < 2:
            raise ValueError(f"word_order applies to 32- and 64-bit types only, not {self.dtype}")
        if self.dtype not in _WORDS and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset apply to numbers, not {self.dtype}")
        if self.scale == 0:
            raise ValueError("scale 0 would make every reading equal the offset")
        if address.number + self.points - 1 > MAX_DEVICE_NUMBER:
            raise ValueError(f"{self.device} + {self.points} points is beyond the device numbers")
        return self

    def modbus_field(self, name: str) -> ModbusFieldConfig:
        """The same value as the Modbus decoder knows it: its words as registers from 0."""
        if self.dtype == "bool":
            return ModbusFieldConfig(name=name, table="coil", address=0, dtype="bool")
        if self.dtype == "string":
            return ModbusFieldConfig(
                name=name, address=0, dtype="string", length_registers=self.points
            )
        return ModbusFieldConfig(
            name=name,
            address=0,
            dtype=self.dtype,
            word_order=self.word_order,
            scale=self.scale,
            offset=self.offset,
        )


class SlmpEndpointConfig(ConfigModel):
    """How to reach one MELSEC PLC (a CPU behind an Ethernet port)."""

    host: str = Field(min_length=1, description="The PLC's host name or address.")
    port: int = Field(
        default=5000,
        ge=1,
        le=65535,
        description="The SLMP port opened in the PLC's Ethernet settings (no standard one).",
    )
    transport: Transport = Field(
        default="tcp", description="tcp or udp, as the port is opened in the PLC."
    )
    frame: Frame = Field(
        default="3e", description="3e, or 4e (a serial number in each request and answer)."
    )
    network: int = Field(default=0, ge=0, le=255, description="Network number; 0: this one.")
    station: int = Field(
        default=0xFF, ge=0, le=255, description="Station number; 255 (0xFF): the CPU itself."
    )
    module_io: int = Field(
        default=0x03FF,
        ge=0,
        le=0xFFFF,
        description="Request destination module I/O number; 1023 (0x03FF): the own CPU.",
    )
    multidrop: int = Field(default=0, ge=0, le=255, description="Multidrop station number.")
    monitoring_timer_s: float = Field(
        default=1.0,
        ge=0,
        le=0xFFFF / 4,
        description="How long the PLC may take to answer, in steps of 0.25 s; 0: forever.",
    )
    timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="Bound on each request's answer, and on connecting."
    )

    @property
    def endpoint(self) -> str:
        """``host:port`` and the transport, for logs and errors."""
        return f"{self.host}:{self.port}/{self.transport}"

    @property
    def route(self) -> Route:
        return Route(self.network, self.station, self.module_io, self.multidrop)

    @property
    def timer_250ms(self) -> int:
        return round(self.monitoring_timer_s * 4)

    @model_validator(mode="after")
    def _timer_steps(self) -> Self:
        if self.monitoring_timer_s * 4 != self.timer_250ms:
            raise ValueError(
                f"monitoring_timer_s {self.monitoring_timer_s} is not a step of 0.25 s"
            )
        return self


class SlmpConfig(SlmpEndpointConfig, BreakerConfig):
    """One MELSEC PLC and the fields read from it."""

    word_order: WordOrder = Field(
        default="CDAB", description="Default order of 32/64-bit values: MELSEC's low word first."
    )
    max_words_per_request: int = Field(
        default=MAX_WORDS_PER_READ, ge=1, le=MAX_WORDS_PER_READ, description="Largest word read."
    )
    max_bits_per_request: int = Field(
        default=MAX_BITS_PER_READ,
        ge=1,
        le=MAX_BITS_PER_READ,
        description="Largest bit read; 3584 for an iQ-F CPU's built-in port.",
    )
    max_gap_words: int = Field(
        default=10,
        ge=0,
        le=MAX_WORDS_PER_READ - 2,
        description="Unused words read between two fields to save a request.",
    )
    max_gap_bits: int = Field(
        default=160, ge=0, le=MAX_BITS_PER_READ - 2, description="The same for bit devices."
    )
    fields: dict[Name, SlmpFieldConfig] = Field(
        min_length=1, description="Field name -> the device point it reads."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name, f in self.fields.items():
            limit = self.max_bits_per_request if f.dtype == "bool" else self.max_words_per_request
            if f.points > limit:
                raise ValueError(f"field {name} needs {f.points} points, more than {limit}")
        return self


# -- planning and decoding -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlmpRead:
    """One batch read: ``points`` of ``device`` from ``start``, covering ``fields``."""

    device: Device
    start: int
    points: int
    fields: tuple[tuple[str, SlmpFieldConfig], ...]

    def __str__(self) -> str:
        return f"{format_address(self.device, self.start)} x{self.points}"


def plan_reads(config: SlmpConfig) -> tuple[SlmpRead, ...]:
    """The fewest batch reads covering every field, each field wholly inside one read; the
    result depends on the set of fields only, never on their order."""
    reads: list[SlmpRead] = []
    for device in DEVICES.values():
        on_device = sorted(
            ((n, f) for n, f in config.fields.items() if f.address.device == device),
            key=lambda item: (item[1].address.number, item[1].points, item[0]),
        )
        limit, max_gap = (
            (config.max_bits_per_request, config.max_gap_bits)
            if device.bits
            else (config.max_words_per_request, config.max_gap_words)
        )
        group: list[tuple[str, SlmpFieldConfig]] = []
        start = end = 0
        for name, f in on_device:
            number = f.address.number
            f_end = number + f.points
            if group and number - end <= max_gap and max(end, f_end) - start <= limit:
                group.append((name, f))
                end = max(end, f_end)
                continue
            if group:
                reads.append(SlmpRead(device, start, end - start, tuple(group)))
            group, start, end = [(name, f)], number, f_end
        if group:
            reads.append(SlmpRead(device, start, end - start, tuple(group)))
    return tuple(reads)


def decode(field: SlmpFieldConfig, name: str, data: Sequence[int], word_order: WordOrder) -> Value:
    """The value of ``field`` from exactly its words (or bit); ``word_order`` is the PLC's
    default. Raises DecodeError for a value that must not be published."""
    if field.dtype == "string":
        swapped = [(w & 0xFF) << 8 | w >> 8 for w in data]  # MELSEC: first character low
        if (field.length or 0) % 2:
            swapped[-1] &= 0xFF00  # the odd length's last character ends the string
        data = swapped
    return decode_field(field.modbus_field(name), data, word_order)
