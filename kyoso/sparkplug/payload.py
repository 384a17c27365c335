"""Sparkplug B payloads as frozen dataclasses, to and from the protobuf wire format.

Only the scalar values a Kyoso machine has are mapped (integers, floats, booleans, strings,
bytes, date-times); a DataSet, Template, array or extension value decodes as ``value=None``
with its datatype kept, so a host never crashes on a richer edge node than Kyoso.

Integers follow Sparkplug 3.0: Int8/16/32 and UInt8/16/32 travel in the protobuf ``uint32``
``int_value``, Int64/UInt64/DateTime in the ``uint64`` ``long_value``; a signed value is
written as its two's complement at its own width (Int8 -1 is 255) and read back by masking to
that width, which also reads producers that sign-extend to 32 or 64 bits (Tahu's JavaScript
writes Int8 -1 as 4294967295). On decoding, either integer field is accepted for any integer
type, as older Tahu versions put UInt32 in ``long_value``.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from google.protobuf.message import DecodeError

from . import sparkplug_b_pb2 as pb
from .errors import SparkplugError

__all__ = ["DataType", "Metric", "Payload", "Value", "decode", "encode"]

Value = bool | int | float | str | bytes | None


class DataType(IntEnum):
    """Sparkplug B metric data types, the numbers of ``DataType`` in sparkplug_b.proto."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34

    def __str__(self) -> str:
        return self.name


_SIGNED = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}
_UNSIGNED = {
    DataType.UInt8: 8,
    DataType.UInt16: 16,
    DataType.UInt32: 32,
    DataType.UInt64: 64,
    DataType.DateTime: 64,
}
_FIELDS = {
    DataType.Float: "float_value",
    DataType.Double: "double_value",
    DataType.Boolean: "boolean_value",
    DataType.String: "string_value",
    DataType.Text: "string_value",
    DataType.UUID: "string_value",
    DataType.Bytes: "bytes_value",
    DataType.File: "bytes_value",
}
"""The protobuf value field of each non-integer type this codec maps."""
_FLOATS = frozenset({"float_value", "double_value"})
_ACCEPTS: dict[str, tuple[type, ...]] = {
    "float_value": (int, float),
    "double_value": (int, float),
    "boolean_value": (bool,),
    "string_value": (str,),
    "bytes_value": (bytes,),
}


@dataclass(frozen=True)
class Metric:
    """One metric: a name in a birth, an alias in later data (or both), and a typed value.

    ``value`` is None when ``is_null`` and for the value kinds this codec does not map.
    """

    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: DataType | None
    value: Value
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False


@dataclass(frozen=True)
class Payload:
    """A Sparkplug B payload: its send time, sequence number (0-255) and metrics."""

    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]
    uuid: str | None = None
    body: bytes | None = None


def _width(kind: DataType) -> int:
    """The bit width of integer type ``kind``."""
    return _SIGNED.get(kind) or _UNSIGNED[kind]


def _int_field(metric: Metric, bits: int, signed: bool) -> int:
    value = metric.value
    if not isinstance(value, int) or isinstance(value, bool):
        raise SparkplugError(f"metric {_label(metric)}: {metric.datatype} needs an int")
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise SparkplugError(f"metric {_label(metric)}: {value} out of {metric.datatype} range")
    return value & ((1 << bits) - 1)


def _label(metric: Metric) -> str:
    return repr(metric.name) if metric.name is not None else f"alias {metric.alias}"


def _set_value(out: pb.Payload.Metric, metric: Metric) -> None:
    kind, value = metric.datatype, metric.value
    if kind is not None and (kind in _SIGNED or kind in _UNSIGNED):
        bits = _width(kind)
        raw = _int_field(metric, bits, kind in _SIGNED)
        setattr(out, "long_value" if bits == 64 else "int_value", raw)
        return
    field = _FIELDS.get(kind) if kind is not None else None
    if field is None:
        raise SparkplugError(f"metric {_label(metric)}: cannot encode a {kind} value")
    accepted = _ACCEPTS[field]
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        raise SparkplugError(f"metric {_label(metric)}: {kind} cannot hold {value!r}")
    setattr(out, field, float(value) if field in _FLOATS else value)  # type: ignore[arg-type]


def _encode_metric(out: pb.Payload.Metric, metric: Metric) -> None:
    if metric.name is not None:
        out.name = metric.name
    if metric.alias is not None:
        out.alias = metric.alias
    if metric.timestamp_ms is not None:
        out.timestamp = metric.timestamp_ms
    if metric.datatype is not None:
        out.datatype = metric.datatype
    if metric.is_historical:
        out.is_historical = True
    if metric.is_transient:
        out.is_transient = True
    if metric.is_null or metric.value is None:
        out.is_null = True
    elif metric.datatype is None:
        raise SparkplugError(f"metric {_label(metric)}: a value needs a datatype")
    else:
        _set_value(out, metric)


def encode(payload: Payload) -> bytes:
    """The protobuf bytes of ``payload``; :class:`SparkplugError` if a value misfits its type."""
    out = pb.Payload()
    try:
        if payload.timestamp_ms is not None:
            out.timestamp = payload.timestamp_ms
        if payload.seq is not None:
            out.seq = payload.seq
        if payload.uuid is not None:
            out.uuid = payload.uuid
        if payload.body is not None:
            out.body = payload.body
        for metric in payload.metrics:
            _encode_metric(out.metrics.add(), metric)
    except SparkplugError:
        raise
    except (ValueError, TypeError) as exc:  # protobuf's own checks: a negative alias, say
        raise SparkplugError(f"cannot encode payload: {exc}") from exc
    return out.SerializeToString()


def _decode_int(raw: pb.Payload.Metric, kind: DataType) -> int | None:
    which = raw.WhichOneof("value")
    if which == "int_value":
        number = raw.int_value
    elif which == "long_value":
        number = raw.long_value
    else:
        return None
    bits = _width(kind)
    number &= (1 << bits) - 1
    if kind in _SIGNED and number >= 1 << (bits - 1):
        number -= 1 << bits
    return number


def _decode_value(raw: pb.Payload.Metric, kind: DataType | None) -> Value:
    if kind is None:
        return None
    if kind in _SIGNED or kind in _UNSIGNED:
        return _decode_int(raw, kind)
    wanted = _FIELDS.get(kind)
    if wanted is None or raw.WhichOneof("value") != wanted:
        return None
    value: Value = getattr(raw, wanted)
    return value


def _decode_metric(raw: pb.Payload.Metric, declared: Mapping[int | str, DataType]) -> Metric:
    name = raw.name if raw.HasField("name") else None
    alias = raw.alias if raw.HasField("alias") else None
    kind: DataType | None = None
    if raw.HasField("datatype"):
        try:
            kind = DataType(raw.datatype)
        except ValueError:
            raise SparkplugError(f"metric datatype {raw.datatype} is not Sparkplug B") from None
    elif alias is not None and alias in declared:
        kind = declared[alias]
    elif name is not None:
        kind = declared.get(name)
    is_null = raw.is_null
    return Metric(
        name=name,
        alias=alias,
        timestamp_ms=raw.timestamp if raw.HasField("timestamp") else None,
        datatype=kind,
        value=None if is_null else _decode_value(raw, kind),
        is_historical=raw.is_historical,
        is_transient=raw.is_transient,
        is_null=is_null,
    )


def decode(data: bytes, declared: Mapping[int | str, DataType] | None = None) -> Payload:
    """The payload in ``data``; :class:`SparkplugError` if it is not a Sparkplug B payload.

    ``declared``: the datatypes a birth gave, by alias and by name. A data message's metrics
    may leave their datatype out (the specification says they should); such a metric takes
    the one declared for it, and without one its value is None (an int cannot be read
    without its width and sign)."""
    raw = pb.Payload()
    try:
        raw.ParseFromString(data)
    except DecodeError as exc:
        raise SparkplugError(f"not a Sparkplug B payload: {exc}") from exc
    return Payload(
        timestamp_ms=raw.timestamp if raw.HasField("timestamp") else None,
        seq=raw.seq if raw.HasField("seq") else None,
        metrics=tuple(_decode_metric(m, declared or {}) for m in raw.metrics),
        uuid=raw.uuid if raw.HasField("uuid") else None,
        body=raw.body if raw.HasField("body") else None,
    )
