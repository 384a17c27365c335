"""What an edge node and a host application say to each other beyond data.

``bdSeq`` ties an edge node's NBIRTH to the NDEATH its broker publishes as the MQTT will;
``Node Control/Rebirth`` in an NCMD asks the node to birth again; a primary host
application announces itself on ``spBv1.0/STATE/<host>`` with a retained JSON message
(Sparkplug 3.0), which edge nodes watch before sending data.
"""

import json

from .errors import SparkplugError
from .payload import DataType, Metric, Payload, encode

__all__ = ["BDSEQ", "REBIRTH", "host_state", "parse_host_state", "rebirth_request"]

BDSEQ = "bdSeq"
"""The birth/death sequence metric of NBIRTH and NDEATH (UInt64, 0-255)."""

REBIRTH = "Node Control/Rebirth"
"""The node control metric a host writes true in an NCMD to ask for a rebirth."""


def rebirth_request(timestamp_ms: int) -> bytes:
    """The NCMD payload asking an edge node for a rebirth."""
    metric = Metric(REBIRTH, None, timestamp_ms, DataType.Boolean, True)
    return encode(Payload(timestamp_ms=timestamp_ms, seq=None, metrics=(metric,)))


def host_state(online: bool, timestamp_ms: int) -> bytes:
    """A primary host's STATE payload (Sparkplug 3.0 JSON)."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()


def parse_host_state(data: bytes) -> tuple[bool, int]:
    """``(online, timestamp_ms)`` of a STATE payload; :class:`SparkplugError` if malformed."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SparkplugError(f"STATE payload is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise SparkplugError("STATE payload is not a JSON object")
    online, timestamp = body.get("online"), body.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugError("STATE payload needs a boolean 'online'")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        raise SparkplugError("STATE payload needs a non-negative integer 'timestamp'")
    return online, timestamp
