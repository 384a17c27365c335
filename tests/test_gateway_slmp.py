"""The SLMP source: frames byte for byte, decoding, planning, and a real PLC simulator.

Frames are checked against the SLMP reference manual's layout (SH(NA)-080956ENG, "Device
Read (Batch)"): its bit-unit example reads M100-M107 and answers ``00 01 00 11`` (M103,
M106 and M107 on). Word-unit frames are checked against requests independent clients send
(D300 x3, D500 x50 with the usual 0x0010 monitoring timer). Everything else talks to the
simulated PLC (kyoso/simulators/slmp.py) over real TCP and UDP sockets on loopback.
"""

import asyncio
import socket
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from simfactory import slmp_machine, small_factory
from test_gateway_config import refusal

from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import ConfigError, load_config
from kyoso.gateway.modbus_decode import DecodeError
from kyoso.gateway.slmp import SlmpMissingReason, SlmpSource
from kyoso.gateway.slmp_config import SlmpConfig, SlmpFieldConfig, decode, plan_reads
from kyoso.gateway.slmp_frames import (
    DEVICES,
    Device,
    Route,
    SlmpEndCodeError,
    SlmpFrameError,
    bits,
    checked_data,
    decode_response,
    encode_read,
    parse_address,
    words,
)
from kyoso.gateway.slmp_probe import format_probe, parse_ranges, probe
from kyoso.gateway.source import Polled
from kyoso.simulators.modbus import Fault, FaultKind
from kyoso.simulators.registers import TEST_PATTERN, TEST_STRING, TEST_STRING_ADDRESS
from kyoso.simulators.runner import FactorySimulation
from kyoso.simulators.slmp import INPUT_BASE, SlmpPlc, slmp_plcs

EXAMPLE = Path(__file__).parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"
START = 1_767_772_800.0  # 2026-01-07 08:00 UTC, in the test factory's shift
D, M, X, ZR = DEVICES["D"], DEVICES["M"], DEVICES["X"], DEVICES["ZR"]


# -- frames ----------------------------------------------------------------------------------


def test_3e_word_read_requests_byte_for_byte() -> None:
    assert encode_read("3e", D, 300, 3, timer_250ms=16) == bytes.fromhex(
        "5000 00 FF FF03 00 0C00 1000 0104 0000 2C0100 A8 0300"
    )
    assert encode_read("3e", D, 500, 50, timer_250ms=16) == bytes.fromhex(
        "500000FFFF03000C00100001040000F40100A83200"
    )
    # Another route and a ZR beyond 65535: three bytes of device number.
    route = Route(network=1, station=2, module_io=0x03E0, multidrop=0)
    assert encode_read("3e", ZR, 70000, 2, route=route, timer_250ms=4) == bytes.fromhex(
        "5000 01 02 E003 00 0C00 0400 0104 0000 701101 B0 0200"
    )


def test_3e_bit_read_of_the_manual_m100_to_m107() -> None:
    request = encode_read("3e", M, 100, 8, timer_250ms=16)
    assert request == bytes.fromhex("5000 00 FF FF03 00 0C00 1000 0104 0100 640000 90 0800")
    answer = bytes.fromhex("D000 00 FF FF03 00 0600 0000 00010011")
    data = checked_data(decode_response("3e", answer), None)
    assert bits(data, 8) == [False, False, False, True, False, False, True, True]
    assert bits(bytes.fromhex("1110"), 3) == [True, True, True]  # odd: the last nibble pads
    with pytest.raises(SlmpFrameError, match="neither 0 nor 1"):
        bits(bytes.fromhex("20"), 2)


def test_4e_frames_carry_and_check_the_serial() -> None:
    request = encode_read("4e", D, 100, 3, serial=0x1234, timer_250ms=16)
    assert request == bytes.fromhex(
        "5400 3412 0000 00 FF FF03 00 0C00 1000 0104 0000 640000 A8 0300"
    )
    answer = bytes.fromhex("D400 3412 0000 00 FF FF03 00 0800 0000 3412 CDAB FFFF")
    response = decode_response("4e", answer)
    assert response.serial == 0x1234
    assert response.route == Route()
    assert words(checked_data(response, 0x1234), 3) == [0x1234, 0xABCD, 0xFFFF]
    with pytest.raises(SlmpFrameError, match="answer to serial 4660, not 4661"):
        checked_data(response, 0x1235)


def test_an_end_code_is_an_error_with_its_number() -> None:
    answer = bytes.fromhex("D000 00 FF FF03 00 0B00 56C0 00FFFF0300 0104 0000")
    response = decode_response("3e", answer)
    assert response.end_code == 0xC056
    with pytest.raises(SlmpEndCodeError) as caught:
        checked_data(response, None)
    assert caught.value.end_code == 0xC056
    assert str(caught.value) == "end code 0xC056 (beyond the device range)"
    assert "0xC0FE (see the PLC's manual)" in str(SlmpEndCodeError(0xC0FE))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("D400 0000 0000 00FFFF0300 0200 0000", "not an SLMP 3E binary response"),
        ("D000 00FFFF0300 0100 00", "no room for the end code"),
        ("D000 00FFFF0300 0400 0000 01", "its length field says 13"),
    ],
)
def test_broken_answers_are_frame_errors(raw: str, message: str) -> None:
    with pytest.raises(SlmpFrameError, match=message):
        decode_response("3e", bytes.fromhex(raw))


def test_device_addresses_as_melsec_writes_them() -> None:
    assert parse_address("D100") == parse_address("d100")
    assert (parse_address("D100").device.name, parse_address("D100").number) == ("D", 100)
    assert parse_address("ZR2000").number == 2000
    assert parse_address("X1F").number == 0x1F
    assert parse_address("W1A").number == 0x1A
    assert parse_address("B10").number == 16
    assert parse_address("M10").number == 10
    assert str(parse_address("x1f")) == "X1F"
    for wrong, message in [
        ("Q5", "not a device"),
        ("D1F", "D is numbered in decimal"),
        ("X1G", "not a device"),
        ("D16777216", "device numbers end at 16777215"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_address(wrong)


# -- decoding and planning -------------------------------------------------------------------


def _field(**spec: Any) -> SlmpFieldConfig:
    return SlmpFieldConfig.model_validate(spec)


@pytest.mark.parametrize(
    ("spec", "data", "value"),
    [
        ({"device": "D0"}, [0xFFFE], 0xFFFE),
        ({"device": "D0", "type": "int16"}, [0xFFFE], -2),
        ({"device": "D0", "type": "uint32"}, [0x5678, 0x1234], 0x12345678),  # low word first
        ({"device": "D0", "type": "int32"}, [0xFFFF, 0xFFFF], -1),
        ({"device": "D0", "type": "int32", "word_order": "ABCD"}, [0x1234, 0x5678], 0x12345678),
        ({"device": "D0", "type": "uint32", "word_order": "DCBA"}, [0x7856, 0x3412], 0x12345678),
        ({"device": "D0", "type": "uint32", "word_order": "BADC"}, [0x3412, 0x7856], 0x12345678),
        ({"device": "D0", "type": "float32"}, [0x0000, 0x4049], 3.140625),
        ({"device": "D0", "type": "uint64"}, [4, 3, 2, 1], 0x0001000200030004),
        ({"device": "D0", "type": "int64"}, [0xFFFF] * 4, -1),
        ({"device": "D0", "type": "float64"}, [0, 0, 0, 0xC000], -2.0),
        ({"device": "D0", "type": "int16", "scale": 0.1, "offset": 1.0}, [0xFFF6], 0.0),
        ({"device": "D0", "type": "string", "length": 3}, [0x4241, 0x4443], "ABC"),
        ({"device": "D0", "type": "string", "length": 4}, [0x4241, 0x0043], "ABC"),
        ({"device": "M0"}, [1], True),
        ({"device": "X1F", "type": "bool"}, [0], False),
    ],
)
def test_every_type_and_word_order(spec: dict[str, Any], data: list[int], value: object) -> None:
    assert decode(_field(**spec), "f", data, "CDAB") == value


def test_the_plcs_default_word_order_applies_and_bad_values_are_refused() -> None:
    pair = [0x1234, 0x5678]
    assert decode(_field(device="D0", type="uint32"), "f", pair, "ABCD") == 0x12345678
    with pytest.raises(DecodeError):
        decode(_field(device="D0", type="float32"), "f", [0x0000, 0x7FC0], "CDAB")  # NaN
    with pytest.raises(DecodeError):
        decode(_field(device="D0", type="string", length=2), "f", [0x0107], "CDAB")


def _config(fields: dict[str, dict[str, Any]], **options: Any) -> SlmpConfig:
    return SlmpConfig.model_validate({"host": "127.0.0.1", "fields": fields, **options})


def test_reads_merge_per_device_within_gaps_and_the_frame_limit() -> None:
    fields = {
        "state": {"device": "D0"},
        "count": {"device": "D2", "type": "uint32"},
        "far": {"device": "D20"},  # 16 words after D4: beyond the gap of 10
        "run": {"device": "M0"},
        "alarm": {"device": "M100"},  # 99 bits after M1: within the gap of 160
        "door": {"device": "X1F"},
        "zr": {"device": "ZR100000", "type": "float32"},
    }
    reads = plan_reads(_config(fields))
    assert [str(r) for r in reads] == ["X1F x1", "M0 x101", "D0 x4", "D20 x1", "ZR100000 x2"]
    assert [name for name, _ in reads[2].fields] == ["state", "count"]
    # The set of fields decides, never their order.
    assert plan_reads(_config(dict(reversed(fields.items())))) == reads
    assert [str(r) for r in plan_reads(_config(fields, max_gap_words=20))][2] == "D0 x21"
    edge = {"a": {"device": "D0"}, "b": {"device": "D958", "type": "uint32"}}
    assert [str(r) for r in plan_reads(_config(edge, max_gap_words=958))] == ["D0 x960"]
    beyond = {"a": {"device": "D0"}, "b": {"device": "D959", "type": "uint32"}}
    assert [str(r) for r in plan_reads(_config(beyond, max_gap_words=958))] == [
        "D0 x1",
        "D959 x2",
    ]
    bits_ = {"a": {"device": "M0"}, "b": {"device": "M7168"}}
    assert len(plan_reads(_config(bits_, max_gap_bits=7166))) == 2


def _slmp(fields: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"slmp": {"host": "plc", "fields": fields, **options}}


@pytest.mark.parametrize(
    ("source_", "message"),
    [
        (_slmp({"s": {"device": "D0", "type": "bool"}}), "type bool needs a bit device"),
        (_slmp({"s": {"device": "M0", "type": "int16"}}), "M0 is a bit device: use type bool"),
        (_slmp({"s": {"device": "D1F"}}), "D is numbered in decimal"),
        (_slmp({"s": {"device": "Q0"}}), "'Q0' is not a device"),
        (_slmp({"s": {"device": "D0", "type": "string"}}), "type string needs length"),
        (_slmp({"s": {"device": "D0", "length": 4}}), "length needs type string"),
        (
            _slmp({"s": {"device": "D0", "type": "int16", "word_order": "ABCD"}}),
            "word_order applies to 32- and 64-bit types only",
        ),
        (
            _slmp({"s": {"device": "D0", "type": "string", "length": 2, "scale": 2}}),
            "scale and offset apply to numbers",
        ),
        (_slmp({"s": {"device": "D0"}}, monitoring_timer_s=0.3), "not a step of 0.25 s"),
        (_slmp({"s": {"device": "D0"}}, transport="serial"), "'tcp' or 'udp'"),
        (_slmp({"s": {"device": "D0"}}, frame="1e"), "'3e' or '4e'"),
        (
            _slmp(
                {"s": {"device": "D0", "type": "string", "length": 300}}, max_words_per_request=100
            ),
            "field s needs 150 points, more than 100",
        ),
        (_slmp({}), "at least 1 item"),
        (_slmp({"t": {"device": "D0"}}), "fields ['s'] are not read by the source"),
    ],
)
def test_configuration_errors(source_: dict[str, Any], message: str) -> None:
    assert message in refusal(source_)


def test_the_example_reads_a_plc_and_errors_name_their_place(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, {"KYOSO_BROKER_PASSWORD": "x"})
    machine = next(m for m in config.machines if m.source.slmp is not None)
    assert machine.source.kind == "slmp"
    assert "strokes" in machine.source.fields
    broken = tmp_path / "gateway.yaml"
    broken.write_text(EXAMPLE.read_text().replace("{device: D101,", "{device: D10A,"))
    with pytest.raises(ConfigError) as caught:
        load_config(broken, {"KYOSO_BROKER_PASSWORD": "x"})
    message = str(caught.value)
    assert "slmp.fields.alarm_code.device" in message
    assert f"{broken}:" in message
    assert "D is numbered in decimal" in message


# -- against the simulated PLC ---------------------------------------------------------------


@asynccontextmanager
async def plc_serving(moment: list[float] | None = None) -> AsyncIterator[SlmpPlc]:
    """A simulated PLC of one press, its clock at ``moment[0]``."""
    factory = small_factory("press-works", 2202, [], [slmp_machine("press-01")])
    clock = moment or [START]
    [plc] = slmp_plcs(factory, FactorySimulation(factory, START).models, lambda: clock[0]).values()
    await plc.start()
    try:
        yield plc
    finally:
        await plc.stop()


PATTERN_FIELDS: dict[str, dict[str, Any]] = {
    **{
        f"t_{f.dtype}": {"device": f"D{INPUT_BASE + f.address}", "type": f.dtype}
        for f, _ in TEST_PATTERN
    },
    "text": {"device": f"D{INPUT_BASE + TEST_STRING_ADDRESS}", "type": "string", "length": 10},
    "name": {"device": f"D{INPUT_BASE}", "type": "string", "length": 16},
    "door": {"device": "X2"},
    "ack": {"device": "M0"},
    "zr": {"device": "ZR65534", "type": "int32"},
}


def reasons(reading: Polled) -> set[StrEnum]:
    return {m.reason for m in reading.missing.values()}


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("frame", ["3e", "4e"])
def test_the_commissioning_pattern_over_every_transport_and_frame(
    transport: str, frame: str
) -> None:
    async def scenario() -> Polled:
        async with plc_serving() as plc:
            config = _config(PATTERN_FIELDS, port=plc.port, transport=transport, frame=frame)
            async with SlmpSource(config) as source:
                first = await source.poll()
                again = await source.poll()
                assert again.values == first.values
                assert source.stats.connects == 1  # one connection (or socket) for both polls
                return first

    reading = asyncio.run(scenario())
    assert reading.missing == {}
    expected = {
        f"t_{f.dtype}": value
        if f.dtype != "float32"
        else struct.unpack(">f", struct.pack(">f", value))[0]
        for f, value in TEST_PATTERN
    }
    assert {k: v for k, v in reading.values.items() if k.startswith("t_")} == expected
    assert reading.values["text"] == TEST_STRING
    assert reading.values["name"] == "press-01"
    assert reading.values["door"] is True
    assert reading.values["ack"] is False
    assert reading.values["zr"] == 0


def test_refusals_are_missing_with_their_end_code_and_split_a_merged_read() -> None:
    async def scenario() -> None:
        async with plc_serving() as plc:
            fields = {"last": {"device": "D12287"}, "beyond": {"device": "D12288"}}
            async with SlmpSource(_config(fields, port=plc.port)) as source:
                assert [str(r) for r in source.plan] == ["D12287 x2"]
                reading = await source.poll()
                assert reading.values == {"last": 0}
                assert str(reading.missing["beyond"]) == "end code 0xC056 (beyond the device range)"
                assert reading.missing["beyond"].key == "end_code"
                assert [str(r) for r in source.plan] == ["D12287 x1", "D12288 x1"]  # for good
                requests = plc.requests
                assert (await source.poll()).values == {"last": 0}
                assert plc.requests == requests + 2
                assert source.breaker.failures == 0  # a refusal is the PLC answering
            # Requests the gateway never sends, to the simulator's own end codes.
            async with SlmpSource(_config({"s": {"device": "D0"}}, port=plc.port)) as source:
                connection = source.connection
                with pytest.raises(SlmpEndCodeError) as caught:
                    await connection.read(Device("V", 0x94, True, False), 0, 1)
                assert caught.value.end_code == 0xC05C  # a device this PLC lacks
                with pytest.raises(SlmpEndCodeError) as caught:
                    await connection.read(Device("D", 0xA8, True, False), 0, 1)
                assert caught.value.end_code == 0xC05C  # bits of a word device
                assert await connection.read(Device("M", 0x90, False, False), 0, 2) == [0, 0]

    asyncio.run(scenario())


def test_raw_requests_meet_the_manuals_end_codes() -> None:
    async def scenario() -> None:
        async with plc_serving() as plc:
            assert plc.port is not None
            for body, code in [
                ("1000 0104 0000 000000 A8 C103", 0xC052),  # 961 words
                ("1000 0104 0100 000000 90 011C", 0xC051),  # 7169 bits
                ("1000 0114 0000 000000 A8 0100 0000", 0xC059),  # a write: not served
                ("1000 0104 0000 000000 A8 01", 0xC061),  # a point count cut short
                ("1000 0104 0000 FF2F00 A8 0200", 0xC056),  # D12287 x2
            ]:
                assert await _raw_3e(plc.port, body) == code, body

    asyncio.run(scenario())


async def _raw_3e(port: int, body_hex: str) -> int:
    """Send one 3E request with ``body`` (from the monitoring timer on); its end code."""
    body = bytes.fromhex(body_hex)
    request = bytes.fromhex("5000 00 FF FF03 00") + len(body).to_bytes(2, "little") + body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readexactly(9), 30)
        rest = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[7:], "little")), 30)
    finally:
        writer.close()
    response = decode_response("3e", head + rest)
    if response.end_code:
        assert response.data[5:7] == body[2:4]  # the error information names the command
    return response.end_code


LIVE = {"state": {"device": "D0"}, "good": {"device": "D2", "type": "uint32"}}


def test_a_silent_plc_times_out_then_reads_again() -> None:
    async def scenario() -> None:
        async with plc_serving() as plc:
            config = _config(LIVE, port=plc.port, timeout_s=0.5)
            async with SlmpSource(config) as source:
                assert (await source.poll()).missing == {}
                plc.set_fault(Fault(FaultKind.NO_RESPONSE))
                reading = await source.poll()
                assert reasons(reading) == {SlmpMissingReason.TIMEOUT}
                assert str(reading.missing["state"]) == "timeout: no answer within 0.5 s"
                assert reading.values == {}  # never carried over
                plc.set_fault(None)
                assert (await source.poll()).missing == {}
                assert source.stats.connects == 2  # the timed-out connection was dropped
                assert source.stats.errors["timeout"] == 1

    asyncio.run(scenario())


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_plc_restart_is_survived_without_restarting_the_gateway(transport: str) -> None:
    async def scenario() -> None:
        async with plc_serving() as plc:
            config = _config(LIVE, port=plc.port, transport=transport, timeout_s=1.0)
            async with SlmpSource(config) as source:
                before = await source.poll()
                assert before.missing == {}
                await plc.restart()  # a power cycle: every connection is lost
                readings = [await source.poll() for _ in range(3)]
                assert readings[-1].values == before.values
                assert source.stats.connects == (2 if transport == "tcp" else 1)
                failed = [r for r in readings if r.missing]
                assert len(failed) <= 1  # at most the poll that found the connection gone
                assert all(reasons(r) <= {SlmpMissingReason.CONNECTION} for r in failed)

    asyncio.run(scenario())


def test_an_unreachable_plc_is_missing_with_the_reason() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens once it is closed

    async def scenario() -> Polled:
        async with SlmpSource(_config(LIVE, port=port)) as source:
            return await source.poll()

    reading = asyncio.run(scenario())
    assert reasons(reading) == {SlmpMissingReason.CONNECTION}
    assert f"127.0.0.1:{port}/tcp" in str(reading.missing["state"])


def test_a_dead_plc_does_not_delay_another() -> None:
    async def scenario() -> None:
        async with plc_serving() as dead, plc_serving() as alive:
            dead.set_fault(Fault(FaultKind.NO_RESPONSE))
            async with (
                SlmpSource(_config(LIVE, port=dead.port, timeout_s=30)) as hanging,
                SlmpSource(_config(LIVE, port=alive.port)) as healthy,
            ):
                stuck = asyncio.create_task(hanging.poll())
                for _ in range(3):
                    assert (await healthy.poll()).missing == {}
                assert not stuck.done()  # still waiting for its own PLC, alone
                stuck.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await stuck

    asyncio.run(scenario())


def test_the_circuit_opens_then_one_trial_decides() -> None:
    now = [0.0]

    async def scenario() -> None:
        async with plc_serving() as plc:
            plc.set_fault(Fault(FaultKind.JUNK))
            config = _config(LIVE, port=plc.port, failures_to_open=2, open_s=30)
            async with SlmpSource(config, clock=lambda: now[0]) as source:
                for _ in range(2):
                    assert reasons(await source.poll()) == {SlmpMissingReason.INVALID_RESPONSE}
                requests = plc.requests
                refused = await source.poll()
                assert reasons(refused) == {SlmpMissingReason.CIRCUIT_OPEN}
                assert str(refused.missing["good"]) == "circuit open: 30.0 s left"
                assert plc.requests == requests  # nothing sent while open
                plc.set_fault(None)
                now[0] = 31.0
                assert (await source.poll()).missing == {}  # the trial closes it
                assert source.stats.circuit_opens == 1

    asyncio.run(scenario())


def test_a_late_udp_answer_is_never_taken_for_the_next_one() -> None:
    moment = [START]

    async def scenario() -> None:
        async with plc_serving(moment) as plc:
            config = _config(LIVE, port=plc.port, transport="udp", frame="4e", timeout_s=0.5)
            async with SlmpSource(config) as source:
                plc.set_fault(Fault(FaultKind.SLOW, delay_s=1.0))
                assert reasons(await source.poll()) == {SlmpMissingReason.TIMEOUT}
                plc.set_fault(None)
                moment[0] += 3600  # the counter moved on: a stale answer would show
                await asyncio.sleep(1.0)  # the late answer arrives meanwhile
                fresh = await source.poll()
                image = plc.image()
        assert fresh.values["good"] == image.holding[2] | image.holding[3] << 16

    asyncio.run(scenario())


def test_the_gateway_builds_an_slmp_source_by_kind(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with plc_serving() as plc:
            config = load_config(EXAMPLE, {"KYOSO_BROKER_PASSWORD": "x"})
            machine = next(m for m in config.machines if m.source.slmp is not None)
            fields = {  # the example's fields, on the simulator's map
                "state_code": {"device": "D0"},
                "alarm_code": {"device": "D1"},
                "strokes": {"device": "D2", "type": "uint32"},
                "tonnage_t": {"device": "D6", "type": "float32"},
            }
            slmp = _config(fields, port=plc.port)
            source = machine.source.model_copy(update={"slmp": slmp})
            machine = machine.model_copy(update={"source": source})
            outbox = config.outbox.model_copy(update={"path": tmp_path / "outbox.db"})
            broker = config.broker.model_copy(update={"tls": None})  # not connected here
            config = config.model_copy(
                update={"outbox": outbox, "broker": broker, "machines": [machine]}
            )
            gateway = Gateway(config)
            assert isinstance(gateway.sources[machine.id], SlmpSource)
            reading = await gateway.sources[machine.id].poll()
            assert reading.missing == {}
            await gateway.stop()  # closes the source's connection with the rest

    asyncio.run(scenario())


# -- the probe -------------------------------------------------------------------------------


def test_probe_ranges_parse_as_a_technician_writes_them() -> None:
    ranges = parse_ranges("D0-D99, M0-M63,X1F,ZR0-ZR2000")
    assert [str(r) for r in ranges] == ["D0-D99", "M0-M63", "X1F", "ZR0-ZR2000"]
    assert (ranges[2].count, ranges[3].count) == (1, 2001)
    for wrong, message in [
        ("D10-D0", "FIRST-LAST of one device"),
        ("D0-M5", "FIRST-LAST of one device"),
        ("", "at least one device range"),
        ("D0-Q1", "'Q1' is not a device"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_ranges(wrong)


def test_probe_shows_what_is_set_and_what_the_plc_refuses() -> None:
    async def scenario() -> tuple[str, tuple[int, str, str]]:
        async with plc_serving() as plc:
            endpoint = _config({"s": {"device": "D0"}}, port=plc.port)
            results = await probe(
                endpoint, parse_ranges("D1100-D1103,X0-X7,D12280-D12299,ZR0-ZR1999")
            )
            args = ["--slmp", f"127.0.0.1:{plc.port}", "--udp", "--frame", "4e"]
            cli = await _kyoso("gateway", "probe", *args, "--devices", "D1100-D1101,X0-X3")
            return format_probe(results), cli

    text, (code, out, err) = asyncio.run(scenario())
    lines = text.splitlines()
    words_of = [line.split() for line in lines]
    low, high = 53191, 54321  # -12345 and 54321 of the test pattern
    pair = ["uint32", "(with", "next,", "low", "word", "first)"]
    first = ["D1100", str(low), "0xCFC7", "int16", "-12345", *pair, str(low | high << 16)]
    assert first in words_of
    assert words_of[1][:5] == ["D1101", str(high), "0xD431", "int16", "-11215"]
    assert ["X2", "ON"] in words_of
    assert "D12280-D12299: refused, end code 0xC056 (beyond the device range)" in lines
    assert "ZR0-ZR959: all 0" in lines  # 960 words a read
    assert "ZR1920-ZR1999: all 0" in lines
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["D1100", str(low)]
    assert ["X2", "ON"] in [line.split() for line in out.splitlines()]


def test_probe_of_nothing_fails_cleanly() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, _, err = asyncio.run(
        _kyoso("gateway", "probe", "--slmp", f"127.0.0.1:{port}", "--devices", "D0")
    )
    assert code == 1
    assert err.startswith(f"probe failed: 127.0.0.1:{port}/tcp")
    code, _, err = asyncio.run(
        _kyoso("gateway", "probe", "--slmp", "127.0.0.1", "--devices", "D1F")
    )
    assert code == 2
    assert "D is numbered in decimal" in err


async def _kyoso(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kyoso.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
