"""Modbus configuration, decoding and request planning: pure code, no I/O.

A device's fields are read with as few requests as possible (adjacent fields merged, small
gaps filled, never more than the protocol allows per request), then each field is decoded
from its slice of the answer. Decoding is where gateways go wrong most often, so every
rule is explicit here:

- Addresses are zero-based protocol addresses, as they travel in the request: a manual's
  register 40001 (or 30001) is holding (or input) address 0.
- 16-bit values are big-endian, as the Modbus specification has them; ``word_order``
  applies to 32- and 64-bit values only (see :data:`WordOrder`).
- A float that is NaN or infinite, a string that is not printable ASCII, or a scaled value
  that overflows raises :class:`DecodeError`: the field is missing, never published.
- Integers stay exact Python integers while ``scale`` is 1 and ``offset`` 0, so a uint64
  energy meter is never rounded through a float.
"""

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Self

from pydantic import Field, model_validator

from kyoso.contract import Name
from kyoso.validation import ConfigModel

from .breaker import BreakerConfig

Table = Literal["holding", "input", "coil", "discrete_input"]
"""Holding registers (FC 3), input registers (FC 4), coils (FC 1), discrete inputs (FC 2)."""

DataType = Literal[
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "bit",
    "bool",
    "string",
]
"""How a field's registers (or bits) become a value; ``bit`` is one bit of a register,
``bool`` a coil or discrete input, ``string`` ASCII two characters a register."""

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
"""Order of the bytes of a 32/64-bit value across registers, A the most significant byte.

ABCD: big-endian (``mbpoll -B``); CDAB: words swapped ("little-endian word order");
BADC: bytes swapped in each word; DCBA: fully little-endian. 64-bit values extend the
pattern: ABCDEFGH, GHEFCDAB, BADCFEHG, HGFEDCBA.
"""

Transport = Literal["tcp", "rtu_over_tcp", "rtu"]
"""Modbus TCP, RTU frames over a TCP socket (serial device servers), or RTU on a serial line."""

Value = int | float | bool | str
"""A decoded field value."""

WORD_ORDERS: Final[tuple[WordOrder, ...]] = ("ABCD", "CDAB", "BADC", "DCBA")
REGISTER_TABLES: Final[frozenset[Table]] = frozenset({"holding", "input"})
BIT_TABLES: Final[frozenset[Table]] = frozenset({"coil", "discrete_input"})
MAX_REGISTERS_PER_READ: Final = 125
"""The protocol's limit for FC 3 and FC 4 (Modbus application protocol 1.1b3)."""
MAX_BITS_PER_READ: Final = 2000
"""The protocol's limit for FC 1 and FC 2."""
ADDRESS_SPACE: Final = 65536

_NUMBER_FORMATS: Final[dict[DataType, str]] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}
_MULTI_REGISTER: Final = frozenset(t for t, f in _NUMBER_FORMATS.items() if struct.calcsize(f) > 2)
_TABLE_ORDER: Final[tuple[Table, ...]] = ("coil", "discrete_input", "holding", "input")
"""Plans list tables in function-code order, so that a plan is deterministic."""


class DecodeError(ValueError):
    """Registers that hold no publishable value: NaN, infinity, non-ASCII text."""


class ModbusFieldConfig(ConfigModel):
    """One value read from a device: where it lives and how its registers become a value."""

    name: Name = Field(description="Signal or counter name, snake_case with the unit in it.")
    table: Table = Field(
        default="holding",
        description="holding (FC 3), input (FC 4), coil (FC 1) or discrete_input (FC 2).",
    )
    address: int = Field(
        ge=0,
        le=ADDRESS_SPACE - 1,
        description="Zero-based protocol address; a manual's 40001 is holding address 0.",
    )
    dtype: DataType = Field(
        default="uint16",
        description="int16/uint16/int32/uint32/int64/uint64/float32/float64 in registers; "
        "bit (one bit of a register); bool (a coil or discrete input); string (ASCII).",
    )
    word_order: WordOrder | None = Field(
        default=None,
        description="Byte order of a 32/64-bit value across registers; default: the device's.",
    )
    bit: int | None = Field(
        default=None, ge=0, le=15, description="For dtype bit: which bit, 0 the least significant."
    )
    length_registers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REGISTERS_PER_READ,
        description="For dtype string: registers it occupies, two characters each.",
    )
    scale: float = Field(default=1.0, description="value = raw * scale + offset.")
    offset: float = Field(default=0.0, description="value = raw * scale + offset.")

    @property
    def count(self) -> int:
        """Registers (or, in a bit table, bits) the field occupies."""
        if self.dtype == "string":
            return self.length_registers or 0
        if self.dtype in ("bit", "bool"):
            return 1
        return struct.calcsize(_NUMBER_FORMATS[self.dtype]) // 2

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        bits_table = self.table in BIT_TABLES
        if (self.dtype == "bool") != bits_table:
            raise ValueError(
                "dtype bool needs table coil or discrete_input"
                if not bits_table
                else f"table {self.table} holds single bits: use dtype bool"
            )
        if (self.bit is not None) != (self.dtype == "bit"):
            raise ValueError("dtype bit needs `bit` (0-15), and `bit` needs dtype bit")
        if (self.length_registers is not None) != (self.dtype == "string"):
            raise ValueError(
                "dtype string needs length_registers, and length_registers needs dtype string"
            )
        if self.word_order is not None and self.dtype not in _MULTI_REGISTER:
            raise ValueError(
                f"word_order applies to 32- and 64-bit types only, not {self.dtype}: "
                "16-bit registers and strings are big-endian"
            )
        if self.dtype not in _NUMBER_FORMATS and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"scale and offset apply to numbers, not {self.dtype}")
        if self.scale == 0:
            raise ValueError("scale 0 would make every reading equal the offset")
        if self.address + self.count > ADDRESS_SPACE:
            raise ValueError(
                f"address {self.address} + {self.count} goes beyond the last address 65535"
            )
        return self


class ModbusDeviceConfig(BreakerConfig):
    """One Modbus device (a unit id behind an endpoint) and the fields read from it.

    Units behind the same endpoint (host and port, or serial port) share one connection,
    one request at a time, as a serial bus or a TCP-to-serial gateway requires.
    """

    transport: Transport = Field(
        default="tcp", description="tcp, rtu_over_tcp (RTU frames over TCP) or rtu (serial)."
    )
    host: str | None = Field(
        default=None, min_length=1, description="Host name or address, for tcp and rtu_over_tcp."
    )
    port: int = Field(default=502, ge=1, le=65535, description="TCP port.")
    serial_port: str | None = Field(
        default=None, min_length=1, description="Serial device for rtu, e.g. /dev/ttyUSB0."
    )
    baudrate: int = Field(default=19200, gt=0, le=1_000_000, description="rtu: bits per second.")
    parity: Literal["N", "E", "O"] = Field(
        default="E", description="rtu: none, even or odd; the serial-line standard is even."
    )
    stopbits: Literal[1, 2] = Field(default=1, description="rtu: stop bits.")
    bytesize: Literal[7, 8] = Field(default=8, description="rtu: data bits.")
    unit: int = Field(
        default=1, ge=0, le=255, description="Unit (slave) id; 1-247 on a serial line."
    )
    word_order: WordOrder = Field(
        default="ABCD", description="Default byte order of the device's 32/64-bit values."
    )
    timeout_s: float = Field(
        default=1.0, gt=0, le=60, description="Bound on each request's answer, and on connecting."
    )
    retries: int = Field(
        default=1, ge=0, le=5, description="Extra attempts after a timeout or a lost connection."
    )
    max_registers_per_request: int = Field(
        default=MAX_REGISTERS_PER_READ,
        ge=1,
        le=MAX_REGISTERS_PER_READ,
        description="Largest register read; lower it for devices that refuse long reads.",
    )
    max_bits_per_request: int = Field(
        default=MAX_BITS_PER_READ,
        ge=1,
        le=MAX_BITS_PER_READ,
        description="Largest coil or discrete input read.",
    )
    max_gap_registers: int = Field(
        default=10,
        ge=0,
        le=MAX_REGISTERS_PER_READ - 2,
        description="Unused registers read between two fields to save a request; a request "
        "that fills a gap and meets exception 2 is split for good.",
    )
    max_gap_bits: int = Field(
        default=160, ge=0, le=MAX_BITS_PER_READ - 2, description="The same for bit tables."
    )
    busy_backoff_s: float = Field(
        default=2.0, gt=0, le=3600, description="Pause after exception 6 (busy) or 5."
    )
    fields: tuple[ModbusFieldConfig, ...] = Field(default=(), description="What to read.")

    @property
    def endpoint(self) -> str:
        """``host:port`` or the serial port, for logs and errors."""
        if self.transport == "rtu":
            return self.serial_port or ""
        return f"{self.host}:{self.port}"

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        given = self.model_fields_set
        if self.transport == "rtu":
            if self.serial_port is None:
                raise ValueError("transport rtu needs serial_port")
            stray = sorted(given & {"host", "port"})
        else:
            if self.host is None:
                raise ValueError(f"transport {self.transport} needs host")
            stray = sorted(given & {"serial_port", "baudrate", "parity", "stopbits", "bytesize"})
        if stray:
            raise ValueError(f"{', '.join(stray)} do(es) not apply to transport {self.transport}")
        if self.transport != "tcp" and not 1 <= self.unit <= 247:
            raise ValueError(f"unit {self.unit}: a serial line addresses units 1-247")
        names = [f.name for f in self.fields]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"field names must be unique: {', '.join(duplicated)}")
        for f in self.fields:
            limit = (
                self.max_bits_per_request
                if f.table in BIT_TABLES
                else self.max_registers_per_request
            )
            if f.count > limit:
                raise ValueError(f"field {f.name} needs {f.count} registers, more than {limit}")
        return self


# -- decoding ------------------------------------------------------------------------------


def canonical_bytes(registers: Sequence[int], word_order: WordOrder = "ABCD") -> bytes:
    """The value's bytes, most significant first, from registers in ``word_order``.

    One register is always big-endian; ``word_order`` rearranges two or more.
    """
    words = [r.to_bytes(2, "big") for r in registers]
    if len(words) > 1:
        if word_order in ("CDAB", "DCBA"):
            words.reverse()
        if word_order in ("BADC", "DCBA"):
            words = [w[::-1] for w in words]
    return b"".join(words)


def decode_number(
    registers: Sequence[int], dtype: DataType, word_order: WordOrder = "ABCD"
) -> int | float:
    """The raw number in ``registers``; NaN and infinity pass (see :func:`decode_field`)."""
    fmt = _NUMBER_FORMATS.get(dtype)
    if fmt is None:
        raise ValueError(f"{dtype} is not a numeric type")
    if len(registers) * 2 != struct.calcsize(fmt):
        raise ValueError(
            f"{dtype} needs {struct.calcsize(fmt) // 2} registers, got {len(registers)}"
        )
    value: int | float = struct.unpack(fmt, canonical_bytes(registers, word_order))[0]
    return value


def decode_bit(register: int, bit: int) -> bool:
    """Bit ``bit`` of a register, 0 the least significant."""
    return bool(register >> bit & 1)


def decode_string(registers: Sequence[int]) -> str:
    """ASCII two characters a register, high byte first; ends at the first NUL, spaces
    stripped. Raises DecodeError on bytes that are not printable ASCII."""
    raw = b"".join(r.to_bytes(2, "big") for r in registers).split(b"\0", 1)[0]
    if any(not 0x20 <= b < 0x7F for b in raw):
        raise DecodeError(f"not printable ASCII: {raw!r}")
    return raw.decode("ascii").strip(" ")


def decode_field(
    field: ModbusFieldConfig, data: Sequence[int], word_order: WordOrder = "ABCD"
) -> Value:
    """The value of ``field`` from exactly its registers (or bits); ``word_order`` is the
    device's default. Raises DecodeError for a value that must not be published."""
    if len(data) != field.count:
        raise ValueError(f"{field.name} needs {field.count} values, got {len(data)}")
    match field.dtype:
        case "bool":
            return bool(data[0])
        case "bit":
            return decode_bit(data[0], field.bit or 0)
        case "string":
            return decode_string(data)
    raw = decode_number(data, field.dtype, field.word_order or word_order)
    if isinstance(raw, float) and not math.isfinite(raw):
        raise DecodeError(f"device sent {raw} ({field.dtype})")
    if field.scale == 1.0 and field.offset == 0.0:
        return raw
    value = raw * field.scale + field.offset
    if not math.isfinite(value):
        raise DecodeError(f"{raw} * {field.scale} + {field.offset} overflows")
    return value


# -- planning ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers (or bits) of ``table`` from ``start``, covering ``fields``."""

    table: Table
    start: int
    count: int
    fields: tuple[ModbusFieldConfig, ...]

    def data_for(self, field: ModbusFieldConfig, data: Sequence[int]) -> Sequence[int]:
        """The slice of this request's answer that holds ``field``."""
        begin = field.address - self.start
        return data[begin : begin + field.count]


def plan_requests(
    fields: Iterable[ModbusFieldConfig],
    *,
    max_registers: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
    max_gap_registers: int = 10,
    max_gap_bits: int = 160,
) -> tuple[ReadRequest, ...]:
    """The fewest reads covering ``fields``, each field wholly inside one read.

    Per table, fields sorted by address are merged while the next one starts at most
    ``max_gap_*`` addresses after the current read's end and the read stays within
    ``max_*``. A gap of -1 merges only overlapping fields. The result depends on the
    set of fields only, never on their order.
    """
    requests: list[ReadRequest] = []
    chosen = list(fields)
    for table in _TABLE_ORDER:
        in_table = sorted(
            (f for f in chosen if f.table == table), key=lambda f: (f.address, f.count, f.name)
        )
        bits = table in BIT_TABLES
        limit, max_gap = (max_bits, max_gap_bits) if bits else (max_registers, max_gap_registers)
        group: list[ModbusFieldConfig] = []
        start = end = 0
        for f in in_table:
            if f.count > limit:
                raise ValueError(f"field {f.name} needs {f.count} addresses, more than {limit}")
            f_end = f.address + f.count
            if group and f.address - end <= max_gap and max(end, f_end) - start <= limit:
                group.append(f)
                end = max(end, f_end)
                continue
            if group:
                requests.append(ReadRequest(table, start, end - start, tuple(group)))
            group, start, end = [f], f.address, f_end
        if group:
            requests.append(ReadRequest(table, start, end - start, tuple(group)))
    return tuple(requests)


def plan_device(device: ModbusDeviceConfig) -> tuple[ReadRequest, ...]:
    """:func:`plan_requests` with the device's limits."""
    return plan_requests(
        device.fields,
        max_registers=device.max_registers_per_request,
        max_bits=device.max_bits_per_request,
        max_gap_registers=device.max_gap_registers,
        max_gap_bits=device.max_gap_bits,
    )


def format_plan(requests: Iterable[ReadRequest]) -> str:
    """One line per request: table, start, count, the fields it covers."""
    return "\n".join(
        f"{r.table:<14} start {r.start:<5} count {r.count:<4} {', '.join(f.name for f in r.fields)}"
        for r in requests
    )


# -- commissioning -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interpretation:
    """One reading of raw registers: a type at an address, in a word order (None: 16-bit)."""

    address: int
    dtype: DataType
    word_order: WordOrder | None
    value: int | float


def interpretations(registers: Sequence[int], address: int = 0) -> list[Interpretation]:
    """Every number the registers could hold: each numeric type at each offset, 32- and
    64-bit types in each word order. NaN and infinity are kept: this is for a person."""
    found: list[Interpretation] = []
    for offset in range(len(registers)):
        for dtype, fmt in _NUMBER_FORMATS.items():
            size = struct.calcsize(fmt) // 2
            words = registers[offset : offset + size]
            if len(words) < size:
                continue
            orders: Sequence[WordOrder | None] = WORD_ORDERS if size > 1 else (None,)
            for order in orders:
                value = decode_number(words, dtype, order or "ABCD")
                found.append(Interpretation(address + offset, dtype, order, value))
    return found


def ascii_text(registers: Sequence[int]) -> str:
    """The registers as ASCII for a person: trailing NUL and spaces dropped, other bytes
    that are not printable shown as ``\\xNN``."""
    raw = b"".join(r.to_bytes(2, "big") for r in registers).rstrip(b"\0 ")
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in raw)


def format_number(value: int | float, dtype: DataType) -> str:
    """A value as a person reads it: a float32 with the fewest digits that identify it."""
    if isinstance(value, int):
        return str(value)
    if dtype == "float32" and math.isfinite(value):
        for digits in range(6, 10):
            text = f"{value:.{digits}g}"
            if struct.pack(">f", float(text)) == struct.pack(">f", value):
                return text
    return repr(value)
