"""Sparkplug B 3.0 as Kyoso speaks it: topics, payloads, and the node/host handshake.

One codec for both sides: the gateway publishing as an edge node, and the ingest reading
edge nodes as a host application. The protobuf schema is the specification's own file
(``sparkplug_b.proto``, EPL-2.0, Eclipse Tahu) and ``sparkplug_b_pb2.py`` is generated from
it (tests/test_sparkplug_codec.py regenerates it and compares).
"""

from .errors import SparkplugError
from .node import BDSEQ, REBIRTH, host_state, parse_host_state, rebirth_request
from .payload import DataType, Metric, Payload, Value, decode, encode
from .topics import NAMESPACE, MessageType, Topic

__all__ = [
    "BDSEQ",
    "NAMESPACE",
    "REBIRTH",
    "DataType",
    "MessageType",
    "Metric",
    "Payload",
    "SparkplugError",
    "Topic",
    "Value",
    "decode",
    "encode",
    "host_state",
    "parse_host_state",
    "rebirth_request",
]
