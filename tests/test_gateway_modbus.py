"""The gateway's Modbus source: configuration, decoding, planning, and polling the real
simulated machines over TCP (docs/simulators.md has the register map and the faults).

Expected values come from the documented constants, from ``struct`` and from the
simulators' behaviour models, never from the gateway's own decoder. Servers run on free
ports with a frozen simulation clock, so live values are exact.
"""

import asyncio
import math
import random
import re
import struct
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusBaseDeviceContext, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from simfactory import machine, small_factory

from kyoso.contract import MachineState
from kyoso.gateway.breaker import CircuitBreaker, CircuitState
from kyoso.gateway.modbus import (
    MissingReason,
    ModbusConnections,
    ModbusDeviceConfig,
    ModbusExceptionResponseError,
    ModbusFieldConfig,
    ModbusSource,
    ModbusTimeoutError,
    ReadResult,
)
from kyoso.gateway.modbus_decode import (
    DataType,
    DecodeError,
    WordOrder,
    canonical_bytes,
    decode_field,
    decode_number,
    decode_string,
    format_plan,
    interpretations,
    plan_device,
    plan_requests,
)
from kyoso.gateway.modbus_probe import format_probe, probe
from kyoso.simulators import registers as reg
from kyoso.simulators.behaviour import MachineModel, machine_seed
from kyoso.simulators.config import ModbusSourceConfig
from kyoso.simulators.endpoints import Endpoint
from kyoso.simulators.modbus import Fault, FaultKind, ModbusServers
from kyoso.simulators.registers import encode_value

ORIGIN = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday
DAY = 86_400.0
ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")
NUMBERS: tuple[reg.DataType, ...] = (
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
)
FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}
FORMATS |= {"int64": ">q", "uint64": ">Q", "float32": ">f", "float64": ">d"}


def as_float32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def field(name: str, address: int, dtype: DataType = "uint16", **kw: Any) -> ModbusFieldConfig:
    return ModbusFieldConfig(name=name, address=address, dtype=dtype, **kw)


# -- configuration -------------------------------------------------------------------------


def test_field_defaults_and_sizes() -> None:
    f = ModbusFieldConfig(name="state", address=0)
    assert (f.table, f.dtype, f.word_order, f.scale, f.offset, f.count) == (
        "holding",
        "uint16",
        None,
        1.0,
        0.0,
        1,
    )
    sizes = {"int16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "float64": 4}
    for dtype, count in sizes.items():
        assert field("x", 0, dtype).count == count  # type: ignore[arg-type]
    assert field("s", 0, "string", length_registers=8).count == 8
    assert field("b", 0, "bit", bit=15).count == 1
    assert ModbusFieldConfig(name="c", table="coil", address=0, dtype="bool").count == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"dtype": "string"}, "needs length_registers"),
        ({"length_registers": 2}, "length_registers needs dtype string"),
        ({"dtype": "bit"}, "dtype bit needs `bit`"),
        ({"bit": 3}, "dtype bit needs `bit`"),
        ({"dtype": "bit", "bit": 16}, "less than or equal to 15"),
        ({"table": "coil", "dtype": "bit", "bit": 0}, "holds single bits"),
        ({"table": "coil"}, "holds single bits"),
        ({"dtype": "bool"}, "bool needs table coil or discrete_input"),
        ({"dtype": "int16", "word_order": "CDAB"}, "32- and 64-bit types only"),
        ({"dtype": "string", "length_registers": 2, "scale": 2}, "apply to numbers"),
        ({"dtype": "bit", "bit": 0, "offset": 1}, "apply to numbers"),
        ({"scale": 0}, "scale 0"),
        ({"scale": float("nan")}, "finite number"),
        ({"address": 65535, "dtype": "uint32"}, "beyond the last address"),
        ({"address": 65530, "dtype": "string", "length_registers": 7}, "beyond the last"),
        ({"address": 65536}, "less than or equal to 65535"),
        ({"address": -1}, "greater than or equal to 0"),
        ({"name": "Power kW"}, "not a valid name"),
        ({"dtype": "float16"}, "Input should be"),
        ({"word_order": "ABDC", "dtype": "float32"}, "Input should be"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_field_config_refuses_inconsistent_fields(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModbusFieldConfig.model_validate({"name": "x", "address": 0, **config})


def test_field_config_is_frozen() -> None:
    f = field("x", 0)
    with pytest.raises(ValidationError):
        f.address = 3  # type: ignore[misc]


def test_device_defaults() -> None:
    d = ModbusDeviceConfig(host="plc.local")
    assert (d.transport, d.port, d.unit, d.word_order) == ("tcp", 502, 1, "ABCD")
    assert (d.timeout_s, d.retries, d.max_registers_per_request, d.max_gap_registers) == (
        1.0,
        1,
        125,
        10,
    )
    assert (d.busy_backoff_s, d.failures_to_open, d.open_s) == (2.0, 3, 30.0)
    assert d.endpoint == "plc.local:502"
    serial = ModbusDeviceConfig(transport="rtu", serial_port="/dev/ttyUSB0", baudrate=9600)
    assert (serial.endpoint, serial.parity, serial.stopbits, serial.bytesize) == (
        "/dev/ttyUSB0",
        "E",
        1,
        8,
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "transport tcp needs host"),
        ({"transport": "rtu_over_tcp"}, "transport rtu_over_tcp needs host"),
        ({"transport": "rtu"}, "transport rtu needs serial_port"),
        ({"host": "h", "baudrate": 9600}, "baudrate do(es) not apply to transport tcp"),
        ({"transport": "rtu", "serial_port": "/dev/x", "host": "h"}, "host do(es) not apply"),
        ({"transport": "rtu", "serial_port": "/dev/x", "unit": 0}, "units 1-247"),
        ({"transport": "rtu_over_tcp", "host": "h", "unit": 255}, "units 1-247"),
        ({"host": "h", "unit": 256}, "less than or equal to 255"),
        ({"host": "h", "max_registers_per_request": 126}, "less than or equal to 125"),
        ({"host": "h", "max_bits_per_request": 2001}, "less than or equal to 2000"),
        ({"host": "h", "timeout_s": 0}, "greater than 0"),
        ({"host": "h", "timeout_s": float("inf")}, "finite number"),
        ({"host": "h", "failures_to_open": 0}, "greater than or equal to 1"),
        ({"host": "h", "timeoutMs": 5}, "Extra inputs are not permitted"),
        (
            {"host": "h", "fields": [{"name": "a", "address": 0}, {"name": "a", "address": 1}]},
            "field names must be unique: a",
        ),
        (
            {
                "host": "h",
                "max_registers_per_request": 4,
                "fields": [{"name": "s", "address": 0, "dtype": "string", "length_registers": 5}],
            },
            "field s needs 5 registers, more than 4",
        ),
    ],
)
def test_device_config_refuses_inconsistent_devices(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModbusDeviceConfig.model_validate(config)


def test_connections_are_shared_per_endpoint_and_must_agree() -> None:
    pool = ModbusConnections()
    one = pool.get(ModbusDeviceConfig(host="gw", port=5020, unit=1))
    assert pool.get(ModbusDeviceConfig(host="gw", port=5020, unit=2)) is one
    assert pool.get(ModbusDeviceConfig(host="gw", port=5021, unit=1)) is not one
    with pytest.raises(ValueError, match="disagree on transport"):
        pool.get(ModbusDeviceConfig(transport="rtu_over_tcp", host="gw", port=5020, unit=3))
    line = pool.get(ModbusDeviceConfig(transport="rtu", serial_port="/dev/ttyS0", unit=1))
    assert pool.get(ModbusDeviceConfig(transport="rtu", serial_port="/dev/ttyS0", unit=2)) is line
    with pytest.raises(ValueError, match="disagree on baudrate, parity"):
        pool.get(
            ModbusDeviceConfig(
                transport="rtu", serial_port="/dev/ttyS0", unit=3, baudrate=9600, parity="N"
            )
        )


# -- decoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x42F6, 0xE979]),
        ("CDAB", [0xE979, 0x42F6]),
        ("BADC", [0xF642, 0x79E9]),
        ("DCBA", [0x79E9, 0xF642]),
    ],
)
def test_worked_float32_example_of_the_docs(order: WordOrder, words: list[int]) -> None:
    assert canonical_bytes(words, order) == bytes.fromhex("42F6E979")
    assert decode_number(words, "float32", order) == as_float32(123.456)


def test_64_bit_word_orders_spelled_out() -> None:
    spelled = {
        "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],  # ABCDEFGH
        "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],  # GHEFCDAB
        "BADC": [0x0201, 0x0403, 0x0605, 0x0807],  # BADCFEHG
        "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],  # HGFEDCBA
    }
    for order, words in spelled.items():
        assert decode_number(words, "uint64", order) == 0x0102030405060708  # type: ignore[arg-type]


SAMPLES: dict[reg.DataType, list[float]] = {
    "int16": [-32768, -12345, -1, 0, 32767],
    "uint16": [0, 54321, 65535],
    "int32": [-(2**31), -123456789, -1, 0, 2**31 - 1],
    "uint32": [0, 65536, 3456789012, 2**32 - 1],
    "int64": [-(2**63), -1234567890123456789, -1, 2**63 - 1],
    "uint64": [0, 2**53 + 1, 12345678901234567890, 2**64 - 1],
    "float32": [0.0, -0.5, 123.456, -3.4e38, 1e-30],
    "float64": [0.0, -9876.54321, 1e300, -2.5e-300],
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", NUMBERS)
def test_every_type_in_every_word_order(dtype: reg.DataType, order: WordOrder) -> None:
    """The simulators' encoder is a separate implementation, checked there with struct."""
    for value in SAMPLES[dtype]:
        words = encode_value(value, dtype, order)
        expected = as_float32(value) if dtype == "float32" else value
        decoded = decode_field(field("v", 0, dtype), words, order)
        assert decoded == expected
        assert type(decoded) is type(expected)  # integers stay exact integers
        if len(words) > 1:  # a field's own word order beats the device's
            own = field("v", 0, dtype, word_order=order)
            other = next(o for o in ORDERS if o != order)
            assert decode_field(own, words, other) == expected


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_never_values(
    dtype: reg.DataType, order: WordOrder, special: float
) -> None:
    fmt = FORMATS[dtype]
    big = struct.pack(fmt, special)
    words = encode_value(struct.unpack(fmt, big)[0], dtype, order)
    with pytest.raises(DecodeError, match="device sent"):
        decode_field(field("v", 0, dtype), words, order)
    # ... and a scale does not launder them
    with pytest.raises(DecodeError):
        decode_field(field("v", 0, dtype, scale=0.1), words, order)


def test_scale_and_offset() -> None:
    coolant = field("coolant_c", 11, "int16", scale=0.1)
    assert decode_field(coolant, [0xFFF6]) == pytest.approx(-1.0)
    kelvin = field("t_k", 0, "uint16", scale=0.5, offset=273.15)
    assert decode_field(kelvin, [100]) == pytest.approx(323.15)
    assert decode_field(field("x", 0, "float32", scale=2.0), [0x42F6, 0xE979]) == pytest.approx(
        246.912, rel=1e-6
    )
    with pytest.raises(DecodeError, match="overflows"):
        decode_field(field("x", 0, "float64", scale=1e300), encode_value(1e300, "float64"))


def test_bits_in_a_register_and_bools() -> None:
    for bit in range(16):
        f = field("b", 10, "bit", bit=bit)
        assert decode_field(f, [1 << bit]) is True
        assert decode_field(f, [0xFFFF ^ (1 << bit)]) is False
    di = ModbusFieldConfig(name="door", table="discrete_input", address=2, dtype="bool")
    assert decode_field(di, [1]) is True
    assert decode_field(di, [0]) is False


def test_strings_are_ascii_high_byte_first_without_padding() -> None:
    assert decode_string([0x4B59, 0x4F53, 0x4F2D, 0x5349, 0x4D00]) == "KYOSO-SIM"
    assert decode_string([0x6162, 0x2020]) == "ab"  # space padded
    assert decode_string([0x2061, 0x6200, 0x4142]) == "ab"  # ends at the first NUL
    assert decode_string([0, 0]) == ""
    for bad in ([0xC3A9], [0x4101], [0x7F41]):  # UTF-8, control characters, DEL
        with pytest.raises(DecodeError, match="not printable ASCII"):
            decode_string(bad)


def test_interpretations_list_every_type_at_every_offset() -> None:
    words = encode_value(123.456, "float32", "CDAB") + encode_value(-1, "int16")
    found = {(i.address, i.dtype, i.word_order): i.value for i in interpretations(words, 114)}
    assert found[(114, "float32", "CDAB")] == as_float32(123.456)
    assert found[(116, "int16", None)] == -1
    assert found[(116, "uint16", None)] == 65535
    assert (115, "int64", "ABCD") not in found  # does not fit
    # per offset: 2 sixteen-bit types, 3 types x 4 orders at 32 bits; 3 offsets, 2 of 32 bits
    assert len(found) == 3 * 2 + 2 * 12


# -- planning ------------------------------------------------------------------------------


def starts_counts(fields: Sequence[ModbusFieldConfig], **limits: int) -> list[tuple[str, int, int]]:
    return [(r.table, r.start, r.count) for r in plan_requests(fields, **limits)]


def test_adjacent_fields_merge() -> None:
    fields = [field("a", 0), field("b", 1, "uint32"), field("c", 3, "float64")]
    assert starts_counts(fields) == [("holding", 0, 7)]


def test_a_gap_splits_only_above_max_gap() -> None:
    fields = [field("a", 0), field("b", 11)]  # 10 unused registers between
    assert starts_counts(fields, max_gap_registers=10) == [("holding", 0, 12)]
    assert starts_counts(fields, max_gap_registers=9) == [("holding", 0, 1), ("holding", 11, 1)]
    assert starts_counts([field("a", 0), field("b", 1)], max_gap_registers=0) == [("holding", 0, 2)]
    # -1 merges only fields that overlap, such as bits of one register
    bits = [field("w", 10), field("b0", 10, "bit", bit=0), field("n", 11)]
    assert starts_counts(bits, max_gap_registers=-1) == [("holding", 10, 1), ("holding", 11, 1)]


def test_the_125_register_limit_splits() -> None:
    fields = [field(f"f{i}", i * 2, "uint32") for i in range(100)]  # 200 registers
    assert starts_counts(fields) == [("holding", 0, 124), ("holding", 124, 76)]
    assert all(r.count <= 125 for r in plan_requests(fields))
    exact = [field(f"g{i}", i) for i in range(125)]
    assert starts_counts(exact) == [("holding", 0, 125)]
    assert starts_counts([*exact, field("last", 125)]) == [("holding", 0, 125), ("holding", 125, 1)]


def test_64_bit_fields_never_straddle_requests() -> None:
    fields = [field(f"e{i}", i * 4, "float64") for i in range(40)]  # 160 registers
    requests = plan_requests(fields)
    assert [(r.start, r.count) for r in requests] == [(0, 124), (124, 36)]
    for r in requests:
        for f in r.fields:
            assert r.start <= f.address
            assert f.address + f.count <= r.start + r.count


def test_bit_tables_plan_separately_with_their_own_limits() -> None:
    fields = [
        ModbusFieldConfig(name="di_run", table="discrete_input", address=0, dtype="bool"),
        ModbusFieldConfig(name="di_far", table="discrete_input", address=1999, dtype="bool"),
        ModbusFieldConfig(name="ack", table="coil", address=0, dtype="bool"),
        field("state", 0),
        ModbusFieldConfig(name="ir", table="input", address=0),
    ]
    assert starts_counts(fields, max_gap_bits=2000) == [
        ("coil", 0, 1),
        ("discrete_input", 0, 2000),
        ("holding", 0, 1),
        ("input", 0, 1),
    ]
    assert starts_counts(fields, max_gap_bits=2000, max_bits=1999)[1:3] == [
        ("discrete_input", 0, 1),
        ("discrete_input", 1999, 1),
    ]


def test_a_field_larger_than_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 4"):
        plan_requests([field("s", 0, "string", length_registers=5)], max_registers=4)


def test_format_plan_prints_one_line_per_request() -> None:
    fields = [field("b", 2, "uint32"), field("a", 0), field("far", 100)]
    text = format_plan(plan_requests(fields))
    assert text.splitlines() == [
        "holding        start 0     count 4    a, b",
        "holding        start 100   count 1    far",
    ]


TABLES = ("holding", "input", "coil", "discrete_input")


@st.composite
def field_sets(draw: st.DrawFn) -> list[ModbusFieldConfig]:
    count = draw(st.integers(1, 40))
    fields = []
    for i in range(count):
        table = draw(st.sampled_from(TABLES))
        if table in ("coil", "discrete_input"):
            dtype: DataType = "bool"
            extra: dict[str, Any] = {}
        else:
            dtype = draw(st.sampled_from([*NUMBERS, "string"]))
            extra = {"length_registers": draw(st.integers(1, 20))} if dtype == "string" else {}
        address = draw(st.integers(0, 600))
        fields.append(
            ModbusFieldConfig(name=f"f{i}", table=table, address=address, dtype=dtype, **extra)
        )
    return fields


@given(
    field_sets(),
    st.integers(20, 125),
    st.integers(0, 30),
    st.randoms(use_true_random=False),
)
def test_plans_cover_every_field_wholly_once_within_the_limits(
    fields: list[ModbusFieldConfig], max_registers: int, max_gap: int, shuffler: random.Random
) -> None:
    requests = plan_requests(
        fields, max_registers=max_registers, max_gap_registers=max_gap, max_bits=64
    )
    covered = [f.name for r in requests for f in r.fields]
    assert sorted(covered) == sorted(f.name for f in fields)  # each field exactly once
    for r in requests:
        limit = 64 if r.table in ("coil", "discrete_input") else max_registers
        assert 1 <= r.count <= limit
        assert {f.table for f in r.fields} == {r.table}
        assert r.start == min(f.address for f in r.fields)
        assert r.start + r.count == max(f.address + f.count for f in r.fields)
        for f in r.fields:  # never straddles
            assert r.start <= f.address
            assert f.address + f.count <= r.start + r.count
    shuffled = list(fields)
    shuffler.shuffle(shuffled)
    assert (
        plan_requests(shuffled, max_registers=max_registers, max_gap_registers=max_gap, max_bits=64)
        == requests
    )  # deterministic


# -- circuit breaker -----------------------------------------------------------------------


def state_of(breaker: CircuitBreaker) -> CircuitState:
    """The state now (a call, so that mypy does not keep an earlier narrowing)."""
    return breaker.state


def test_circuit_breaker_opens_then_half_opens() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures_to_open=3, open_s=10, clock=lambda: now[0])
    assert breaker.allow()
    assert not breaker.failure()
    breaker.success()  # a success resets the count
    assert [breaker.failure() for _ in range(3)] == [False, False, True]
    assert state_of(breaker) is CircuitState.OPEN
    now[0] = 9.9
    assert not breaker.allow()
    assert breaker.remaining_s() == pytest.approx(0.1)
    now[0] = 10.0
    assert breaker.allow()
    assert state_of(breaker) is CircuitState.HALF_OPEN
    assert breaker.failure()  # the trial failed: open again at once
    assert not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert state_of(breaker) is CircuitState.CLOSED
    assert breaker.allow()


# -- against the simulated machines ----------------------------------------------------------

# two units share "cell" (one connection), the others have a server each
FACTORY = small_factory(
    "gateway-works",
    7,
    ["cell", "left", "right"],
    [
        machine("m-abcd", "cell", 1, "ABCD", counter_start=4_294_967_000),
        machine("m-cdab", "cell", 2, "CDAB"),
        machine("m-badc", "left", 3, "BADC"),
        machine(
            "m-dcba",
            "right",
            4,
            "DCBA",
            state_codes={
                "planned_stop": 10,
                "idle": 11,
                "setup": 12,
                "running": 13,
                "down": 99,
            },
        ),
    ],
)
SOURCES = {m.id: m.source for m in FACTORY.machines if isinstance(m.source, ModbusSourceConfig)}


def build_models() -> dict[str, MachineModel]:
    models = {}
    for m in FACTORY.machines:
        source = SOURCES[m.id]
        models[m.id] = MachineModel(
            m.id,
            m.behaviour,
            FACTORY.calendars[m.calendar],
            machine_seed(FACTORY.seed, m.id),
            ORIGIN,
            counter_start=source.counter_start,
            counter_reset_daily=source.counter_reset_daily,
        )
    return models


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


@asynccontextmanager
async def serving(
    clock: Clock,
) -> AsyncIterator[tuple[ModbusServers, dict[str, MachineModel], ModbusConnections]]:
    models = build_models()
    async with (
        ModbusServers(FACTORY, models, clock.now, fault_seed=3) as servers,
        ModbusConnections() as connections,
    ):
        yield servers, models, connections


def device(
    endpoint: Endpoint, fields: Sequence[ModbusFieldConfig], **kw: Any
) -> ModbusDeviceConfig:
    return ModbusDeviceConfig(
        host=endpoint.host, port=endpoint.port, unit=endpoint.unit, fields=tuple(fields), **kw
    )


def inputs(name: str, address: int, dtype: DataType, **kw: Any) -> ModbusFieldConfig:
    return ModbusFieldConfig(name=name, table="input", address=address, dtype=dtype, **kw)


PATTERN_FIELDS = (
    inputs("model_name", 0, "string", length_registers=8),
    inputs("map_version", 8, "uint16"),
    inputs("p_int16", 100, "int16"),
    inputs("p_uint16", 101, "uint16"),
    inputs("p_int32", 102, "int32"),
    inputs("p_uint32", 104, "uint32"),
    inputs("p_int64", 106, "int64"),
    inputs("p_uint64", 110, "uint64"),
    inputs("p_float32", 114, "float32"),
    inputs("p_float64", 116, "float64"),
    inputs("p_string", 120, "string", length_registers=5),
)
PATTERN: dict[str, int | float | str] = {
    "map_version": 1,
    "p_int16": -12345,
    "p_uint16": 54321,
    "p_int32": -123456789,
    "p_uint32": 3456789012,
    "p_int64": -1234567890123456789,
    "p_uint64": 12345678901234567890,
    "p_float32": as_float32(123.456),
    "p_float64": -9876.54321,
    "p_string": "KYOSO-SIM",
}


def expected_pattern(machine_id: str) -> dict[str, int | float | str]:
    return {"model_name": machine_id, **PATTERN}


def assert_all_missing(result: ReadResult, reason: MissingReason) -> None:
    assert result.values == {}
    assert {m.reason for m in result.missing.values()} == {reason}, result.missing


@pytest.mark.integration
def test_every_type_in_every_word_order_from_the_test_pattern() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            for machine_id, endpoint in servers.endpoints.items():
                order = SOURCES[machine_id].word_order
                # the word order set on the device ...
                on_device = device(endpoint, PATTERN_FIELDS, word_order=order)
                # ... or on each multi-register field of a device left at ABCD
                on_fields = device(
                    endpoint,
                    [
                        f.model_copy(update={"word_order": order}) if f.count in (2, 4) else f
                        for f in PATTERN_FIELDS
                    ],
                )
                for config in (on_device, on_fields):
                    source = ModbusSource(config, connections.get(config))
                    result = await source.poll()
                    assert result.missing == {}
                    assert result.values == expected_pattern(machine_id), (machine_id, config)
                    assert {k: type(v) for k, v in result.values.items()} == {
                        k: type(v) for k, v in expected_pattern(machine_id).items()
                    }
                    assert result.requests == 2  # input 0-8 and 100-124: the gap is not read

    asyncio.run(scenario())


LIVE_FIELDS = (
    field("state_code", 0),
    field("alarm_code", 1),
    field("good_parts", 2, "uint32"),
    field("reject_parts", 4, "uint32"),
    field("load_pct", 6, "float32"),
    field("power_kw", 8, "float32"),
    field("status_bits", 10),
    field("running", 10, "bit", bit=0),
    field("alarm_active", 10, "bit", bit=1),
    field("in_setup", 10, "bit", bit=2),
    field("in_planned_time", 10, "bit", bit=3),
    field("coolant_c", 11, "int16", scale=0.1),
    field("energy_wh", 12, "uint64"),
    field("running_h", 16, "float64"),
    ModbusFieldConfig(name="di_running", table="discrete_input", address=0, dtype="bool"),
    ModbusFieldConfig(name="di_alarm", table="discrete_input", address=1, dtype="bool"),
    ModbusFieldConfig(name="door_closed", table="discrete_input", address=2, dtype="bool"),
    ModbusFieldConfig(name="alarm_ack", table="coil", address=0, dtype="bool"),
)


def moments_by_state(model: MachineModel) -> dict[MachineState, float]:
    model.advance(ORIGIN + 2 * DAY)
    found: dict[MachineState, float] = {}
    for seg in model.segments:
        if seg.start > ORIGIN + 0.5 * DAY and seg.state not in found:
            found[seg.state] = (seg.start + seg.end) / 2
    return found


def running_hours(model: MachineModel, moment: float) -> float:
    seconds = sum(
        min(seg.end, moment) - seg.start
        for seg in model.segments
        if seg.state is MachineState.RUNNING and seg.start < moment
    )
    return seconds / 3600


@pytest.mark.integration
def test_live_values_match_the_model_at_read_time() -> None:
    clock = Clock(ORIGIN)

    async def scenario() -> None:
        async with serving(clock) as (servers, models, connections):
            for machine_id, model in models.items():
                source_config = SOURCES[machine_id]
                config = device(
                    servers.endpoints[machine_id], LIVE_FIELDS, word_order=source_config.word_order
                )
                source = ModbusSource(config, connections.get(config))
                moments = moments_by_state(model)
                assert set(moments) == set(MachineState) - {MachineState.UNKNOWN}
                for state, moment in moments.items():
                    clock.at = moment
                    snap = model.snapshot(moment)
                    result = await source.poll()
                    assert result.missing == {}
                    v = result.values
                    assert v["state_code"] == source_config.state_codes[state.value]
                    assert v["alarm_code"] == snap.alarm
                    assert v["good_parts"] == snap.good_counter
                    assert v["reject_parts"] == snap.reject_counter
                    assert v["load_pct"] == pytest.approx(snap.load_pct, rel=1e-6)
                    assert v["power_kw"] == pytest.approx(snap.power_kw, rel=1e-6)
                    assert v["status_bits"] == reg.status_bits(state)
                    assert v["running"] is (state is MachineState.RUNNING)
                    assert v["alarm_active"] is (state is MachineState.DOWN)
                    assert v["in_setup"] is (state is MachineState.SETUP)
                    assert v["in_planned_time"] is (state is not MachineState.PLANNED_STOP)
                    coolant = round(reg.coolant_c(state, moment) * 10) / 10
                    assert v["coolant_c"] == pytest.approx(coolant)
                    assert v["energy_wh"] == reg.MeterReader(model).at(moment).energy_wh
                    assert v["running_h"] == pytest.approx(running_hours(model, moment))
                    assert v["di_running"] is (state is MachineState.RUNNING)
                    assert v["di_alarm"] is (state is MachineState.DOWN)
                    assert v["door_closed"] is (state is not MachineState.SETUP)
                    assert v["alarm_ack"] is False

    asyncio.run(scenario())


@pytest.mark.integration
def test_the_live_block_is_one_request_instead_of_one_per_field() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + 1.3 * DAY)) as (servers, _, connections):
            endpoint = servers.endpoints["m-cdab"]
            config = device(endpoint, LIVE_FIELDS, word_order="CDAB")
            plan = plan_device(config)
            print(format_plan(plan))
            source = ModbusSource(config, connections.get(config))
            merged = await source.poll()
            assert merged.missing == {}
            holding = [r for r in plan if r.table == "holding"]
            assert [(r.start, r.count) for r in holding] == [(0, 20)]
            assert merged.requests == len(plan) == 3  # holding 0-19, discrete 0-2, coil 0

            per_field = 0
            for f in LIVE_FIELDS:
                single = device(endpoint, [f], word_order="CDAB")
                alone = await ModbusSource(single, connections.get(single)).poll()
                assert alone.values == {f.name: merged.values[f.name]}
                per_field += alone.requests
            assert per_field == len(LIVE_FIELDS) == 18
            print(
                f"live block: {merged.requests} requests per poll merged "
                f"({len(holding)} for the holding registers), {per_field} one per field"
            )

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_gap_filling_read_that_meets_exception_2_is_split_for_good() -> None:
    """Input registers 9-99 do not exist: a read across them answers exception 2."""

    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            fields = [
                inputs("map_version", 8, "uint16"),
                inputs("nothing_here", 50, "uint16"),
                inputs("p_int16", 100, "int16"),
            ]
            config = device(servers.endpoints["m-abcd"], fields, max_gap_registers=100)
            assert [(r.start, r.count) for r in plan_device(config)] == [(8, 93)]
            source = ModbusSource(config, connections.get(config))
            result = await source.poll()
            assert result.values == {"map_version": 1, "p_int16": -12345}
            assert str(result.missing["nothing_here"]) == "exception 2 (illegal data address)"
            assert result.requests == 4  # the merged read, then each field alone
            assert [(r.start, r.count) for r in source.plan] == [(8, 1), (50, 1), (100, 1)]
            again = await source.poll()
            assert (again.values, again.requests) == (result.values, 3)
            assert state_of(source.breaker) is CircuitState.CLOSED  # the device did answer
            assert source.stats.errors["exception_2"] == 3

    asyncio.run(scenario())


@pytest.mark.integration
def test_busy_backs_off_without_hammering() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            endpoints = servers.endpoints
            busy_config = device(
                endpoints["m-cdab"],
                PATTERN_FIELDS,
                word_order="CDAB",
                busy_backoff_s=0.4,
                failures_to_open=100,
            )
            busy = ModbusSource(busy_config, connections.get(busy_config))
            neighbour_config = device(endpoints["m-abcd"], PATTERN_FIELDS)
            neighbour = ModbusSource(neighbour_config, connections.get(neighbour_config))
            assert connections.get(busy_config) is connections.get(neighbour_config)

            servers.set_fault("m-cdab", Fault(FaultKind.BUSY))
            first = await busy.poll()
            assert_all_missing(first, MissingReason.EXCEPTION)
            assert str(first.missing["p_int16"]) == "exception 6 (server device busy)"
            assert first.requests == 1  # the rest of the poll is not attempted

            backing_off = await busy.poll()
            assert_all_missing(backing_off, MissingReason.BUSY_BACKOFF)
            assert backing_off.requests == 0
            assert (await neighbour.poll()).values == expected_pattern("m-abcd")

            await asyncio.sleep(0.45)
            assert (await busy.poll()).requests == 1  # one try after the pause, still busy
            servers.set_fault("m-cdab", None)
            assert (await busy.poll()).requests == 0
            await asyncio.sleep(0.45)
            recovered = await busy.poll()
            assert recovered.values == expected_pattern("m-cdab")
            assert busy.stats.errors["exception_6"] == 2
            assert busy.stats.errors["busy_backoff"] == 2

    asyncio.run(scenario())


@pytest.mark.integration
def test_no_answer_or_a_late_one_is_a_timeout() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            endpoints = servers.endpoints
            config = device(endpoints["m-abcd"], PATTERN_FIELDS, timeout_s=0.3, retries=1)
            source = ModbusSource(config, connections.get(config))
            neighbour_config = device(endpoints["m-cdab"], PATTERN_FIELDS, word_order="CDAB")
            neighbour = ModbusSource(neighbour_config, connections.get(neighbour_config))

            servers.set_fault("m-abcd", Fault(FaultKind.NO_RESPONSE))
            result = await source.poll()
            assert_all_missing(result, MissingReason.TIMEOUT)
            assert result.requests == 2  # one retry, then the poll gives up on the device
            assert 0.6 <= result.duration_s < 0.9
            assert source.stats.errors["timeout"] == 2
            assert (await neighbour.poll()).values == expected_pattern("m-cdab")

            servers.set_fault("m-abcd", Fault(FaultKind.SLOW, delay_s=1.0))
            late = await source.poll()
            assert_all_missing(late, MissingReason.TIMEOUT)
            servers.set_fault("m-abcd", None)
            await asyncio.sleep(1.1)  # the late answers arrive and are discarded by id
            assert (await source.poll()).values == expected_pattern("m-abcd")

            servers.set_fault("m-abcd", Fault(FaultKind.SLOW, delay_s=0.1))
            slow_but_in_time = await source.poll()
            assert slow_but_in_time.values == expected_pattern("m-abcd")
            assert source.stats.last_latency_s is not None
            assert source.stats.last_latency_s >= 0.1

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_dropped_connection_is_reopened() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            endpoints = servers.endpoints
            config = device(endpoints["m-abcd"], PATTERN_FIELDS, timeout_s=1.0)
            source = ModbusSource(config, connections.get(config))
            neighbour_config = device(endpoints["m-cdab"], PATTERN_FIELDS, word_order="CDAB")
            neighbour = ModbusSource(neighbour_config, connections.get(neighbour_config))
            assert (await source.poll()).values == expected_pattern("m-abcd")
            connection = source.connection
            assert connection.stats.connects == 1

            servers.set_fault("m-abcd", Fault(FaultKind.DROP))
            dropped = await source.poll()
            assert_all_missing(dropped, MissingReason.CONNECTION)
            assert dropped.duration_s < 0.5  # noticed at once, not after the timeout
            assert dropped.requests == 2  # the retry reconnected, and was dropped again
            assert connection.stats.losses == 2
            # the shared connection is reopened for the neighbour too
            assert (await neighbour.poll()).values == expected_pattern("m-cdab")
            servers.set_fault("m-abcd", None)
            assert (await source.poll()).values == expected_pattern("m-abcd")
            assert connection.stats.connects == 3  # first, the retry's, the neighbour's

    asyncio.run(scenario())


@pytest.mark.integration
def test_junk_answers_never_become_values(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            config = device(
                servers.endpoints["m-cdab"],
                PATTERN_FIELDS,
                word_order="CDAB",
                retries=0,
                failures_to_open=1000,
            )
            source = ModbusSource(config, connections.get(config))
            servers.set_fault("m-cdab", Fault(FaultKind.JUNK))
            for _ in range(5):
                result = await source.poll()
                assert_all_missing(result, MissingReason.INVALID_RESPONSE)
                assert str(result.missing["p_int16"]).startswith("invalid response: garbage")
                assert result.duration_s < 0.5
            servers.set_fault("m-cdab", Fault(FaultKind.JUNK, probability=0.5))
            complete = failed = 0
            for _ in range(30):
                result = await source.poll()
                expected = expected_pattern("m-cdab")
                assert all(expected[k] == v for k, v in result.values.items())
                complete += not result.missing
                failed += bool(result.missing)
            assert complete > 0
            assert failed > 0

    asyncio.run(scenario())
    # screened before pymodbus's decoder, which would raise inside asyncio's data_received
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []


@pytest.mark.integration
def test_the_circuit_opens_and_half_opens() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            config = device(
                servers.endpoints["m-dcba"],
                PATTERN_FIELDS,
                word_order="DCBA",
                timeout_s=0.2,
                retries=0,
                failures_to_open=2,
                open_s=0.5,
            )
            source = ModbusSource(config, connections.get(config))
            servers.set_fault("m-dcba", Fault(FaultKind.NO_RESPONSE))
            for _ in range(2):
                assert_all_missing(await source.poll(), MissingReason.TIMEOUT)
            assert state_of(source.breaker) is CircuitState.OPEN
            assert source.stats.circuit_opens == 1

            refused = await source.poll()
            assert_all_missing(refused, MissingReason.CIRCUIT_OPEN)
            assert (refused.requests, refused.duration_s < 0.05) == (0, True)

            await asyncio.sleep(0.55)
            trial = await source.poll()  # half-open: one request, which times out
            assert_all_missing(trial, MissingReason.TIMEOUT)
            assert trial.requests == 1
            assert state_of(source.breaker) is CircuitState.OPEN
            assert source.stats.circuit_opens == 2
            assert_all_missing(await source.poll(), MissingReason.CIRCUIT_OPEN)

            servers.set_fault("m-dcba", None)
            await asyncio.sleep(0.55)
            healed = await source.poll()  # the trial succeeds and the poll goes on
            assert healed.values == expected_pattern("m-dcba")
            assert healed.requests == 2
            assert state_of(source.breaker) is CircuitState.CLOSED
            assert source.stats.errors["circuit_open"] == 2

    asyncio.run(scenario())


@pytest.mark.integration
def test_an_unknown_unit_behind_a_gateway_counts_as_a_failure() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            endpoint = servers.endpoints["m-abcd"]._replace(unit=9)
            config = device(endpoint, PATTERN_FIELDS, failures_to_open=2)
            source = ModbusSource(config, connections.get(config))
            result = await source.poll()
            assert_all_missing(result, MissingReason.EXCEPTION)
            assert {m.exception_code for m in result.missing.values()} == {11}
            assert result.requests == 1
            await source.poll()
            assert state_of(source.breaker) is CircuitState.OPEN

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_dead_device_does_not_delay_the_others() -> None:
    timeout_s = 1.0

    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            sources: dict[str, ModbusSource] = {}
            for machine_id, endpoint in servers.endpoints.items():
                config = device(
                    endpoint,
                    PATTERN_FIELDS,
                    word_order=SOURCES[machine_id].word_order,
                    timeout_s=timeout_s,
                    retries=0,
                    failures_to_open=100,
                )
                sources[machine_id] = ModbusSource(config, connections.get(config))
            servers.set_fault("m-badc", Fault(FaultKind.NO_RESPONSE))  # alone on its server
            latencies: dict[str, list[float]] = {m: [] for m in sources}
            for _ in range(3):
                started = time.monotonic()
                async with asyncio.TaskGroup() as group:
                    tasks = {m: group.create_task(s.poll()) for m, s in sources.items()}
                for machine_id, task in tasks.items():
                    result = task.result()
                    latencies[machine_id].append(result.duration_s)
                    if machine_id == "m-badc":
                        assert_all_missing(result, MissingReason.TIMEOUT)
                    else:
                        assert result.values == expected_pattern(machine_id)
                assert time.monotonic() - started < timeout_s + 0.3
            healthy = [t for m, ts in latencies.items() if m != "m-badc" for t in ts]
            rounds = [max(ts[i] for m, ts in latencies.items() if m != "m-badc") for i in range(3)]
            print(
                f"dead device {min(latencies['m-badc']):.3f} s per poll; healthy devices at "
                f"most {', '.join(f'{t:.4f}' for t in rounds)} s in rounds 1-3 "
                f"(the first connects) with timeout {timeout_s} s"
            )
            assert min(latencies["m-badc"]) >= timeout_s
            assert max(healthy) < 0.25 * timeout_s

    asyncio.run(scenario())


@pytest.mark.integration
def test_an_open_circuit_frees_a_shared_line_for_the_neighbour() -> None:
    """Units behind one endpoint share its line: a dead unit delays its neighbour by at
    most its timeout, until its circuit opens. The neighbour's own timeout starts once the
    line is free, so waiting for the line is no timeout."""

    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            endpoints = servers.endpoints
            dead_config = device(
                endpoints["m-abcd"], PATTERN_FIELDS, timeout_s=0.5, retries=0, failures_to_open=1
            )
            dead = ModbusSource(dead_config, connections.get(dead_config))
            config = device(
                endpoints["m-cdab"], PATTERN_FIELDS, word_order="CDAB", timeout_s=0.3, retries=0
            )
            neighbour = ModbusSource(config, connections.get(config))
            assert (await neighbour.poll()).values == expected_pattern("m-cdab")  # connected
            servers.set_fault("m-abcd", Fault(FaultKind.NO_RESPONSE))
            for round_ in range(3):
                async with asyncio.TaskGroup() as group:
                    dead_poll = group.create_task(dead.poll())
                    await asyncio.sleep(0)  # the dead unit takes the line first
                    neighbour_poll = group.create_task(neighbour.poll())
                assert neighbour_poll.result().values == expected_pattern("m-cdab")
                waited = neighbour_poll.result().duration_s
                if round_ == 0:
                    assert_all_missing(dead_poll.result(), MissingReason.TIMEOUT)
                    assert 0.4 < waited < 0.7
                else:
                    assert_all_missing(dead_poll.result(), MissingReason.CIRCUIT_OPEN)
                    assert waited < 0.1
            assert neighbour.stats.errors == {}

    asyncio.run(scenario())


@pytest.mark.integration
def test_cancelling_a_poll_cancels_it_and_leaves_the_line_usable() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, connections):
            endpoints = servers.endpoints
            dead_config = device(endpoints["m-abcd"], PATTERN_FIELDS, timeout_s=5.0)
            dead = ModbusSource(dead_config, connections.get(dead_config))
            servers.set_fault("m-abcd", Fault(FaultKind.NO_RESPONSE))
            task = asyncio.create_task(dead.poll())
            await asyncio.sleep(0.2)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 0.1
            config = device(endpoints["m-cdab"], PATTERN_FIELDS, word_order="CDAB")
            neighbour = ModbusSource(config, connections.get(config))
            assert (await neighbour.poll()).values == expected_pattern("m-cdab")

    asyncio.run(scenario())


# -- RTU framing over TCP, from a small pymodbus server ----------------------------------------


class PatternDevice(ModbusBaseDeviceContext):
    """Input registers 100-119: the test pattern's numbers in one word order."""

    def __init__(self, order: WordOrder) -> None:
        self.registers: dict[int, int] = {}
        for f, value in reg.TEST_PATTERN:
            for i, word in enumerate(encode_value(value, f.dtype, order)):
                self.registers[f.address + i] = word

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        wanted = range(address, address + count)
        if func_code != 4 or any(a not in self.registers for a in wanted):
            return ExcCodes.ILLEGAL_ADDRESS
        return [self.registers[a] for a in wanted]


@pytest.mark.integration
def test_rtu_frames_over_tcp() -> None:
    numbers = [f for f in PATTERN_FIELDS if f.name in PATTERN and f.name != "p_string"]
    numbers = [f for f in numbers if f.address >= 100]

    async def scenario() -> None:
        units = {3: PatternDevice("CDAB"), 4: PatternDevice("DCBA")}
        context = ModbusServerContext(devices=units, single=False)  # type: ignore[no-untyped-call]
        server = ModbusTcpServer(context, framer=FramerType.RTU, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        try:
            listener = server.transport
            assert isinstance(listener, asyncio.Server)
            port = listener.sockets[0].getsockname()[1]
            async with ModbusConnections() as connections:
                lines: tuple[tuple[int, WordOrder], ...] = ((3, "CDAB"), (4, "DCBA"))
                for unit, order in lines:
                    config = ModbusDeviceConfig(
                        transport="rtu_over_tcp",
                        host="127.0.0.1",
                        port=port,
                        unit=unit,
                        word_order=order,
                        fields=tuple(numbers),
                    )
                    source = ModbusSource(config, connections.get(config))
                    result = await source.poll()
                    assert result.missing == {}
                    assert result.values == {f.name: PATTERN[f.name] for f in numbers}
                    assert result.requests == 1
                # a unit nobody answers to on that line: the server says exception 11
                config = ModbusDeviceConfig(
                    transport="rtu_over_tcp",
                    host="127.0.0.1",
                    port=port,
                    unit=5,
                    fields=tuple(numbers),
                )
                missing = (await ModbusSource(config, connections.get(config)).poll()).missing
                assert {m.exception_code for m in missing.values()} == {11}
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    asyncio.run(scenario())


class SequenceDevice(ModbusBaseDeviceContext):
    """Holding register 0 answers the number of the request, counted on arrival; the
    first ``slow`` requests are answered ``delay_s`` late."""

    def __init__(self, slow: int, delay_s: float) -> None:
        self.requests = 0
        self.slow = slow
        self.delay_s = delay_s

    async def async_getValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self.requests += 1
        number = self.requests
        if number <= self.slow:
            await asyncio.sleep(self.delay_s)
        return [number]


@pytest.mark.integration
def test_a_late_rtu_answer_is_not_taken_for_the_next_one() -> None:
    """RTU frames carry no transaction id: after a timeout the link is reopened, so that
    the late answer to the first request cannot pass for the answer to the second."""

    async def scenario() -> None:
        context = ModbusServerContext(
            devices={1: SequenceDevice(slow=2, delay_s=0.6)}, single=False
        )  # type: ignore[no-untyped-call]
        server = ModbusTcpServer(context, framer=FramerType.RTU, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        try:
            listener = server.transport
            assert isinstance(listener, asyncio.Server)
            config = ModbusDeviceConfig(
                transport="rtu_over_tcp",
                host="127.0.0.1",
                port=listener.sockets[0].getsockname()[1],
                timeout_s=0.4,
                retries=0,
                fields=(field("request_number", 0),),
            )
            async with ModbusSource(config) as source:
                # request 1 times out at 0.4 s; its answer comes at 0.6 s, while request 2
                # (answered at 1.0 s at the earliest) waits: it must not be taken for it
                assert_all_missing(await source.poll(), MissingReason.TIMEOUT)
                assert_all_missing(await source.poll(), MissingReason.TIMEOUT)
                await asyncio.sleep(0.5)  # every late answer has been sent
                assert (await source.poll()).values == {"request_number": 3}
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]

    asyncio.run(scenario())


# -- probe ---------------------------------------------------------------------------------


def probe_table(text: str) -> dict[tuple[int, str], dict[str, str]]:
    """The word-order table of format_probe: (address, type) -> order -> text."""
    rows: dict[tuple[int, str], dict[str, str]] = {}
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == 6 and parts[0].isdigit():
            address, dtype, *cells = parts
            rows[(int(address), dtype)] = dict(zip(ORDERS, cells, strict=True))
    return rows


@pytest.mark.integration
@pytest.mark.parametrize("machine_id", ["m-abcd", "m-cdab", "m-badc", "m-dcba"])
def test_probe_shows_the_test_pattern_in_the_machines_word_order(machine_id: str) -> None:
    order = SOURCES[machine_id].word_order

    async def scenario() -> tuple[str, str]:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _, _):
            e = servers.endpoints[machine_id]
            result = await probe(e.host, e.port, unit=e.unit, address=100, count=25, table="input")
            assert result.raw[:2] == (0xCFC7, 0xD431)
            found = {(i.address, i.dtype, i.word_order): i.value for i in result.interpretations}
            assert found[(114, "float32", order)] == as_float32(123.456)
            assert found[(106, "int64", order)] == -1234567890123456789
            string = await probe(e.host, e.port, unit=e.unit, address=120, count=5, table="input")
            assert string.text == "KYOSO-SIM"
            return format_probe(result), format_probe(string)

    text, string_text = asyncio.run(scenario())
    print(text)
    assert text.splitlines()[0].startswith("input 100-124 (25) of 127.0.0.1:")
    assert re.search(r"^\s+100\s+CFC7\s+53191\s+-12345\s", text, re.M)
    assert re.search(r"^\s+101\s+D431\s+54321\s+-11215\s", text, re.M)
    table = probe_table(text)
    assert table[(102, "int32")][order] == "-123456789"
    assert table[(104, "uint32")][order] == "3456789012"
    assert table[(106, "int64")][order] == "-1234567890123456789"
    assert table[(110, "uint64")][order] == "12345678901234567890"
    assert table[(114, "float32")][order] == "123.456"
    assert table[(116, "float64")][order] == "-9876.54321"
    assert "KYOSO-SIM'" in text  # the tail of the block's ASCII
    assert string_text.endswith("string: 'KYOSO-SIM'")


@pytest.mark.integration
def test_probe_reads_bits_and_refuses_what_the_protocol_does_not_allow() -> None:
    clock = Clock(ORIGIN + DAY)

    async def scenario() -> tuple[str, tuple[int, ...]]:
        async with serving(clock) as (servers, models, _):
            e = servers.endpoints["m-abcd"]
            with pytest.raises(ValueError, match="count must be 1-125"):
                await probe(e.host, e.port, unit=e.unit, address=0, count=126)
            with pytest.raises(ValueError, match="count must be 1-2000"):
                await probe(e.host, e.port, address=0, count=0, table="coil")
            result = await probe(
                e.host, e.port, unit=e.unit, address=0, count=3, table="discrete_input"
            )
            state = models["m-abcd"].snapshot(clock.at).state
            expected = (
                int(state is MachineState.RUNNING),
                int(state is MachineState.DOWN),
                int(state is not MachineState.SETUP),
            )
            assert result.raw == expected
            servers.set_fault("m-abcd", Fault(FaultKind.NO_RESPONSE))
            with pytest.raises(ModbusTimeoutError, match=r"no answer within 0\.2 s"):
                await probe(e.host, e.port, unit=e.unit, timeout_s=0.2)
            with pytest.raises(ModbusExceptionResponseError, match="exception 11"):
                await probe(e.host, e.port, unit=99)
            return format_probe(result), expected

    text, expected = asyncio.run(scenario())
    assert text.splitlines()[2:] == ["address  value"] + [
        f"{a:>7}  {v}" for a, v in enumerate(expected)
    ]
