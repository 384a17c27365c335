"""The Sparkplug B codec: topics, payloads both ways, the generated protobuf code, and
agreement with Eclipse Tahu's own JavaScript ``sparkplug-payload`` in both directions."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sparkplug_node import NodeScript, sparkplug_node_modules

from kyoso import sparkplug as spb
from kyoso.sparkplug import sparkplug_b_pb2 as pb

__all__ = ["sparkplug_node_modules"]  # the fixture, used by name

PACKAGE = Path(spb.__file__).parent


@pytest.fixture
def tahu(sparkplug_node_modules: Path) -> Iterator[NodeScript]:
    with NodeScript("payload.js") as script:
        yield script


# --- topics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("spBv1.0/g1/NBIRTH/n1", spb.Topic("g1", spb.MessageType.NBIRTH, "n1")),
        ("spBv1.0/g1/DDATA/n1/m-01", spb.Topic("g1", spb.MessageType.DDATA, "n1", "m-01")),
        ("spBv1.0/g1/NCMD/n1", spb.Topic("g1", spb.MessageType.NCMD, "n1")),
        ("spBv1.0/STATE/scada", spb.Topic.state("scada")),
    ],
)
def test_a_topic_parses_and_prints_back(text: str, topic: spb.Topic) -> None:
    assert spb.Topic.parse(text) == topic
    assert str(topic) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("spAv1.0/g/NBIRTH/n", "not in namespace spBv1.0"),
        ("spBv1.0/g/NBIRTH", "3 elements"),
        ("spBv1.0/g/NBIRTH/n/d/e", "6 elements"),
        ("spBv1.0/g/NBIRTH/n/d", "has no device id"),
        ("spBv1.0/g/DBIRTH/n", "needs a device id"),
        ("spBv1.0/g/NFOO/n", "unknown message type 'NFOO'"),
        ("spBv1.0//NDATA/n", "empty group id"),
        ("spBv1.0/g/NDATA/", "empty edge node id"),
        ("spBv1.0/g/STATE/n", "STATE is spBv1.0/STATE/<host>"),
        ("spBv1.0/STATE/", "empty host id"),
    ],
)
def test_a_malformed_topic_is_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(spb.SparkplugError, match=message):
        spb.Topic.parse(text)


@pytest.mark.parametrize("bad", ["a+b", "a#", "a/b"])
def test_an_id_with_a_wildcard_or_slash_is_refused(bad: str) -> None:
    with pytest.raises(spb.SparkplugError, match="contains"):
        spb.Topic("g", spb.MessageType.DDATA, "n", bad)


# --- the generated code ---------------------------------------------------------------


def test_the_generated_code_is_what_protoc_makes_of_the_proto(tmp_path: Path) -> None:
    proto = PACKAGE / "sparkplug_b.proto"
    (tmp_path / proto.name).write_bytes(proto.read_bytes())
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "--proto_path=.", "--python_out=.",
         "--pyi_out=.", proto.name],
        cwd=tmp_path,
        check=True,
    )  # fmt: skip
    for name in ("sparkplug_b_pb2.py", "sparkplug_b_pb2.pyi"):
        committed = (PACKAGE / name).read_text().splitlines(keepends=True)
        header, rest = committed[:3], "".join(committed[3:])
        assert all(line.startswith("#") for line in header), name
        assert "grpc_tools.protoc" in header[1], name
        assert rest == (tmp_path / name).read_text(), f"{name} drifted from sparkplug_b.proto"


def test_the_data_types_mirror_the_proto() -> None:
    assert {t.name: t.value for t in spb.DataType} == dict(pb.DataType.items())


# --- payloads -------------------------------------------------------------------------

EVERY_SCALAR = (
    spb.Metric("i8", 1, 1, spb.DataType.Int8, -128),
    spb.Metric("i16", 2, 2, spb.DataType.Int16, -2),
    spb.Metric("i32", 3, 3, spb.DataType.Int32, -(2**31)),
    spb.Metric("i64", 4, 4, spb.DataType.Int64, -(2**63)),
    spb.Metric("u8", 5, 5, spb.DataType.UInt8, 255),
    spb.Metric("u16", 6, 6, spb.DataType.UInt16, 65535),
    spb.Metric("u32", 7, 7, spb.DataType.UInt32, 2**32 - 1),
    spb.Metric("u64", 8, 8, spb.DataType.UInt64, 2**64 - 1),
    spb.Metric("f", 9, 9, spb.DataType.Float, 1.5),
    spb.Metric("d", 10, 10, spb.DataType.Double, -2.25),
    spb.Metric("b", 11, 11, spb.DataType.Boolean, False),
    spb.Metric("s", 12, 12, spb.DataType.String, "稼働"),
    spb.Metric("t", 13, 13, spb.DataType.DateTime, 1_700_000_000_000),
    spb.Metric("x", 14, 14, spb.DataType.Text, "text"),
    spb.Metric("u", 15, 15, spb.DataType.UUID, "5f1e"),
    spb.Metric("y", 16, 16, spb.DataType.Bytes, b"\x00\xff"),
    spb.Metric("n", 17, 17, spb.DataType.Double, None, is_null=True),
    spb.Metric(None, 18, 18, spb.DataType.Int64, 7, is_historical=True, is_transient=True),
)


def test_every_scalar_type_round_trips() -> None:
    payload = spb.Payload(timestamp_ms=42, seq=255, metrics=EVERY_SCALAR, uuid="u", body=b"b")
    assert spb.decode(spb.encode(payload)) == payload


def test_a_signed_value_is_written_at_its_own_width() -> None:
    metric = spb.Metric("i8", None, None, spb.DataType.Int8, -1)
    raw = pb.Payload.FromString(spb.encode(spb.Payload(None, None, (metric,))))
    assert raw.metrics[0].int_value == 0xFF


def test_a_sign_extended_value_reads_back_at_its_width() -> None:
    raw = pb.Payload()
    raw.metrics.add(name="a", datatype=spb.DataType.Int16, int_value=0xFFFFFFA9)
    raw.metrics.add(name="b", datatype=spb.DataType.UInt32, long_value=7)  # old Tahu
    metrics = spb.decode(raw.SerializeToString()).metrics
    assert [m.value for m in metrics] == [-87, 7]


def test_a_value_kind_not_mapped_decodes_as_none_with_its_type() -> None:
    raw = pb.Payload(seq=1)
    metric = raw.metrics.add(name="table", datatype=spb.DataType.DataSet)
    metric.dataset_value.num_of_columns = 1
    metric.dataset_value.columns.append("c")
    raw.metrics.add(name="arr", datatype=spb.DataType.Int32Array, bytes_value=b"\x01\x00")
    raw.metrics.add(name="odd", datatype=spb.DataType.Double, string_value="1.0")
    metrics = spb.decode(raw.SerializeToString()).metrics
    assert [(m.name, m.datatype, m.value) for m in metrics] == [
        ("table", spb.DataType.DataSet, None),
        ("arr", spb.DataType.Int32Array, None),
        ("odd", spb.DataType.Double, None),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xff\xff", "not a Sparkplug B payload"),
        (pb.Payload(metrics=[pb.Payload.Metric(datatype=99)]).SerializeToString(), "99"),
    ],
)
def test_a_malformed_payload_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(spb.SparkplugError, match=message):
        spb.decode(data)


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (spb.Metric("a", None, None, spb.DataType.Int8, 128), "128 out of Int8 range"),
        (spb.Metric("a", None, None, spb.DataType.UInt16, -1), "out of UInt16 range"),
        (spb.Metric("a", None, None, spb.DataType.Int32, True), "needs an int"),
        (spb.Metric("a", None, None, spb.DataType.Boolean, 1), "cannot hold 1"),
        (spb.Metric("a", None, None, spb.DataType.Double, "1"), "cannot hold '1'"),
        (spb.Metric("a", None, None, spb.DataType.DataSet, b""), "cannot encode a"),
        (spb.Metric("a", None, None, None, 1), "needs a datatype"),
        (spb.Metric("a", -1, None, spb.DataType.Int8, 1), "cannot encode payload"),
    ],
)
def test_a_value_that_misfits_its_type_is_refused(metric: spb.Metric, message: str) -> None:
    with pytest.raises(spb.SparkplugError, match=message):
        spb.encode(spb.Payload(None, None, (metric,)))


# --- node and host --------------------------------------------------------------------


def test_host_state_round_trips_and_malformed_state_is_refused() -> None:
    assert spb.parse_host_state(spb.host_state(True, 17)) == (True, 17)
    assert spb.parse_host_state(spb.host_state(False, 18)) == (False, 18)
    for bad in (b"{", b"[]", b'{"online": 1, "timestamp": 1}', b'{"online": true}'):
        with pytest.raises(spb.SparkplugError, match="STATE payload"):
            spb.parse_host_state(bad)


# --- agreement with Eclipse Tahu ------------------------------------------------------


def test_tahu_reads_what_kyoso_writes(tahu: NodeScript) -> None:
    payload = spb.Payload(timestamp_ms=42, seq=7, metrics=EVERY_SCALAR)
    decoded = tahu.ask({"op": "decode", "hex": spb.encode(payload).hex()})["payload"]
    assert (decoded["timestamp"], decoded["seq"]) == ("42", "7")
    seen = {m.get("name", m["alias"]): m for m in decoded["metrics"]}
    # Tahu's JavaScript reads Int8/16 as 32-bit and UInt32 from long_value only (its own
    # encoding); what the specification writes and Tahu reads alike:
    assert seen["i32"]["value"] == -(2**31)
    assert seen["i64"]["value"] == str(-(2**63))
    assert (seen["u8"]["value"], seen["u16"]["value"]) == (255, 65535)
    assert seen["u64"]["value"] == str(2**64 - 1)
    assert (seen["f"]["value"], seen["d"]["value"], seen["b"]["value"]) == (1.5, -2.25, False)
    assert (seen["s"]["value"], seen["x"]["value"], seen["u"]["value"]) == ("稼働", "text", "5f1e")
    assert seen["t"]["value"] == "1700000000000"
    assert seen["y"]["value"] == {"hex": "00ff"}
    assert seen["n"]["value"] is None
    assert seen["18"]["isHistorical"] is True
    assert seen["18"]["isTransient"] is True
    assert [m["type"] for m in decoded["metrics"]] == [str(m.datatype) for m in EVERY_SCALAR]
    assert [m["alias"] for m in decoded["metrics"]] == [str(m.alias) for m in EVERY_SCALAR]


def test_kyoso_reads_what_tahu_writes(tahu: NodeScript) -> None:
    metrics = [
        {"name": "i8", "type": "Int8", "value": -1, "alias": 1, "timestamp": 5},
        {"name": "i16", "type": "Int16", "value": -300},
        {"name": "i32", "type": "Int32", "value": -70000},
        {"name": "i64", "type": "Int64", "value": -5},
        {"name": "u32", "type": "UInt32", "value": 4000000000},
        {"name": "d", "type": "Double", "value": 0.1},
        {"name": "f", "type": "Float", "value": 0.5},
        {"name": "b", "type": "Boolean", "value": True},
        {"name": "s", "type": "String", "value": "停止"},
        {"name": "y", "type": "Bytes", "value": {"hex": "0a0b"}},
        {"name": "null", "type": "Double", "value": None},
        {"name": "h", "type": "Int64", "value": 3, "isHistorical": True},
    ]
    answer = tahu.ask({"op": "encode", "payload": {"timestamp": 9, "seq": 200, "metrics": metrics}})
    payload = spb.decode(bytes.fromhex(answer["hex"]))
    assert (payload.timestamp_ms, payload.seq) == (9, 200)
    assert [(m.name, m.value) for m in payload.metrics] == [
        ("i8", -1),
        ("i16", -300),
        ("i32", -70000),
        ("i64", -5),
        ("u32", 4000000000),
        ("d", 0.1),
        ("f", 0.5),
        ("b", True),
        ("s", "停止"),
        ("y", b"\x0a\x0b"),
        ("null", None),
        ("h", 3),
    ]
    assert (payload.metrics[0].alias, payload.metrics[0].timestamp_ms) == (1, 5)
    assert payload.metrics[10].is_null
    assert payload.metrics[11].is_historical


def test_tahu_reads_a_rebirth_request(tahu: NodeScript) -> None:
    decoded = tahu.ask({"op": "decode", "hex": spb.rebirth_request(1234).hex()})["payload"]
    assert decoded["metrics"] == [
        {"name": "Node Control/Rebirth", "type": "Boolean", "value": True, "timestamp": "1234"}
    ]


def test_a_metric_without_its_datatype_takes_the_one_its_birth_declared() -> None:
    raw = pb.Payload(
        seq=1,
        metrics=[
            pb.Payload.Metric(alias=3, int_value=0xFFFFFFFB),  # Int16 -5, sign-extended
            pb.Payload.Metric(name="Speed", double_value=1.5),
        ],
    )
    data = raw.SerializeToString()
    assert [(m.datatype, m.value) for m in spb.decode(data).metrics] == [(None, None)] * 2
    declared: dict[int | str, spb.DataType] = {3: spb.DataType.Int16, "Speed": spb.DataType.Double}
    assert [(m.datatype, m.value) for m in spb.decode(data, declared).metrics] == [
        (spb.DataType.Int16, -5),
        (spb.DataType.Double, 1.5),
    ]
