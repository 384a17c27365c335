"""The Modbus register map of a simulated machine, as code (documented in docs/simulators.md).

A machine's registers are a pure function of its behaviour snapshot, so a gateway test can
compute exactly what it should read at any simulated moment. Holding registers carry the
live values; input registers carry identification and a fixed commissioning test pattern
(one known constant per data type) so that a gateway can prove its decoding of every type
in the machine's word order before trusting live values.

Values of two or more registers follow the machine's :data:`WordOrder`; single registers
and strings are always big-endian, as the Modbus specification has them.
"""

import bisect
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Final, Literal

from kyoso.contract import MachineState

from .behaviour import MachineModel, Snapshot, nominal_power_kw
from .config import RegisterMapConfig, WordOrder

DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]

_FORMATS: Final[dict[DataType, str]] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}

MAP_VERSION: Final = 1
"""Input register 8 holds this; it changes whenever an address or a meaning changes."""


@dataclass(frozen=True, slots=True)
class Field:
    """One value in the map: where it starts and how it is encoded."""

    address: int
    dtype: DataType

    @property
    def count(self) -> int:
        """Registers the value occupies."""
        return register_count(self.dtype)


# Holding registers (FC3): live values, read-only.
STATE = Field(0, "uint16")
ALARM = Field(1, "uint16")
GOOD_COUNTER = Field(2, "uint32")
REJECT_COUNTER = Field(4, "uint32")
LOAD_PCT = Field(6, "float32")
POWER_KW = Field(8, "float32")
STATUS = Field(10, "uint16")
COOLANT_C_X10 = Field(11, "int16")
ENERGY_WH = Field(12, "uint64")
RUNNING_HOURS = Field(16, "float64")
HOLDING_COUNT: Final = 20

STATUS_RUNNING: Final = 1 << 0
STATUS_ALARM: Final = 1 << 1
STATUS_SETUP: Final = 1 << 2
STATUS_PLANNED: Final = 1 << 3

# Input registers (FC4): two blocks, 0-8 and 100-124; the gap between answers exception 2.
MODEL_NAME_ADDRESS: Final = 0
MODEL_NAME_REGISTERS: Final = 8
MAP_VERSION_ADDRESS: Final = 8

TEST_PATTERN: Final[tuple[tuple[Field, int | float], ...]] = (
    (Field(100, "int16"), -12345),
    (Field(101, "uint16"), 54321),
    (Field(102, "int32"), -123456789),
    (Field(104, "uint32"), 3456789012),
    (Field(106, "int64"), -1234567890123456789),
    (Field(110, "uint64"), 12345678901234567890),
    (Field(114, "float32"), 123.456),
    (Field(116, "float64"), -9876.54321),
)
"""Commissioning constants: the same values on every machine, in its word order."""
TEST_STRING: Final = "KYOSO-SIM"
TEST_STRING_ADDRESS: Final = 120
TEST_STRING_REGISTERS: Final = 5

# Coils (FC1, FC5, FC15) and discrete inputs (FC2).
COIL_ALARM_ACK: Final = 0
DI_RUNNING: Final = 0
DI_ALARM: Final = 1
DI_DOOR_CLOSED: Final = 2


def register_count(dtype: DataType) -> int:
    """Registers a value of ``dtype`` occupies."""
    return struct.calcsize(_FORMATS[dtype]) // 2


def encode_value(value: float, dtype: DataType, word_order: WordOrder = "ABCD") -> list[int]:
    """The registers holding ``value``, in transmission order.

    Raises ValueError when an integer does not fit ``dtype``. Single registers ignore
    ``word_order``.
    """
    try:
        raw = struct.pack(_FORMATS[dtype], value)
    except struct.error as exc:
        raise ValueError(f"{value!r} does not fit {dtype}: {exc}") from exc
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if len(words) > 1:
        if word_order in ("CDAB", "DCBA"):
            words.reverse()
        if word_order in ("BADC", "DCBA"):
            words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def encode_string(text: str, registers: int) -> list[int]:
    """ASCII ``text`` two characters a register, high byte first, NUL-padded or cut."""
    raw = text.encode("ascii")[: registers * 2].ljust(registers * 2, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


@dataclass(frozen=True, slots=True)
class Meters:
    """Cumulative meters since the simulation origin."""

    energy_wh: int
    running_h: float


class MeterReader:
    """Integrates a machine's timeline into its energy and running-hour meters.

    Energy counts each state's mean power (the level the power register wobbles around)
    over the time spent in it, so it never goes down and agrees with the power register
    on average; running hours are exactly the ground truth's running time. Sums over
    completed segments are kept, so a reading costs a bisection, not a pass over history.
    """

    def __init__(self, model: MachineModel) -> None:
        self._model = model
        self._starts: list[float] = []
        self._wh_before: list[float] = [0.0]
        self._running_s_before: list[float] = [0.0]

    def at(self, moment: float) -> Meters:
        """The meters at ``moment`` (at or after the model's origin)."""
        segment = self._model.segment_at(moment)
        segments = self._model.segments
        for seg in segments[len(self._starts) :]:
            duration = seg.end - seg.start
            self._starts.append(seg.start)
            self._wh_before.append(
                self._wh_before[-1] + duration * nominal_power_kw(seg.state) / 3.6
            )
            running = duration if seg.state is MachineState.RUNNING else 0.0
            self._running_s_before.append(self._running_s_before[-1] + running)
        index = bisect.bisect_right(self._starts, moment) - 1
        elapsed = moment - segment.start
        wh = self._wh_before[index] + elapsed * nominal_power_kw(segment.state) / 3.6
        running_s = self._running_s_before[index]
        if segment.state is MachineState.RUNNING:
            running_s += elapsed
        return Meters(energy_wh=int(wh), running_h=running_s / 3600)


@dataclass(frozen=True, slots=True)
class RegisterImage:
    """Every table of one machine at one moment: address -> value."""

    holding: Mapping[int, int]
    input: Mapping[int, int]
    coils: Mapping[int, bool]
    discrete_inputs: Mapping[int, bool]


def register_image(
    snapshot: Snapshot,
    source: RegisterMapConfig,
    *,
    name: str,
    meters: Meters,
    alarm_ack: bool = False,
) -> RegisterImage:
    """The registers of a machine showing ``snapshot``.

    ``name`` is the model name in input registers 0-7 (its first 16 ASCII characters);
    ``alarm_ack`` is the state of the writable acknowledge coil. Raises KeyError if
    ``source.state_codes`` has no code for the snapshot's state.
    """
    order = source.word_order
    state = snapshot.state
    values: list[tuple[Field, int | float]] = [
        (STATE, source.state_codes[state.value]),
        (ALARM, snapshot.alarm),
        (GOOD_COUNTER, snapshot.good_counter),
        (REJECT_COUNTER, snapshot.reject_counter),
        (LOAD_PCT, snapshot.load_pct),
        (POWER_KW, snapshot.power_kw),
        (STATUS, status_bits(state)),
        (COOLANT_C_X10, round(coolant_c(state, snapshot.at) * 10)),
        (ENERGY_WH, meters.energy_wh),
        (RUNNING_HOURS, meters.running_h),
    ]
    holding: dict[int, int] = {}
    for field, value in values:
        holding.update(_placed(field.address, encode_value(value, field.dtype, order)))
    return RegisterImage(
        holding=holding,
        input=_input_registers(name, order),
        coils={COIL_ALARM_ACK: alarm_ack},
        discrete_inputs={
            DI_RUNNING: state is MachineState.RUNNING,
            DI_ALARM: state is MachineState.DOWN,
            DI_DOOR_CLOSED: state is not MachineState.SETUP,
        },
    )


def status_bits(state: MachineState) -> int:
    """The status word: running, alarm (down), setup, in planned time."""
    bits = 0
    if state is MachineState.RUNNING:
        bits |= STATUS_RUNNING
    if state is MachineState.DOWN:
        bits |= STATUS_ALARM
    if state is MachineState.SETUP:
        bits |= STATUS_SETUP
    if state not in (MachineState.PLANNED_STOP, MachineState.UNKNOWN):
        bits |= STATUS_PLANNED
    return bits


_COOLANT_C: Final[dict[MachineState, float]] = {
    MachineState.RUNNING: 24.0,
    MachineState.SETUP: 21.0,
    MachineState.IDLE: 20.0,
    MachineState.DOWN: 19.0,
    MachineState.PLANNED_STOP: 2.0,
    MachineState.UNKNOWN: 2.0,
}


def coolant_c(state: MachineState, moment: float) -> float:
    """Coolant temperature: a level per state plus a daily swing of +-3 degC.

    Outside planned time the chiller is off and the sump follows an unheated hall, so the
    value goes below zero on cold nights and a gateway's int16 decoding meets a sign.
    """
    return _COOLANT_C[state] + 3.0 * math.sin(2 * math.pi * moment / 86_400)


@cache
def _input_registers(name: str, word_order: WordOrder) -> Mapping[int, int]:
    registers = _placed(MODEL_NAME_ADDRESS, encode_string(name, MODEL_NAME_REGISTERS))
    registers[MAP_VERSION_ADDRESS] = MAP_VERSION
    for field, value in TEST_PATTERN:
        registers.update(_placed(field.address, encode_value(value, field.dtype, word_order)))
    registers.update(
        _placed(TEST_STRING_ADDRESS, encode_string(TEST_STRING, TEST_STRING_REGISTERS))
    )
    return MappingProxyType(registers)


def _placed(address: int, words: list[int]) -> dict[int, int]:
    return {address + i: word for i, word in enumerate(words)}
