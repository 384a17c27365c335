"""Sparkplug B topics: ``spBv1.0/<group>/<type>/<node>[/<device>]`` and ``spBv1.0/STATE/<host>``."""

from dataclasses import dataclass
from enum import StrEnum

from .errors import SparkplugError

__all__ = ["NAMESPACE", "MessageType", "Topic"]

NAMESPACE = "spBv1.0"
"""The first element of every Sparkplug B topic."""

_FORBIDDEN = frozenset("+#/")


class MessageType(StrEnum):
    """The message types of Sparkplug B 3.0; the third topic element (STATE: the second)."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


_NODE_TYPES = frozenset(
    {MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA, MessageType.NCMD}
)
_DEVICE_TYPES = frozenset(
    {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}
)


def _check_id(kind: str, value: str) -> None:
    if not value:
        raise SparkplugError(f"empty {kind} id")
    bad = sorted(_FORBIDDEN & set(value))
    if bad:
        raise SparkplugError(f"{kind} id {value!r} contains {' '.join(bad)}")


@dataclass(frozen=True)
class Topic:
    """One Sparkplug B topic, validated when built.

    Node messages have no ``device``, device messages must have one; a STATE topic has only
    ``host`` (``group`` and ``node`` are then empty strings).
    """

    group: str
    type: MessageType
    node: str
    device: str | None = None
    host: str | None = None

    def __post_init__(self) -> None:
        if self.type is MessageType.STATE:
            if self.host is None or self.group or self.node or self.device is not None:
                raise SparkplugError("a STATE topic names only its host")
            _check_id("host", self.host)
            return
        if self.host is not None:
            raise SparkplugError(f"a {self.type} topic names no host")
        _check_id("group", self.group)
        _check_id("edge node", self.node)
        if self.type in _DEVICE_TYPES:
            if self.device is None:
                raise SparkplugError(f"a {self.type} topic needs a device id")
            _check_id("device", self.device)
        elif self.device is not None:
            raise SparkplugError(f"a {self.type} topic has no device id")

    @classmethod
    def state(cls, host: str) -> "Topic":
        """The STATE topic of primary host application ``host``."""
        return cls(group="", type=MessageType.STATE, node="", host=host)

    @classmethod
    def parse(cls, text: str) -> "Topic":
        """The topic ``text`` names; :class:`SparkplugError` if it is not Sparkplug B."""
        parts = text.split("/")
        if parts[0] != NAMESPACE:
            raise SparkplugError(f"topic {text!r} is not in namespace {NAMESPACE}")
        if len(parts) == 3 and parts[1] == MessageType.STATE:
            return cls.state(parts[2])
        if len(parts) not in (4, 5):
            raise SparkplugError(f"topic {text!r} has {len(parts)} elements, not 4 or 5")
        try:
            kind = MessageType(parts[2])
        except ValueError:
            raise SparkplugError(f"topic {text!r}: unknown message type {parts[2]!r}") from None
        if kind is MessageType.STATE:
            raise SparkplugError(f"topic {text!r}: STATE is spBv1.0/STATE/<host>")
        if kind in _NODE_TYPES and len(parts) != 4:
            raise SparkplugError(f"topic {text!r}: a {kind} topic has no device id")
        if kind in _DEVICE_TYPES and len(parts) != 5:
            raise SparkplugError(f"topic {text!r}: a {kind} topic needs a device id")
        device = parts[4] if len(parts) == 5 else None
        return cls(group=parts[1], type=kind, node=parts[3], device=device)

    def __str__(self) -> str:
        if self.type is MessageType.STATE:
            return f"{NAMESPACE}/STATE/{self.host}"
        tail = f"/{self.device}" if self.device is not None else ""
        return f"{NAMESPACE}/{self.group}/{self.type}/{self.node}{tail}"
