"""MTConnect configuration, documents and mapping: pure code, no I/O.

An agent answers ``/current``, ``/sample`` and ``/probe`` with XML whose namespace URI
carries the standard's version (1.3 to 2.x), so elements are matched by local name. A
document that declares a DTD is refused before parsing: entities can only be declared in
one, so no entity expansion (and no billion laughs) can reach the parser.

What a field yields is written down here (:class:`MtconnectFieldConfig`, the default code
maps and :func:`state_code`), so that the README's mapping table has one source.
"""

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Self

from pydantic import Field, HttpUrl, model_validator

from kyoso.contract import Name
from kyoso.validation import ConfigModel

from .breaker import BreakerConfig

UNAVAILABLE: Final = "UNAVAILABLE"
"""The value of a data item the agent has no value for (adapter gone, machine off)."""

DEFAULT_MAPS: Final[Mapping[str, Mapping[str, int]]] = {
    "Execution": {
        "ACTIVE": 1,
        "READY": 2,
        "INTERRUPTED": 3,
        "FEED_HOLD": 4,
        "STOPPED": 5,
        "OPTIONAL_STOP": 6,
        "PROGRAM_STOPPED": 7,
        "PROGRAM_COMPLETED": 8,
        "WAIT": 9,
        "PROGRAM_OPTIONAL_STOP": 10,
    },
    "ControllerMode": {
        "AUTOMATIC": 1,
        "MANUAL": 2,
        "MANUAL_DATA_INPUT": 3,
        "SEMI_AUTOMATIC": 4,
        "EDIT": 5,
    },
    "Availability": {"AVAILABLE": 1},
    "EmergencyStop": {"ARMED": 0, "TRIGGERED": 1},
    "DoorState": {"CLOSED": 0, "OPEN": 1, "UNLATCHED": 2},
    "FunctionalMode": {
        "PRODUCTION": 1,
        "SETUP": 2,
        "TEARDOWN": 3,
        "MAINTENANCE": 4,
        "PROCESS_DEVELOPMENT": 5,
    },
}
"""Token -> number of the controlled vocabularies a field reads without a ``map``."""

CONDITION_LEVELS: Final[Mapping[str, int]] = {"Normal": 0, "Warning": 1, "Fault": 2}
"""A condition data item read as a field: its most severe active level."""

RUNNING, IDLE, SETUP, INTERRUPTED = 1, 2, 3, 4
"""The codes of the ``state`` preset (:func:`state_code`)."""

_IDLE_EXECUTION: Final = frozenset({"READY", "STOPPED", "PROGRAM_COMPLETED"})
_MANUAL_MODES: Final = frozenset({"MANUAL", "MANUAL_DATA_INPUT", "EDIT"})
_DOCTYPE: Final = re.compile(rb"<!DOCTYPE", re.IGNORECASE)


class MtconnectError(Exception):
    """A document that is not a usable MTConnect answer (the root of this module)."""


class MtconnectAgentError(MtconnectError):
    """The agent answered with an ``MTConnectError`` document: its error codes, and its
    header's ``instanceId`` if it has one."""

    def __init__(self, codes: tuple[str, ...], detail: str, instance_id: str | None) -> None:
        super().__init__(f"agent error {', '.join(codes) or 'without a code'}: {detail}")
        self.codes = codes
        self.instance_id = instance_id


# -- configuration -------------------------------------------------------------------------


class MtconnectFieldConfig(ConfigModel):
    """One field read from the device's stream: a data item, or a preset."""

    data_item: str | None = Field(
        default=None,
        min_length=1,
        description="Data item id, else name, else type (Execution, PartCount...) when the "
        "device has exactly one of that type.",
    )
    map: dict[str, int | float] | None = Field(
        default=None,
        min_length=1,
        description="Value -> number, for a data_item; default: the standard's code map of "
        "its type, or the value itself as a number.",
    )
    preset: Literal["state", "faults", "fault_code"] | None = Field(
        default=None,
        description="state: 1 running, 2 idle, 3 setup, 4 interrupted, from Execution, "
        "ControllerMode and Availability; faults: how many Fault conditions are active; "
        "fault_code: the nativeCode (a number) of the latest active Fault, 0 with none.",
    )
    execution: str = Field(
        default="Execution", min_length=1, description="state: the Execution data item."
    )
    controller_mode: str = Field(
        default="ControllerMode",
        min_length=1,
        description="state: the ControllerMode data item (optional in the device).",
    )
    conditions: list[str] | None = Field(
        default=None,
        min_length=1,
        description="faults, fault_code: the condition data items looked at; default: all of "
        "the device.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.data_item is None) == (self.preset is None):
            raise ValueError("give exactly one of data_item and preset")
        if self.map is not None and self.data_item is None:
            raise ValueError("map applies to a data_item only")
        if self.conditions is not None and self.preset not in ("faults", "fault_code"):
            raise ValueError("conditions applies to presets faults and fault_code only")
        state_keys = {"execution", "controller_mode"} & self.model_fields_set
        if state_keys and self.preset != "state":
            raise ValueError(f"{', '.join(sorted(state_keys))} applies to preset state only")
        return self


class MtconnectConfig(BreakerConfig):
    """One device of an MTConnect agent and the fields read from its stream."""

    agent: HttpUrl = Field(description="The agent's base URL, e.g. http://192.168.1.20:5000.")
    device: str | None = Field(
        default=None,
        min_length=1,
        description="Device name or uuid at the agent; null: the agent's only device.",
    )
    timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="Bound on each request, connecting included."
    )
    sample_count: int = Field(
        default=1000, ge=1, le=100_000, description="Most observations one /sample returns."
    )
    fields: dict[Name, MtconnectFieldConfig] = Field(
        min_length=1, description="Field name -> what it reads."
    )

    @property
    def base(self) -> str:
        """The agent URL without a trailing slash, for logs and requests."""
        return str(self.agent).rstrip("/")


# -- documents -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """One observation of a data item, as a stream document gives it."""

    data_item_id: str
    name: str | None
    type: str
    """Element name of a sample or event (``Execution``), ``type`` of a condition."""
    category: Literal["SAMPLE", "EVENT", "CONDITION"]
    sequence: int
    value: str
    """The text, or a condition's level: Normal, Warning, Fault or Unavailable."""
    native_code: str = ""


@dataclass(frozen=True, slots=True)
class Header:
    """Where a document sits in the agent's buffer."""

    instance_id: str
    first_sequence: int
    last_sequence: int
    next_sequence: int


@dataclass(frozen=True, slots=True)
class Streams:
    """An ``MTConnectStreams`` document: its header and its observations in sequence order."""

    header: Header
    devices: tuple[str, ...]
    observations: tuple[Observation, ...]


@dataclass(frozen=True, slots=True)
class DataItem:
    """A data item a ``/probe`` document declares."""

    device: str
    id: str
    name: str | None
    category: str
    type: str
    sub_type: str | None
    units: str | None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _root(document: bytes) -> ET.Element:
    if _DOCTYPE.search(document):
        raise MtconnectError("the document declares a DTD: refused")
    try:
        root = ET.fromstring(document)  # noqa: S314  # no DTD, so no entities
    except ET.ParseError as exc:
        raise MtconnectError(f"not XML: {exc}") from exc
    if _local(root.tag) == "MTConnectError":
        codes = tuple(e.attrib["errorCode"] for e in root.iter() if "errorCode" in e.attrib)
        detail = "; ".join(t.strip() for e in root.iter() if (t := e.text) and t.strip())
        header = next((e for e in root if _local(e.tag) == "Header"), None)
        instance = header.get("instanceId") if header is not None else None
        raise MtconnectAgentError(codes, detail or "no detail", instance)
    return root


def _header(root: ET.Element, expected: str) -> Header:
    if _local(root.tag) != expected:
        raise MtconnectError(f"expected {expected}, got {_local(root.tag)}")
    header = next((e for e in root if _local(e.tag) == "Header"), None)
    if header is None:
        raise MtconnectError(f"{expected} without a Header")
    try:
        return Header(
            instance_id=header.attrib["instanceId"],
            first_sequence=int(header.attrib.get("firstSequence", "0")),
            last_sequence=int(header.attrib.get("lastSequence", "0")),
            next_sequence=int(header.attrib.get("nextSequence", "0")),
        )
    except (KeyError, ValueError) as exc:
        raise MtconnectError(f"Header lacks a valid {exc}") from exc


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (e for e in element.iter() if _local(e.tag) == name)


def parse_streams(document: bytes, device: str | None = None) -> Streams:
    """An ``MTConnectStreams`` document, restricted to ``device`` (name or uuid) if given.
    Raises :class:`MtconnectAgentError` for an error document, :class:`MtconnectError`
    for anything else that is not a valid stream."""
    root = _root(document)
    header = _header(root, "MTConnectStreams")
    observations: list[Observation] = []
    devices: list[str] = []
    for stream in _children(root, "DeviceStream"):
        if device is not None and device not in (stream.get("name"), stream.get("uuid")):
            continue
        devices.append(stream.get("name") or stream.get("uuid") or "")
        for group in stream.iter():
            category = {"Samples": "SAMPLE", "Events": "EVENT", "Condition": "CONDITION"}.get(
                _local(group.tag)
            )
            if category is not None:
                observations.extend(_observation(e, category) for e in group)
    observations.sort(key=lambda o: o.sequence)
    return Streams(header, tuple(devices), tuple(observations))


def _observation(element: ET.Element, category: str) -> Observation:
    tag = _local(element.tag)
    try:
        sequence = int(element.attrib["sequence"])
        item = element.attrib["dataItemId"]
    except (KeyError, ValueError) as exc:
        raise MtconnectError(f"{tag} lacks a valid {exc}") from exc
    if category == "CONDITION":
        type_, value = element.get("type", ""), tag
    else:
        type_, value = tag, (element.text or "").strip()
    return Observation(
        data_item_id=item,
        name=element.get("name"),
        type=camel(type_) if category == "CONDITION" else type_,
        category=category,  # type: ignore[arg-type]  # one of the three keys above
        sequence=sequence,
        value=value,
        native_code=element.get("nativeCode", ""),
    )


def camel(type_: str) -> str:
    """``PART_COUNT`` -> ``PartCount``: a type in the probe's spelling (and a condition's
    ``type`` attribute) as a stream's element names it."""
    return "".join(part.capitalize() for part in type_.split("_")) if type_.isupper() else type_


def parse_probe(document: bytes) -> list[DataItem]:
    """Every data item of every device of an ``MTConnectDevices`` document."""
    root = _root(document)
    _header(root, "MTConnectDevices")
    items: list[DataItem] = []
    for device in (*_children(root, "Device"), *_children(root, "Agent")):
        name = device.get("name") or device.get("uuid") or ""
        items.extend(
            DataItem(
                device=name,
                id=e.get("id", ""),
                name=e.get("name"),
                category=e.get("category", ""),
                type=e.get("type", ""),
                sub_type=e.get("subType"),
                units=e.get("units"),
            )
            for e in _children(device, "DataItem")
        )
    return items


# -- mapping -------------------------------------------------------------------------------


def number(text: str) -> int | float | None:
    """A value's text as a number (an integer when it is one), or None; NaN and infinity
    are not numbers."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def state_code(execution: str, mode: str | None) -> int | None:
    """The ``state`` preset's code: ACTIVE is running; a manual controller mode while not
    ACTIVE is setup; READY, STOPPED and PROGRAM_COMPLETED are idle; any other execution
    (INTERRUPTED, FEED_HOLD, OPTIONAL_STOP, PROGRAM_STOPPED, WAIT...) is interrupted, which
    the machine's ``from_code`` maps to idle or down. None for a value outside the standard."""
    if execution == "ACTIVE":
        return RUNNING
    if mode in _MANUAL_MODES:
        return SETUP
    if execution in _IDLE_EXECUTION:
        return IDLE
    if execution in DEFAULT_MAPS["Execution"]:
        return INTERRUPTED
    return None
