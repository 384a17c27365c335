"""The gateway's configuration: one YAML file per gateway, validated as one pydantic tree.

Secrets stay out of the file: ``${NAME}`` in any string value is replaced by the
environment variable ``NAME``, and an unknown name is an error (``$${`` writes a literal
``${``). :func:`load_config` reports every problem with its location in the file.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from kyoso import validation
from kyoso.contract import Capability, Id, MachineState, Name, Sharing, ShiftCalendar
from kyoso.ops import HttpConfig
from kyoso.validation import ConfigModel, FileSettings, load_yaml_settings

from .errors import GatewayError
from .modbus_decode import ModbusDeviceConfig
from .mtconnect_xml import MtconnectConfig
from .opcua_config import OpcuaConfig
from .outbox import OutboxConfig
from .publisher import PublisherConfig
from .slmp_config import SlmpConfig
from .sparkplug_config import SparkplugConfig


class MqttSensorConfig(ConfigModel):
    """A sensor publishing JSON on a local broker (e.g. a current clamp on a legacy machine)."""

    topic: str = Field(min_length=1, description="Topic the sensor publishes on.")
    values: dict[Name, str] = Field(
        min_length=1,
        description="Field name -> dotted path into the JSON payload, e.g. 'ENERGY.Current'.",
    )
    timeout_s: float = Field(
        default=30.0, gt=0, description="A value older than this counts as missing."
    )


class SourceConfig(ConfigModel):
    """Where a machine's fields come from: exactly one kind (``modbus``, ``mqtt``,
    ``mtconnect``, ``opcua``, ``slmp``)."""

    modbus: ModbusDeviceConfig | None = None
    mqtt: MqttSensorConfig | None = None
    mtconnect: MtconnectConfig | None = None
    opcua: OpcuaConfig | None = None
    slmp: SlmpConfig | None = None

    @property
    def kind(self) -> str:
        """The name of the configured kind."""
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            kinds = ", ".join(type(self).model_fields)
            raise ValueError(f"give exactly one of {kinds} (given: {', '.join(given) or 'none'})")
        return self

    @property
    def fields(self) -> set[str]:
        """Names of every field the source yields."""
        if self.modbus is not None:
            return {f.name for f in self.modbus.fields}
        if self.mtconnect is not None:
            return set(self.mtconnect.fields)
        if self.opcua is not None:
            return set(self.opcua.fields)
        if self.slmp is not None:
            return set(self.slmp.fields)
        assert self.mqtt is not None
        return set(self.mqtt.values)


class Level(ConfigModel):
    """A state entered when a numeric field reaches ``above``."""

    state: MachineState
    above: float


class StateFromCode(ConfigModel):
    """The state is a code in a register, mapped value by value."""

    field: Name = Field(description="Field holding the state code.")
    map: dict[int, MachineState] = Field(min_length=1, description="Code -> state.")
    otherwise: MachineState = Field(
        default=MachineState.UNKNOWN, description="State of a code not in the map."
    )


class StateFromThreshold(ConfigModel):
    """The state follows a numeric field (e.g. current draw) through thresholds."""

    field: Name = Field(description="Numeric field, e.g. current_a.")
    levels: list[Level] = Field(
        min_length=1, description="Highest first: the first level whose threshold is met wins."
    )
    otherwise: MachineState = Field(
        default=MachineState.DOWN, description="State below the lowest level."
    )
    hysteresis: float = Field(
        default=0.0, ge=0, description="To leave a level, the value must fall this far below it."
    )
    min_dwell_s: float = Field(
        default=0.0, ge=0, description="A new state must persist this long to be taken."
    )

    @model_validator(mode="after")
    def _descending(self) -> Self:
        thresholds = [level.above for level in self.levels]
        if thresholds != sorted(thresholds, reverse=True):
            raise ValueError("levels must be ordered from the highest threshold down")
        return self


class AlarmRule(ConfigModel):
    """A field that forces ``down`` while it is non-zero (an alarm code or an alarm bit)."""

    field: Name


class StateConfig(ConfigModel):
    """How the machine state is derived."""

    from_code: StateFromCode | None = None
    from_threshold: StateFromThreshold | None = None
    alarm: AlarmRule | None = Field(default=None, description="Forces down while non-zero.")
    planned_stops_from_calendar: bool = Field(
        default=True, description="Outside planned busy time the state is planned_stop."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.from_code is None) == (self.from_threshold is None):
            raise ValueError("give exactly one of from_code and from_threshold")
        return self


class CounterConfig(ConfigModel):
    """A part counter read from the device, as a raw value that rolls over or resets (how a
    drop or a jump is told from a glitch: kyoso/gateway/machine.py)."""

    field: Name
    width_bits: Literal[16, 32, 64] = Field(
        default=32, description="Register width: the counter rolls over at 2**width_bits."
    )
    max_parts_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Fastest plausible count; a faster jump is refused. Default: 1.5 per "
        "ideal_cycle_time_s of the machine, or no limit without one.",
    )


class MachineRules(ConfigModel):
    """A machine's identity, and how its fields become a state, counters and signals:
    everything a gateway's machine has but its source (the ingest's Sparkplug machines,
    whose fields come from metrics, share it)."""

    id: Id
    name: str = Field(max_length=128, description="Display name.")
    calendar: Id = Field(description="Name of a calendar in `calendars`.")
    capabilities: list[Capability] = Field(default_factory=list, max_length=16)
    ideal_cycle_time_s: float | None = Field(default=None, gt=0)
    sharing: Sharing = Field(default_factory=Sharing)
    state: StateConfig
    counters: dict[Name, CounterConfig] = Field(
        default_factory=dict, description="Published counter -> raw counter field."
    )
    signals: list[Name] = Field(
        default_factory=list, description="Fields published as signals (last/mean/min/max)."
    )

    @property
    def wanted_fields(self) -> set[str]:
        """The fields the state rules, counters and signals read."""
        rules = self.state.from_code or self.state.from_threshold
        assert rules is not None
        wanted = {rules.field, *(c.field for c in self.counters.values()), *self.signals}
        if self.state.alarm is not None:
            wanted.add(self.state.alarm.field)
        return wanted


class MachineConfig(MachineRules):
    """One machine behind this gateway."""

    source: SourceConfig

    @model_validator(mode="after")
    def _fields_exist(self) -> Self:
        known = self.source.fields
        if unknown := sorted(self.wanted_fields - known):
            raise ValueError(
                f"fields {unknown} are not read by the source (it reads {sorted(known)})"
            )
        return self


class SensorBrokerConfig(ConfigModel):
    """The shop's local broker that MQTT sensors publish to."""

    host: str = Field(default="localhost")
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None


_STAND_IN = "invalid"
"""A valid id given to the broker in place of an identity that is itself an error."""


class GatewayConfig(ConfigModel):
    """A whole gateway."""

    factory: Id = Field(description="Factory id: first topic level, confined by the broker ACL.")
    gateway: Id = Field(description="Gateway id within the factory.")
    broker: PublisherConfig = Field(description="Regional broker; factory and gateway are added.")
    outbox: OutboxConfig
    sensor_broker: SensorBrokerConfig | None = Field(
        default=None, description="Local broker of MQTT sensors; needed if any machine has one."
    )
    http: HttpConfig = Field(default_factory=HttpConfig)
    sparkplug: SparkplugConfig | None = Field(
        default=None, description="Also publish as a Sparkplug B edge node; None: do not."
    )
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600, description="Device poll period.")
    publish_interval_s: float = Field(
        default=10.0, gt=0, le=3600, description="Sample interval: one sample per machine."
    )
    min_sample_s: float | None = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="A poll that sees a machine's state change closes its sample there and "
        "publishes it at once, at most once per this many seconds of the poll schedule per "
        "machine (a change within it waits); null: samples close only every "
        "publish_interval_s.",
    )
    calendars: dict[Id, ShiftCalendar] = Field(min_length=1)
    machines: Annotated[list[MachineConfig], Field(min_length=1, max_length=500)]

    @field_validator("broker", mode="before")
    @classmethod
    def _broker_identity(cls, value: Any, info: ValidationInfo) -> Any:
        # The broker takes the gateway's identity as validated above (fields validate in
        # order). Copying the raw values instead reported a bad id twice, as ``factory``
        # and as ``broker.factory``. A value that failed (or is missing) is already an
        # error of its own: a stand-in keeps it from being reported again.
        if isinstance(value, dict):
            identity = {key: info.data.get(key, _STAND_IN) for key in ("factory", "gateway")}
            value = {**identity, **value}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.broker.factory, self.broker.gateway) != (self.factory, self.gateway):
            raise ValueError("broker.factory and broker.gateway must match factory and gateway")
        ids = [m.id for m in self.machines]
        if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"machine ids repeat: {duplicates}")
        for machine in self.machines:
            if machine.calendar not in self.calendars:
                raise ValueError(f"machine {machine.id}: unknown calendar {machine.calendar!r}")
            if machine.source.mqtt is not None and self.sensor_broker is None:
                raise ValueError(f"machine {machine.id} reads MQTT: give sensor_broker")
        if self.publish_interval_s < self.poll_interval_s:
            raise ValueError("publish_interval_s must be at least poll_interval_s")
        return self


class ConfigError(GatewayError, validation.ConfigError):
    """A configuration that cannot be used; one line per problem, with its location. A
    gateway error, and the configuration error every component raises."""


ENV_PREFIX = "KYOSO_GATEWAY_"


class GatewaySettings(GatewayConfig, FileSettings):
    """A gateway's file, whose single options ``KYOSO_GATEWAY_<PATH>`` variables override
    (levels joined by ``__``: ``KYOSO_GATEWAY_BROKER__HOST``), as the ingest's and the
    API's."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read, substitute (``${NAME}`` from ``environ``, default the process's), override
    (``KYOSO_GATEWAY_*``) and validate a gateway file; :class:`ConfigError` lists every
    error with its line in the file, or the variable's prefix."""
    return load_yaml_settings(GatewaySettings, path, ENV_PREFIX, error=ConfigError, environ=environ)
