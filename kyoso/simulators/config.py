"""Demo factories described in YAML: machines, how they are read, and how they behave."""

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from kyoso.contract import Capability, Id, ShiftCalendar
from kyoso.validation import ConfigModel, load_yaml_model

WordOrder = Literal["ABCD", "DCBA", "BADC", "CDAB"]
"""Order of the bytes of a 32/64-bit value across registers: A is the most significant byte.

ABCD is big-endian words in big-endian order; CDAB swaps the words; BADC swaps the bytes
in each word; DCBA is fully little-endian. For 64-bit values the pattern extends the same
way (ABCDEFGH, GHEFCDAB, BADCFEHG, HGFEDCBA).
"""

FACTORIES_DIR = Path(__file__).parent / "factories"


class BehaviourConfig(ConfigModel):
    """The seeded behaviour model of one machine; all times count planned time only."""

    cycle_time_s: float = Field(gt=0, le=86_400, description="Mean actual cycle time per part.")
    job_parts: tuple[int, int] = Field(description="Parts per job, drawn uniformly (min, max).")
    setup_s: tuple[float, float] = Field(description="Setup time per job, uniform (min, max).")
    idle_gap_s: float = Field(ge=0, description="Mean idle time before a job (exponential).")
    mtbf_h: float = Field(gt=0, description="Mean running hours between breakdowns.")
    mttr_min: float = Field(gt=0, description="Mean minutes to repair (exponential).")
    micro_stops_per_h: float = Field(default=0, ge=0, description="Minor stops per running hour.")
    micro_stop_s: tuple[float, float] = Field(
        default=(20, 120), description="Minor stop length, uniform (min, max)."
    )
    scrap_rate: float = Field(default=0, ge=0, lt=1, description="Share of parts rejected.")
    alarm_codes: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=lambda: [100],
        min_length=1,
        description="Alarm codes a breakdown shows, drawn uniformly.",
    )
    micro_stop_alarm: int = Field(
        default=1, ge=1, le=65535, description="Alarm code of a minor stop."
    )

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        for name in ("job_parts", "setup_s", "micro_stop_s"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} needs 0 <= min <= max, got ({lo}, {hi})")
        if self.job_parts[0] < 1:
            raise ValueError("job_parts min must be at least 1")
        return self


class RegisterMapConfig(ConfigModel):
    """A controller that holds the register map of docs/simulators.md, read over Modbus or
    (on D devices and bits) over SLMP: its codes, word order and counters."""

    word_order: WordOrder = "ABCD"
    state_codes: dict[str, int] = Field(
        default_factory=lambda: {
            "planned_stop": 0,
            "idle": 1,
            "setup": 2,
            "running": 3,
            "down": 4,
        },
        description="Vendor code in the state register for each state.",
    )
    counter_start: int = Field(
        default=0, ge=0, le=2**32 - 1, description="Raw counter value at the simulation origin."
    )
    counter_reset_daily: bool = Field(
        default=False, description="The controller resets its counters at local midnight."
    )


class ModbusSourceConfig(RegisterMapConfig):
    """A machine read over Modbus TCP, with the register map of docs/simulators.md."""

    kind: Literal["modbus"] = "modbus"
    server: Id = Field(description="Modbus server (TCP port) the machine answers on.")
    unit: int = Field(default=1, ge=1, le=247, description="Unit id on that server.")


class SlmpSourceConfig(RegisterMapConfig):
    """A Mitsubishi MELSEC PLC answering SLMP (3E and 4E binary frames, TCP and UDP on one
    port), the register map on D devices and bits (docs/simulators.md)."""

    kind: Literal["slmp"] = "slmp"
    port: int = Field(ge=0, le=65535, description="TCP and UDP port; 0 picks a free one.")
    word_order: WordOrder = Field(
        default="CDAB", description="MELSEC keeps a 32-bit value's low word first."
    )
    transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="How the demo gateway reads it (the PLC answers both)."
    )
    frame: Literal["3e", "4e"] = Field(
        default="3e", description="The frame the demo gateway sends (the PLC answers both)."
    )


class ClampSourceConfig(ConfigModel):
    """A legacy machine seen through a current clamp that publishes vendor JSON over MQTT."""

    kind: Literal["clamp"] = "clamp"
    sensor: Id = Field(description="Sensor id; the topic is sensors/<sensor>/tele/SENSOR.")
    period_s: float = Field(default=2.0, gt=0, le=3600, description="Publish period (sim time).")
    amps: dict[str, float] = Field(
        default_factory=lambda: {
            "planned_stop": 0.0,
            "down": 0.4,
            "idle": 1.5,
            "setup": 4.0,
            "running": 14.0,
        },
        description="Mean current draw in each state.",
    )
    noise_a: float = Field(default=0.2, ge=0, description="Peak noise added to the current.")


class MTConnectSourceConfig(ConfigModel):
    """A machine tool with its own MTConnect agent, serving its data items over HTTP."""

    kind: Literal["mtconnect"] = "mtconnect"
    port: int = Field(ge=0, le=65535, description="The agent's HTTP port; 0 picks a free one.")
    buffer_size: int = Field(
        default=1024,
        ge=16,
        le=131_072,
        description="Observations the agent keeps for /sample (its circular buffer).",
    )


class OpcuaSourceConfig(ConfigModel):
    """A machine tool whose control runs an OPC UA server with an umati-like address space
    (kyoso/simulators/opcua.py)."""

    kind: Literal["opcua"] = "opcua"
    port: int = Field(ge=0, le=65535, description="The server's TCP port; 0 picks a free one.")


class MachineConfig(ConfigModel):
    """One simulated machine."""

    id: Id
    name: str = Field(max_length=128)
    calendar: Id = Field(description="Name of a calendar in the factory's calendars.")
    capabilities: list[Capability] = Field(min_length=1)
    ideal_cycle_time_s: float = Field(gt=0)
    behaviour: BehaviourConfig
    source: (
        ModbusSourceConfig
        | ClampSourceConfig
        | MTConnectSourceConfig
        | SlmpSourceConfig
        | OpcuaSourceConfig
    ) = Field(discriminator="kind")


class ModbusServerConfig(ConfigModel):
    """A Modbus TCP server: one port, one or several machines behind unit ids."""

    port: int = Field(ge=0, le=65535, description="TCP port; 0 picks a free one.")


class FactoryConfig(ConfigModel):
    """A whole demo factory."""

    factory: Id
    name: str = Field(max_length=128)
    seed: int = Field(description="Seed of every machine's behaviour model.")
    calendars: dict[Id, ShiftCalendar]
    modbus_servers: dict[Id, ModbusServerConfig] = Field(default_factory=dict)
    machines: list[MachineConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Self:
        ids = [m.id for m in self.machines]
        if len(set(ids)) != len(ids):
            raise ValueError("machine ids must be unique within a factory")
        units: set[tuple[str, int]] = set()
        ports = [s.port for s in self.modbus_servers.values() if s.port]
        for machine in self.machines:
            if machine.calendar not in self.calendars:
                raise ValueError(f"machine {machine.id}: unknown calendar {machine.calendar!r}")
            source = machine.source
            if isinstance(source, ModbusSourceConfig):
                if source.server not in self.modbus_servers:
                    raise ValueError(
                        f"machine {machine.id}: unknown modbus server {source.server!r}"
                    )
                if (source.server, source.unit) in units:
                    raise ValueError(
                        f"machine {machine.id}: unit {source.unit} already used on {source.server}"
                    )
                units.add((source.server, source.unit))
            own_port = MTConnectSourceConfig | SlmpSourceConfig | OpcuaSourceConfig
            if isinstance(source, own_port) and source.port:
                if source.port in ports:
                    raise ValueError(f"machine {machine.id}: port {source.port} already used")
                ports.append(source.port)
        return self


class FactoryConfigError(ValueError):
    """A factory file that cannot be loaded; the message names the file and each error."""


def load_factory(path: Path) -> FactoryConfig:
    """Load and validate one factory YAML file."""
    return load_yaml_model(FactoryConfig, path, FactoryConfigError)


def shipped_factories() -> list[Path]:
    """The demo factories that ship with Kyoso."""
    return sorted(FACTORIES_DIR.glob("*.yaml"))
