"""OPC UA configuration, node references and the umati state mapping: pure code, no I/O.

A field names its node by a node id (``ns=2;s=Machine.State``, ``i=2258``) or by a browse
path from the root (``0:Objects/2:MachineTools/2:Mill01/...``: ``<namespace index>:<browse
name>`` per step), or is a preset that reads several nodes of an umati machine tool (OPC
40501-1) and yields one of the codes the MTConnect ``state`` preset yields, so one state
rule (``from_code``) reads both protocols. What a value becomes is written down here
(:func:`convert`, :func:`umati_state`, :func:`stacklight_state`), so that the README's
mapping tables have one source.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from kyoso.contract import Name
from kyoso.validation import ConfigModel

from .breaker import BreakerConfig
from .mtconnect_xml import IDLE, INTERRUPTED, RUNNING, SETUP

MACHINE_TOOL_NS: Final = "http://opcfoundation.org/UA/MachineTool/"
"""The namespace of OPC 40501-1 (umati machine tools), whose browse names the presets use."""

OPERATION_MODES: Final[Mapping[int, str]] = {
    0: "Manual",
    1: "Automatic",
    2: "Setup",
    3: "AutoWithManualIntervention",
    4: "Service",
    5: "Other",
}
"""MachineOperationModeEnumeration (OPC 40501-1)."""

CHANNEL_STATES: Final[Mapping[int, str]] = {0: "Active", 1: "Interrupted", 2: "Reset"}
"""ChannelStateEnumeration (OPC 40501-1)."""

PROGRAM_STATES: Final[Mapping[int, str]] = {
    0: "Initializing",
    1: "Running",
    2: "Ended",
    3: "Interrupted",
    4: "Aborted",
}
"""The states of ProductionProgramStateMachineType (OPC 40501-1), by state number; its
CurrentState is a LocalizedText whose text is the state's name."""

LampColour = Literal["red", "yellow", "green", "blue", "white"]
"""Lamps of a stacklight (OPC 10000-200 SignalColor: Red 1, Green 2, Blue 3, Yellow 4,
White 7) that the ``stacklight`` preset reads."""

_STEP: Final = re.compile(r"^(\d+):([^/]+)$")
_NODE_ID: Final = re.compile(r"^(ns=\d+;)?[isgb]=.+$")


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a browse path: a browse name in a namespace, by index or by URI (the
    presets' steps in the umati namespace, resolved once per session)."""

    namespace: int | str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.name}"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node by id, or by a browse path from the root node."""

    node_id: str | None = None
    path: tuple[Step, ...] = ()

    def __str__(self) -> str:
        return self.node_id if self.node_id is not None else "/".join(map(str, self.path))

    def child(self, *steps: Step) -> "NodeRef":
        """A node below this one (a browse path only)."""
        assert self.node_id is None, "presets start from a browse path"
        return NodeRef(path=(*self.path, *steps))


def parse_node(text: str) -> NodeRef:
    """A node reference as configured; ValueError names what is wrong."""
    text = text.strip()
    if _NODE_ID.match(text):
        return NodeRef(node_id=text)
    steps = []
    for part in text.strip("/").split("/"):
        match = _STEP.match(part)
        if match is None:
            raise ValueError(
                f"{text!r}: give a node id (ns=2;s=Name, i=2258) or a browse path of "
                f"<namespace index>:<name> steps (0:Objects/2:Machine), not step {part!r}"
            )
        steps.append(Step(int(match[1]), match[2]))
    return NodeRef(path=tuple(steps))


def _mt(*names: str) -> tuple[Step, ...]:
    return tuple(Step(MACHINE_TOOL_NS, n) for n in names)


# -- configuration -------------------------------------------------------------------------


class OpcuaFieldConfig(ConfigModel):
    """One field: a node's value, or a preset reading an umati machine tool."""

    node: str | None = Field(
        default=None,
        min_length=1,
        description="Node id (ns=2;s=Machine.State) or browse path (0:Objects/2:Machine/"
        "2:State); for preset state: the umati MachineTool object; none for stacklight.",
    )
    preset: Literal["state", "stacklight", "faults", "fault_code"] | None = Field(
        default=None,
        description="state: 1 running, 2 idle, 3 setup, 4 interrupted from the umati "
        "OperationMode, ChannelState and ActiveProgram state; stacklight: the same codes "
        "from the lamps; faults: how many alarms (AlarmConditionType events of node, e.g. "
        "the umati Notification/Messages) are active; fault_code: the latest active "
        "alarm's ErrorCode (a number), 0 with none.",
    )
    channel: str | None = Field(
        default=None,
        min_length=1,
        description="state: the channel's browse name under Monitoring (e.g. Channel1); "
        "null: no ChannelState.",
    )
    program: bool = Field(
        default=True, description="state: read Production/ActiveProgram/State/CurrentState."
    )
    lamps: dict[LampColour, str] | None = Field(
        default=None,
        min_length=1,
        description="stacklight: colour -> the lamp's SignalOn node (id or browse path).",
    )
    map: dict[str, int | float] | None = Field(
        default=None,
        min_length=1,
        description="Value -> number: an enumeration's integer, true/false, or a text "
        "(a LocalizedText's); default: the value itself as a number.",
    )
    scale: float = Field(default=1.0, description="A numeric value is multiplied by this.")
    sampling_interval_ms: float | None = Field(
        default=None, ge=0, le=3_600_000, description="Default: the server's default_sampling."
    )

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        if value is not None:
            parse_node(value)
        return value

    @field_validator("lamps")
    @classmethod
    def _lamps(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for node in (value or {}).values():
            parse_node(node)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.preset is not None and (self.map is not None or "scale" in self.model_fields_set):
            raise ValueError("map and scale apply to a plain node, not a preset")
        if (self.node is None) != (self.preset == "stacklight"):
            raise ValueError("give node (but not with preset stacklight, which reads lamps)")
        if self.preset == "state" and parse_node(self.node or "").node_id is not None:
            raise ValueError("preset state needs the machine tool's browse path, not a node id")
        if (self.lamps is None) != (self.preset != "stacklight"):
            raise ValueError("lamps goes with preset stacklight, and it needs them")
        state_keys = {"channel", "program"} & self.model_fields_set
        if state_keys and self.preset != "state":
            raise ValueError(f"{', '.join(sorted(state_keys))} applies to preset state only")
        return self

    def inputs(self) -> dict[str, NodeRef]:
        """The nodes this field reads, by role (``value`` for a plain node)."""
        if self.preset == "stacklight":
            assert self.lamps is not None
            return {colour: parse_node(n) for colour, n in self.lamps.items()}
        assert self.node is not None  # every other field has one
        node = parse_node(self.node)
        if self.preset in ("faults", "fault_code"):
            return {"events": node}
        if self.preset != "state":
            return {"value": node}
        found = {"operation_mode": node.child(*_mt("Monitoring", "MachineTool", "OperationMode"))}
        if self.channel is not None:
            found["channel_state"] = node.child(*_mt("Monitoring", self.channel, "ChannelState"))
        if self.program:
            found["program_state"] = node.child(
                *_mt("Production", "ActiveProgram", "State"), Step(0, "CurrentState")
            )
        return found


class OpcuaSecurityConfig(ConfigModel):
    """How the secure channel is signed and encrypted."""

    policy: Literal["None", "Basic256Sha256"] = Field(
        default="None", description="Security policy of the endpoint."
    )
    mode: Literal["Sign", "SignAndEncrypt"] = Field(
        default="SignAndEncrypt", description="With Basic256Sha256: sign only, or also encrypt."
    )
    certificate: Path | None = Field(
        default=None, description="The gateway's certificate (DER or PEM) the server trusts."
    )
    private_key: Path | None = Field(default=None, description="Its private key (PEM).")
    server_certificate: Path | None = Field(
        default=None,
        description="The server's certificate to trust; null: the one the server's endpoint "
        "presents.",
    )
    application_uri: str = Field(
        default="urn:kyoso:gateway",
        min_length=1,
        description="The gateway's application URI: the URI in its certificate.",
    )

    @model_validator(mode="after")
    def _keys(self) -> Self:
        keys = (self.certificate, self.private_key)
        if self.policy == "Basic256Sha256" and None in keys:
            raise ValueError("policy Basic256Sha256 needs certificate and private_key")
        if self.policy == "None" and self.model_fields_set - {"policy"}:
            raise ValueError("certificates and mode apply to policy Basic256Sha256 only")
        return self


class OpcuaConfig(BreakerConfig):
    """One OPC UA server (a machine's control) and the fields read from it."""

    endpoint: str = Field(
        pattern=r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$",
        description="The server's endpoint, opc.tcp://host:port/path.",
    )
    security: OpcuaSecurityConfig = Field(default_factory=OpcuaSecurityConfig)
    user: str | None = Field(default=None, min_length=1, description="User name; null: anonymous.")
    password: SecretStr | None = Field(
        default=None, description="Its password; better ${ENV_NAME} or password_file."
    )
    password_file: Path | None = Field(
        default=None, description="A file holding the password (its first line)."
    )
    timeout_s: float = Field(
        default=4.0, gt=0, le=60, description="Bound on connecting and on each request."
    )
    mode: Literal["subscribe", "poll"] = Field(
        default="subscribe",
        description="subscribe: monitored items push changes, a poll reads the cache; poll: "
        "each poll reads the nodes (also used per field when the server refuses to monitor).",
    )
    publishing_interval_ms: float = Field(
        default=500, gt=0, le=3_600_000, description="The subscription's publishing interval."
    )
    default_sampling_ms: float = Field(
        default=250, ge=0, le=3_600_000, description="Sampling interval of a field without one."
    )
    reconnect_min_s: float = Field(
        default=1.0, gt=0, le=3600, description="First wait before reconnecting; it doubles."
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait between reconnects."
    )
    fields: dict[Name, OpcuaFieldConfig] = Field(
        min_length=1, description="Field name -> what it reads."
    )

    @model_validator(mode="after")
    def _login(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and self.user is None:
            raise ValueError("a password needs a user")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        notifiers = {f.node for f in self.fields.values() if f.preset in ("faults", "fault_code")}
        if len(notifiers) > 1:
            raise ValueError(
                f"faults and fault_code read one node's alarms, not {sorted(map(str, notifiers))}"
            )
        return self

    def secret(self) -> str | None:
        """The password, read from its file when it has one (never logged)."""
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").splitlines()[0]
        return self.password.get_secret_value() if self.password is not None else None


# -- mapping -------------------------------------------------------------------------------


def _text(value: object) -> str:
    """A value as a map's key: a LocalizedText's text, true/false, or str()."""
    text = getattr(value, "Text", None)
    if text is not None:
        return str(text)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def convert(value: object, spec: OpcuaFieldConfig) -> int | float | str | None:
    """A plain node's value as a field's number, or None when it is not one (a text the map
    lacks): a map by the value's text; a boolean is 0 or 1; a number is scaled."""
    if spec.map is not None:
        return spec.map.get(_text(value))
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        scaled = value * spec.scale
        return int(scaled) if isinstance(value, int) and spec.scale == 1 else scaled
    return None


def _named(value: object, names: Mapping[int, str]) -> str | None:
    """An enumeration's name from its integer, or a state's name from its text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value)
    text = _text(value)
    return text if text in names.values() else None


def umati_state(inputs: Mapping[str, object]) -> int | None:
    """The ``state`` preset's code, as the MTConnect preset's: a channel Active or a program
    Running is running; Manual or Setup mode while not running is setup; a channel
    Interrupted or a program Interrupted or Aborted, or Service mode, is interrupted (the
    machine's ``from_code`` maps it to down); otherwise (Reset, Ended, Initializing, or
    Automatic with nothing else known) idle. None for a value outside the enumerations."""
    mode = _named(inputs["operation_mode"], OPERATION_MODES)
    channel = _named(inputs.get("channel_state"), CHANNEL_STATES)
    program = _named(inputs.get("program_state"), PROGRAM_STATES)
    if mode is None or ("channel_state" in inputs and channel is None):
        return None
    if "program_state" in inputs and program is None:
        return None
    if channel == "Active" or program == "Running":
        return RUNNING
    if mode in ("Manual", "Setup"):
        return SETUP
    if channel == "Interrupted" or program in ("Interrupted", "Aborted") or mode == "Service":
        return INTERRUPTED
    return IDLE


def stacklight_state(lamps: Mapping[str, object]) -> int:
    """The ``stacklight`` preset's code: red lit is interrupted, else green lit is running,
    else idle (yellow, or every lamp off)."""
    lit = {colour for colour, on in lamps.items() if bool(on)}
    if "red" in lit:
        return INTERRUPTED
    return RUNNING if "green" in lit else IDLE
