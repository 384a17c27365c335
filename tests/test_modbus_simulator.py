"""The simulated machines' Modbus map, servers and faults, read over real TCP.

Values are decoded here with :mod:`struct` and byte patterns spelled out letter by letter,
never with the encoder under test. The servers run on free ports with a frozen simulation
clock, so every expected value is exact.
"""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from services import find_binary
from simfactory import machine, small_factory

from kyoso.contract import MachineState
from kyoso.simulators import registers as reg
from kyoso.simulators.behaviour import MachineModel, Snapshot, machine_seed
from kyoso.simulators.config import (
    FactoryConfig,
    ModbusServerConfig,
    ModbusSourceConfig,
    WordOrder,
    load_factory,
    shipped_factories,
)
from kyoso.simulators.endpoints import Endpoint
from kyoso.simulators.modbus import Fault, FaultKind, ModbusServers
from kyoso.simulators.registers import DataType, encode_string, encode_value

ORIGIN = datetime(2026, 1, 5, tzinfo=UTC).timestamp()  # a Monday
DAY = 86_400.0
ORDERS: tuple[WordOrder, ...] = ("ABCD", "CDAB", "BADC", "DCBA")

# -- an independent decoder ------------------------------------------------------------------

_FORMATS: dict[str, str] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "int64": ">q",
    "uint64": ">Q",
    "float32": ">f",
    "float64": ">d",
}

# Transmitted byte order, A being the most significant byte (config.WordOrder's docstring).
_PATTERNS: dict[int, dict[str, str]] = {
    4: {"ABCD": "ABCD", "CDAB": "CDAB", "BADC": "BADC", "DCBA": "DCBA"},
    8: {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"},
}


def decode(registers: Sequence[int], dtype: str, order: str) -> Any:
    """Decode registers as received on the wire."""
    wire = b"".join(r.to_bytes(2, "big") for r in registers)
    fmt = _FORMATS[dtype]
    size = struct.calcsize(fmt)
    assert len(wire) == size
    if size == 2:
        return struct.unpack(fmt, wire)[0]
    big = bytearray(size)
    for position, letter in enumerate(_PATTERNS[size][order]):
        big[ord(letter) - ord("A")] = wire[position]
    return struct.unpack(fmt, bytes(big))[0]


def as_float32(value: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", value))[0])


def decode_string(registers: Sequence[int]) -> str:
    return b"".join(r.to_bytes(2, "big") for r in registers).rstrip(b"\0").decode("ascii")


# -- encoding --------------------------------------------------------------------------------

SAMPLES: dict[str, list[float]] = {
    "int16": [-32768, -12345, -1, 0, 1, 32767],
    "uint16": [0, 1, 54321, 65535],
    "int32": [-(2**31), -123456789, -1, 0, 2**31 - 1],
    "uint32": [0, 1, 65536, 3456789012, 2**32 - 1],
    "int64": [-(2**63), -1234567890123456789, -1, 0, 2**63 - 1],
    "uint64": [0, 2**32, 12345678901234567890, 2**64 - 1],
    "float32": [0.0, -0.5, 123.456, -3.4e38, 1e-30],
    "float64": [0.0, -9876.54321, 1e300, -2.5e-300],
}
DTYPES: tuple[DataType, ...] = (
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_type_round_trips_in_every_word_order(dtype: DataType, order: WordOrder) -> None:
    for value in SAMPLES[dtype]:
        words = encode_value(value, dtype, order)
        assert len(words) == struct.calcsize(_FORMATS[dtype]) // 2
        assert all(0 <= w <= 0xFFFF for w in words)
        expected = as_float32(value) if dtype == "float32" else value
        assert decode(words, dtype, order) == expected


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ("ABCD", [0x42F6, 0xE979]),
        ("CDAB", [0xE979, 0x42F6]),
        ("BADC", [0xF642, 0x79E9]),
        ("DCBA", [0x79E9, 0xF642]),
    ],
)
def test_float32_worked_example_of_the_docs(order: WordOrder, words: list[int]) -> None:
    assert encode_value(123.456, "float32", order) == words


def test_uint64_word_orders_extend_the_32_bit_pattern() -> None:
    value = 0x0102030405060708
    assert encode_value(value, "uint64", "ABCD") == [0x0102, 0x0304, 0x0506, 0x0708]
    assert encode_value(value, "uint64", "CDAB") == [0x0708, 0x0506, 0x0304, 0x0102]
    assert encode_value(value, "uint64", "BADC") == [0x0201, 0x0403, 0x0605, 0x0807]
    assert encode_value(value, "uint64", "DCBA") == [0x0807, 0x0605, 0x0403, 0x0201]


def test_single_registers_ignore_the_word_order() -> None:
    for order in ORDERS:
        assert encode_value(-12345, "int16", order) == [0xCFC7]
        assert encode_value(54321, "uint16", order) == [0xD431]


@pytest.mark.parametrize(
    ("value", "dtype"),
    [(65536, "uint16"), (-1, "uint16"), (-32769, "int16"), (2**32, "uint32"), (2**64, "uint64")],
)
def test_values_that_do_not_fit_are_refused(value: int, dtype: DataType) -> None:
    with pytest.raises(ValueError, match=dtype):
        encode_value(value, dtype)


def test_strings_are_two_characters_a_register_nul_padded() -> None:
    assert encode_string("KYOSO-SIM", 5) == [0x4B59, 0x4F53, 0x4F2D, 0x5349, 0x4D00]
    assert encode_string("abc", 1) == [0x6162]
    assert decode_string(encode_string("cnc-01", 8)) == "cnc-01"


# -- the register image, without TCP -----------------------------------------------------------


def snapshot(state: MachineState, at: float, alarm: int = 0) -> Snapshot:
    return Snapshot(
        at=at,
        state=state,
        alarm=alarm,
        good_total=7,
        reject_total=1,
        good_counter=4_294_967_290,
        reject_counter=70_000,
        load_pct=61.234,
        power_kw=9.876,
        current_a=14.0,
    )


@pytest.mark.parametrize("order", ORDERS)
def test_register_image_places_every_field(order: WordOrder) -> None:
    source = ModbusSourceConfig(server="s", word_order=order)
    meters = reg.Meters(energy_wh=5_000_000_123, running_h=1234.5625)
    image = reg.register_image(
        snapshot(MachineState.DOWN, ORIGIN, alarm=2210), source, name="cnc-01", meters=meters
    )
    h = image.holding
    assert sorted(h) == list(range(20))

    def field(address: int, dtype: str) -> Any:
        count = struct.calcsize(_FORMATS[dtype]) // 2
        return decode([h[a] for a in range(address, address + count)], dtype, order)

    assert h[0] == 4  # down
    assert h[1] == 2210
    assert field(2, "uint32") == 4_294_967_290
    assert field(4, "uint32") == 70_000
    assert field(6, "float32") == as_float32(61.234)
    assert field(8, "float32") == as_float32(9.876)
    assert h[10] == 0b1010  # alarm, in planned time
    assert field(12, "uint64") == 5_000_000_123
    assert field(16, "float64") == 1234.5625
    assert image.coils == {0: False}
    assert image.discrete_inputs == {0: False, 1: True, 2: True}
    assert decode_string([image.input[a] for a in range(8)]) == "cnc-01"
    assert image.input[8] == 1


def test_status_bits_and_discrete_inputs_per_state() -> None:
    source = ModbusSourceConfig(server="s")
    expected = {
        MachineState.RUNNING: (3, 0b1001, {0: True, 1: False, 2: True}),
        MachineState.SETUP: (2, 0b1100, {0: False, 1: False, 2: False}),
        MachineState.IDLE: (1, 0b1000, {0: False, 1: False, 2: True}),
        MachineState.DOWN: (4, 0b1010, {0: False, 1: True, 2: True}),
        MachineState.PLANNED_STOP: (0, 0b0000, {0: False, 1: False, 2: True}),
    }
    meters = reg.Meters(0, 0.0)
    for state, (code, bits, inputs) in expected.items():
        image = reg.register_image(snapshot(state, ORIGIN), source, name="m", meters=meters)
        assert (image.holding[0], image.holding[10], image.discrete_inputs) == (code, bits, inputs)


def test_coolant_temperature_is_signed_tenths() -> None:
    source = ModbusSourceConfig(server="s")
    meters = reg.Meters(0, 0.0)
    coldest = ORIGIN + 0.75 * DAY  # the daily swing is at its minimum
    night = reg.register_image(
        snapshot(MachineState.PLANNED_STOP, coldest), source, name="m", meters=meters
    )
    assert night.holding[11] == 0xFFF6  # -1.0 degC
    warmest = ORIGIN + 0.25 * DAY
    day = reg.register_image(
        snapshot(MachineState.RUNNING, warmest), source, name="m", meters=meters
    )
    assert day.holding[11] == 270  # 27.0 degC


# -- a small factory -----------------------------------------------------------------------

FACTORY = small_factory(
    "test-works",
    42,
    ["cell", "solo"],
    [
        # mbpoll prints int32 only: this counter shows its sign bit.
        machine("m-abcd", "cell", 1, "ABCD", counter_start=3_000_000_000),
        machine("m-cdab", "cell", 2, "CDAB"),
        machine("m-badc", "cell", 3, "BADC"),
        machine("m-dcba", "cell", 4, "DCBA", counter_start=4_294_967_000),
        machine(
            "m-solo",
            "solo",
            7,
            "ABCD",
            state_codes={
                "planned_stop": 10,
                "idle": 11,
                "setup": 12,
                "running": 13,
                "down": 99,
            },
        ),
    ],
    breaks=[{"start": "12:00", "end": "12:30"}],
)
SOURCES = {m.id: m.source for m in FACTORY.machines if isinstance(m.source, ModbusSourceConfig)}


def build_models(factory: FactoryConfig = FACTORY) -> dict[str, MachineModel]:
    models = {}
    for m in factory.machines:
        source = m.source
        if not isinstance(source, ModbusSourceConfig):
            continue
        models[m.id] = MachineModel(
            m.id,
            m.behaviour,
            factory.calendars[m.calendar],
            machine_seed(factory.seed, m.id),
            ORIGIN,
            counter_start=source.counter_start,
            counter_reset_daily=source.counter_reset_daily,
        )
    return models


def moments_by_state(model: MachineModel, days: float = 2.0) -> dict[MachineState, float]:
    """The middle of the first later segment of each state (later: counters have moved)."""
    model.advance(ORIGIN + days * DAY)
    found: dict[MachineState, float] = {}
    for seg in model.segments:
        if seg.start > ORIGIN + 0.5 * DAY and seg.state not in found:
            found[seg.state] = (seg.start + seg.end) / 2
    return found


class Clock:
    """A simulation clock the test sets by hand."""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


@asynccontextmanager
async def serving(
    clock: Clock, factory: FactoryConfig = FACTORY
) -> AsyncIterator[tuple[ModbusServers, dict[str, MachineModel]]]:
    models = build_models(factory)
    async with ModbusServers(factory, models, clock.now, fault_seed=1) as servers:
        yield servers, models


@asynccontextmanager
async def client(endpoint: Endpoint, timeout_s: float = 2.0) -> AsyncIterator[AsyncModbusTcpClient]:
    modbus = AsyncModbusTcpClient(endpoint.host, port=endpoint.port, timeout=timeout_s, retries=0)
    assert await modbus.connect()
    try:
        yield modbus
    finally:
        modbus.close()


async def holding(modbus: AsyncModbusTcpClient, unit: int, address: int, count: int) -> list[int]:
    response = await modbus.read_holding_registers(address, count=count, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


async def inputs(modbus: AsyncModbusTcpClient, unit: int, address: int, count: int) -> list[int]:
    response = await modbus.read_input_registers(address, count=count, device_id=unit)
    assert not response.isError(), response
    return list(response.registers)


def exception_code(response: Any) -> int:
    assert response.isError(), response
    return int(response.exception_code)


def test_meters_integrate_the_timeline() -> None:
    model = build_models()["m-cdab"]
    reader = reg.MeterReader(model)
    step_s = 5.0
    moments = [ORIGIN + i * step_s for i in range(int(DAY / step_s) + 1)]
    readings = [reader.at(t) for t in moments]  # one reader, advancing
    energies = [r.energy_wh for r in readings]
    assert energies == sorted(energies)
    assert readings[0] == reg.Meters(0, 0.0)
    end = moments[-1]
    assert reg.MeterReader(model).at(end) == readings[-1]  # a fresh reader agrees
    assert readings[-1].running_h == pytest.approx(running_seconds(model, end) / 3600)
    assert readings[-1].running_h > 2
    # Energy agrees with the power register sampled over the day.
    sampled_wh = sum(model.snapshot(t).power_kw for t in moments[:-1]) * step_s / 3.6
    assert readings[-1].energy_wh == pytest.approx(sampled_wh, rel=0.01)


# -- live values over TCP ------------------------------------------------------------------


@pytest.mark.integration
def test_live_registers_follow_the_model_in_every_state() -> None:
    clock = Clock(ORIGIN)

    async def scenario() -> None:
        async with serving(clock) as (servers, models):
            endpoints = servers.endpoints
            for machine_id, model in models.items():
                source = SOURCES[machine_id]
                order = source.word_order
                unit = endpoints[machine_id].unit
                moments = moments_by_state(model)
                assert set(moments) == set(MachineState) - {MachineState.UNKNOWN}
                async with client(endpoints[machine_id]) as modbus:
                    for state, moment in moments.items():
                        clock.at = moment
                        snap = model.snapshot(moment)
                        assert snap.state is state
                        h = await holding(modbus, unit, 0, 20)
                        assert h[0] == source.state_codes[state.value]
                        assert h[1] == snap.alarm
                        assert (h[1] != 0) == (state is MachineState.DOWN)
                        assert decode(h[2:4], "uint32", order) == snap.good_counter
                        assert decode(h[4:6], "uint32", order) == snap.reject_counter
                        assert decode(h[6:8], "float32", order) == as_float32(snap.load_pct)
                        assert decode(h[8:10], "float32", order) == as_float32(snap.power_kw)
                        running_h = running_seconds(model, moment) / 3600
                        assert decode(h[16:20], "float64", order) == pytest.approx(running_h)
                        energy = reg.MeterReader(model).at(moment).energy_wh
                        assert decode(h[12:16], "uint64", order) == energy
                        response = await modbus.read_discrete_inputs(0, count=3, device_id=unit)
                        assert response.bits[:3] == [
                            state is MachineState.RUNNING,
                            state is MachineState.DOWN,
                            state is not MachineState.SETUP,
                        ]

    asyncio.run(scenario())


def running_seconds(model: MachineModel, moment: float) -> float:
    return sum(
        min(seg.end, moment) - seg.start
        for seg in model.segments
        if seg.state is MachineState.RUNNING and seg.start < moment
    )


@pytest.mark.integration
def test_identification_and_test_pattern_in_every_word_order() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _):
            for machine_id, endpoint in servers.endpoints.items():
                order = SOURCES[machine_id].word_order
                async with client(endpoint) as modbus:
                    ident = await inputs(modbus, endpoint.unit, 0, 9)
                    assert decode_string(ident[:8]) == machine_id
                    assert ident[8] == 1
                    p = await inputs(modbus, endpoint.unit, 100, 25)
                    assert decode(p[0:1], "int16", order) == -12345
                    assert decode(p[1:2], "uint16", order) == 54321
                    assert decode(p[2:4], "int32", order) == -123456789
                    assert decode(p[4:6], "uint32", order) == 3456789012
                    assert decode(p[6:10], "int64", order) == -1234567890123456789
                    assert decode(p[10:14], "uint64", order) == 12345678901234567890
                    assert decode(p[14:16], "float32", order) == as_float32(123.456)
                    assert decode(p[16:20], "float64", order) == -9876.54321
                    assert decode_string(p[20:25]) == "KYOSO-SIM"

    asyncio.run(scenario())


@pytest.mark.integration
def test_addresses_outside_the_map_answer_exception_2() -> None:
    async def scenario() -> None:
        async with serving(Clock(ORIGIN + DAY)) as (servers, _):
            endpoint = servers.endpoints["m-abcd"]
            async with client(endpoint) as modbus:
                read_hr = modbus.read_holding_registers
                read_ir = modbus.read_input_registers
                assert exception_code(await read_hr(19, count=2, device_id=1)) == 2
                assert exception_code(await read_hr(20, count=1, device_id=1)) == 2
                assert exception_code(await read_ir(8, count=2, device_id=1)) == 2  # the gap
                assert exception_code(await read_ir(99, count=2, device_id=1)) == 2
                assert exception_code(await read_ir(124, count=2, device_id=1)) == 2
                assert exception_code(await modbus.read_coils(1, count=1, device_id=1)) == 2
                di = await modbus.read_discrete_inputs(2, count=2, device_id=1)
                assert exception_code(di) == 2
                # A unit nobody answers to: what a gateway says for a silent target.
                assert exception_code(await read_hr(0, count=1, device_id=9)) == 11
                assert len(await holding(modbus, 1, 0, 20)) == 20
            async with Raw.open(endpoint) as raw:
                assert await raw.ask(1, count=126) == b"\x83\x03"

    asyncio.run(scenario())


@pytest.mark.integration
def test_only_the_acknowledge_coil_is_writable() -> None:
    async def scenario() -> None:
        async with (
            serving(Clock(ORIGIN + DAY)) as (servers, _),
            client(servers.endpoints["m-cdab"]) as modbus,
        ):
            before = await holding(modbus, 2, 0, 20)
            assert exception_code(await modbus.write_register(0, 5, device_id=2)) == 1
            written = await modbus.write_registers(2, [1, 2], device_id=2)
            assert exception_code(written) == 1
            assert await holding(modbus, 2, 0, 20) == before
            assert exception_code(await modbus.write_coil(1, True, device_id=2)) == 2
            for value in (True, False, True):
                assert not (await modbus.write_coil(0, value, device_id=2)).isError()
                assert (await modbus.read_coils(0, count=1, device_id=2)).bits[0] is value
            # The latch is per machine.
            assert (await modbus.read_coils(0, count=1, device_id=3)).bits[0] is False

    asyncio.run(scenario())


@pytest.mark.integration
def test_shipped_factories_answer_on_every_machine() -> None:
    factories = [load_factory(p) for p in shipped_factories()]
    assert factories
    clock = Clock(ORIGIN + 1.4 * DAY)

    async def scenario() -> None:
        for shipped in factories:
            free = {name: ModbusServerConfig(port=0) for name in shipped.modbus_servers}
            factory = shipped.model_copy(update={"modbus_servers": free})
            async with serving(clock, factory) as (servers, models):
                for machine_id, endpoint in servers.endpoints.items():
                    source = next(m.source for m in factory.machines if m.id == machine_id)
                    assert isinstance(source, ModbusSourceConfig)
                    snap = models[machine_id].snapshot(clock.at)
                    async with client(endpoint) as modbus:
                        h = await holding(modbus, endpoint.unit, 0, 6)
                    assert h[0] == source.state_codes[snap.state.value]
                    assert decode(h[2:4], "uint32", source.word_order) == snap.good_counter

    asyncio.run(scenario())


@pytest.mark.integration
def test_endpoints_need_a_started_server_and_a_free_port() -> None:
    async def scenario() -> None:
        servers = ModbusServers(FACTORY, build_models(), Clock(ORIGIN).now)
        with pytest.raises(RuntimeError, match="not started"):
            _ = servers.endpoints
        async with servers:
            endpoints = servers.endpoints
            assert endpoints["m-abcd"].port == endpoints["m-dcba"].port
            assert endpoints["m-abcd"].port != endpoints["m-solo"].port
            assert str(endpoints["m-solo"]) == f"127.0.0.1:{endpoints['m-solo'].port} unit 7"
            taken = {"cell": ModbusServerConfig(port=endpoints["m-abcd"].port)}
            clash = FACTORY.model_copy(update={"modbus_servers": {**taken, "solo": taken["cell"]}})
            with pytest.raises(OSError, match="cannot listen"):
                async with ModbusServers(clash, build_models(), Clock(ORIGIN).now):
                    pass

    asyncio.run(scenario())


# -- mbpoll, a third-party client ------------------------------------------------------------


async def mbpoll(endpoint: Endpoint, *args: str) -> tuple[int, dict[int, str], str]:
    """Run mbpoll once with zero-based references: (exit status, reference -> text, output)."""
    process = await asyncio.create_subprocess_exec(
        find_binary("mbpoll", "mbpoll"),
        *("-m", "tcp", "-p", str(endpoint.port), "-a", str(endpoint.unit), "-0", "-1"),
        *args,
        endpoint.host,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=20)
    text = out.decode()
    values = {int(m[1]): m[2] for m in re.finditer(r"^\[(\d+)\]:\s+(.+?)\s*$", text, re.M)}
    assert process.returncode is not None
    return process.returncode, values, text


def signed32(value: int) -> int:
    return value - 2**32 if value >= 2**31 else value


@pytest.mark.integration
def test_mbpoll_reads_what_the_map_promises() -> None:
    clock = Clock(moments_by_state(build_models()["m-abcd"])[MachineState.DOWN])

    async def scenario() -> None:
        async with serving(clock) as (servers, served):
            snap = served["m-abcd"].snapshot(clock.at)
            assert snap.state is MachineState.DOWN
            abcd, cdab = servers.endpoints["m-abcd"], servers.endpoints["m-cdab"]

            status, values, out = await mbpoll(abcd, "-t", "4", "-r", "0", "-c", "2")
            assert status == 0, out
            assert values == {0: "4", 1: str(snap.alarm)}

            # 32-bit types count values, not registers; -B is ABCD, the default CDAB.
            status, values, out = await mbpoll(abcd, "-t", "4:int", "-B", "-r", "2", "-c", "2")
            assert status == 0, out
            good, reject = snap.good_counter, snap.reject_counter
            assert values == {2: str(signed32(good)), 4: str(signed32(reject))}
            assert good >= 2**31  # mbpoll shows uint32 as int32

            status, values, out = await mbpoll(abcd, "-t", "4:float", "-B", "-r", "6", "-c", "2")
            assert status == 0, out
            assert values == {
                6: f"{as_float32(snap.load_pct):g}",
                8: f"{as_float32(snap.power_kw):g}",
            }

            cdab_snap = served["m-cdab"].snapshot(clock.at)
            status, values, out = await mbpoll(cdab, "-t", "4:int", "-r", "2", "-c", "1")
            assert status == 0, out
            assert values == {2: str(cdab_snap.good_counter)}

            # 16-bit registers print unsigned, with the signed reading when the top bit is set.
            status, values, out = await mbpoll(abcd, "-t", "3", "-r", "100", "-c", "2")
            assert status == 0, out
            assert values == {100: "53191 (-12345)", 101: "54321 (-11215)"}

            for endpoint, order_flag in ((abcd, ["-B"]), (cdab, [])):
                status, values, out = await mbpoll(
                    endpoint, "-t", "3:int", *order_flag, "-r", "102", "-c", "2"
                )
                assert status == 0, out
                assert values == {102: "-123456789", 104: str(signed32(3456789012))}
                status, values, out = await mbpoll(
                    endpoint, "-t", "3:float", *order_flag, "-r", "114", "-c", "1"
                )
                assert status == 0, out
                assert values == {114: "123.456"}

            status, values, out = await mbpoll(abcd, "-t", "1", "-r", "0", "-c", "3")
            assert status == 0, out
            assert values == {0: "0", 1: "1", 2: "1"}

            status, values, out = await mbpoll(abcd, "-t", "4", "-r", "19", "-c", "2")
            assert status == 1
            assert "Illegal data address" in out

    asyncio.run(scenario())


# -- faults --------------------------------------------------------------------------------


class Raw:
    """A bare Modbus TCP connection, to see exactly what comes back on the wire."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.tid = 0

    @classmethod
    def open(cls, endpoint: Endpoint) -> Raw:
        return cls(endpoint)

    async def __aenter__(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection(
            self.endpoint.host, self.endpoint.port
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.writer.close()

    async def send(self, unit: int, fc: int = 3, address: int = 0, count: int = 2) -> int:
        """Send a read request; return its transaction id."""
        self.tid += 1
        pdu = struct.pack(">BHH", fc, address, count)
        self.writer.write(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, unit) + pdu)
        await self.writer.drain()
        return self.tid

    async def receive(self, timeout_s: float = 2.0) -> tuple[int, int, bytes]:
        """(transaction id, unit, PDU) of the next frame."""
        header = await asyncio.wait_for(self.reader.readexactly(7), timeout_s)
        tid, protocol, length, unit = struct.unpack(">HHHB", header)
        assert protocol == 0
        return tid, unit, await asyncio.wait_for(self.reader.readexactly(length - 1), timeout_s)

    async def ask(
        self, unit: int, fc: int = 3, address: int = 0, count: int = 2, timeout_s: float = 2.0
    ) -> bytes:
        """The PDU answering one request, checked to carry its transaction id and unit."""
        tid = await self.send(unit, fc, address, count)
        got_tid, got_unit, pdu = await self.receive(timeout_s)
        assert (got_tid, got_unit) == (tid, unit)
        return pdu


def registers_pdu(words: Sequence[int]) -> bytes:
    return bytes([3, 2 * len(words)]) + b"".join(w.to_bytes(2, "big") for w in words)


@asynccontextmanager
async def two_units() -> AsyncIterator[tuple[ModbusServers, Endpoint, bytes, bytes]]:
    """Servers, unit 1's endpoint, and the answers of units 1 and 2 (one server) unfaulted."""
    async with serving(Clock(ORIGIN + 1.3 * DAY)) as (servers, _):
        endpoint = servers.endpoints["m-abcd"]
        assert servers.endpoints["m-cdab"].port == endpoint.port
        async with Raw.open(endpoint) as raw:
            one, two = await raw.ask(1), await raw.ask(2)
        assert one[:2] == two[:2] == b"\x03\x04"
        yield servers, endpoint, one, two


@pytest.mark.integration
def test_busy_answers_exception_6_and_clears() -> None:
    async def scenario() -> None:
        async with two_units() as (servers, endpoint, one, two), Raw.open(endpoint) as raw:
            servers.set_fault("m-abcd", Fault(FaultKind.BUSY))
            assert await raw.ask(1) == b"\x83\x06"
            assert await raw.ask(1, fc=4, address=100, count=1) == b"\x84\x06"
            assert await raw.ask(2) == two
            async with client(endpoint) as modbus:
                response = await modbus.read_holding_registers(0, count=2, device_id=1)
                assert exception_code(response) == 6
            servers.set_fault("m-abcd", None)
            assert await raw.ask(1) == one

    asyncio.run(scenario())


@pytest.mark.integration
def test_no_response_lets_the_client_time_out() -> None:
    async def scenario() -> None:
        async with two_units() as (servers, endpoint, one, two), Raw.open(endpoint) as raw:
            servers.set_fault("m-abcd", Fault(FaultKind.NO_RESPONSE))
            await raw.send(1)
            with pytest.raises(TimeoutError):
                await raw.receive(timeout_s=0.3)
            assert await raw.ask(2) == two  # same connection, other unit
            async with client(endpoint, timeout_s=0.3) as modbus:
                started = time.monotonic()
                with pytest.raises(ModbusIOException):
                    await modbus.read_holding_registers(0, count=2, device_id=1)
                assert time.monotonic() - started >= 0.3
            servers.set_fault("m-abcd", None)
            assert await raw.ask(1) == one

    asyncio.run(scenario())


@pytest.mark.integration
def test_slow_answers_correctly_after_the_delay() -> None:
    async def scenario() -> None:
        async with two_units() as (servers, endpoint, one, two), Raw.open(endpoint) as raw:
            servers.set_fault("m-abcd", Fault(FaultKind.SLOW, delay_s=1.0))
            started = time.monotonic()
            assert await raw.ask(1, timeout_s=5) == one
            assert time.monotonic() - started >= 1.0
            started = time.monotonic()
            assert await raw.ask(2) == two
            assert time.monotonic() - started < 0.5
            servers.set_fault("m-abcd", None)
            assert await raw.ask(1) == one

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_late_answer_keeps_its_own_transaction_id() -> None:
    """pymodbus's stock handler would stamp it with the newer request's id."""

    async def scenario() -> None:
        async with two_units() as (servers, endpoint, one, _), Raw.open(endpoint) as raw:
            servers.set_fault("m-abcd", Fault(FaultKind.SLOW, delay_s=0.6))
            late = await raw.send(1)
            with pytest.raises(TimeoutError):  # the client gives up ...
                await raw.receive(timeout_s=0.2)
            servers.set_fault("m-abcd", None)
            fresh = await raw.send(1, fc=4, address=100, count=1)  # ... and asks again
            assert await raw.receive() == (fresh, 1, bytes([4, 2, 0xCF, 0xC7]))
            assert await raw.receive() == (late, 1, one)

    asyncio.run(scenario())


@pytest.mark.integration
def test_drop_closes_the_connection() -> None:
    async def scenario() -> None:
        async with two_units() as (servers, endpoint, one, two):
            servers.set_fault("m-abcd", Fault(FaultKind.DROP))
            async with Raw.open(endpoint) as raw:
                assert await raw.ask(2) == two
                await raw.send(1)
                with pytest.raises(asyncio.IncompleteReadError) as closed:
                    await raw.receive()
                assert closed.value.partial == b""
            async with Raw.open(endpoint) as raw:
                assert await raw.ask(2) == two
                servers.set_fault("m-abcd", None)
                assert await raw.ask(1) == one

    asyncio.run(scenario())


@pytest.mark.integration
def test_junk_is_a_well_framed_garbage_answer() -> None:
    async def scenario() -> None:
        async with two_units() as (servers, endpoint, one, two):
            servers.set_fault("m-abcd", Fault(FaultKind.JUNK))
            async with Raw.open(endpoint) as raw:
                for _ in range(5):
                    pdu = await raw.ask(1)
                    assert pdu[0] == 0  # no Modbus function has code 0
                    assert 3 <= len(pdu) <= 17
                assert await raw.ask(2) == two
            async with client(endpoint, timeout_s=0.5) as modbus:
                with pytest.raises(ModbusIOException):
                    await modbus.read_holding_registers(0, count=2, device_id=1)
            servers.set_fault("m-abcd", None)
            async with Raw.open(endpoint) as raw:
                assert await raw.ask(1) == one

    asyncio.run(scenario())


@pytest.mark.integration
def test_faults_hit_with_their_probability() -> None:
    async def scenario() -> None:
        async with two_units() as (servers, endpoint, one, _), Raw.open(endpoint) as raw:
            servers.set_fault("m-abcd", Fault(FaultKind.BUSY, probability=0.5))
            answers = [await raw.ask(1) for _ in range(200)]
            assert set(answers) == {one, b"\x83\x06"}
            assert 60 <= answers.count(one) <= 140
            servers.set_fault("m-abcd", Fault(FaultKind.BUSY, probability=0.0))
            assert all([await raw.ask(1) == one for _ in range(50)])

    asyncio.run(scenario())


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="probability"):
        Fault(FaultKind.BUSY, probability=1.5)
    with pytest.raises(ValueError, match="delay_s"):
        Fault(FaultKind.SLOW)
    with pytest.raises(ValueError, match="delay_s"):
        Fault(FaultKind.SLOW, delay_s=float("inf"))
    servers = ModbusServers(FACTORY, build_models(), Clock(ORIGIN).now)
    with pytest.raises(KeyError, match="not a Modbus machine"):
        servers.set_fault("nope", Fault(FaultKind.BUSY))
