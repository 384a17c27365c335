"""The messages on the wire: sample batches, machine descriptions, gateway status.

Every message is UTF-8 JSON, carries the schema version ``v``, and is validated strictly:
unknown fields, NaN and Infinity, naive timestamps, negative durations and oversize
payloads are refused. :func:`decode` raises :class:`ContractError` with a short
``reason`` code (for dead-letter counting) and a precise message.
"""

import itertools
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, Protocol, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from .calendar import ShiftCalendar
from .capabilities import Capability
from .ids import Id, Name
from .states import MachineState
from .topics import Topic, TopicError, TopicKind, parse_topic

SCHEMA_VERSION: Final = 1
_WIRE: Final = {"wire": True}
MAX_MESSAGE_BYTES: Final = 256 * 1024
MAX_SAMPLES_PER_BATCH: Final = 1000
MAX_INTERVAL_S: Final = 3600.0
MAX_COUNTER_DELTA: Final = 1_000_000_000
"""The most parts one counter may add in one sample."""
DURATION_TOLERANCE_S: Final = 0.01
"""How far the state durations may sum away from ``interval_s`` (rounding at the edge)."""


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


def _utc(value: object) -> object:
    """A wire timestamp, admitting only RFC 3339 (no Unix numbers, no bare dates), or an
    aware datetime, in UTC; anything else is left to the type's own error."""
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise ValueError(
                "timestamp must be RFC 3339 with seconds and an offset, e.g. 2026-01-05T10:00:00Z"
            )
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("timestamp out of range once converted to UTC") from exc
    return value


UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_utc)]
"""A timezone-aware RFC 3339 timestamp, normalised to UTC (one validator call: it is on
the ingest's hot path, once per sample)."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=1024)


def _version(value: object, info: ValidationInfo) -> object:
    """On the wire ``v`` is required and an integer; in code it defaults to the current one."""
    if value is None:
        if info.context == _WIRE:
            raise ValueError("the schema version v is required")
        return SCHEMA_VERSION
    if type(value) is not int:
        raise ValueError("the schema version v must be an integer")
    return value


class _Envelope(_Message):
    """A top-level message, versioned."""

    v: Annotated[Literal[1], BeforeValidator(_version)] = Field(
        default=None, validate_default=True, description="Schema version."
    )


COUNTER_GOOD: Final = "good"
"""Counter of good parts; with :data:`COUNTER_REJECT` the produced quantity (ISO 22400)."""
COUNTER_REJECT: Final = "reject"
"""Counter of rejected (scrap) parts."""


class Counter(_Message):
    """A part counter over the sample's interval, rollover and resets handled at the edge."""

    delta: int = Field(ge=0, le=MAX_COUNTER_DELTA, description="Count added during the interval.")
    total: int | None = Field(
        default=None, ge=0, le=2**64 - 1, description="The device's raw counter reading at ts."
    )


class SignalStats(_Message):
    """A numeric signal summarised over the sample's interval."""

    last: float
    mean: float
    min: float
    max: float
    count: int = Field(default=1, ge=1, le=1_000_000, description="Readings summarised.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        lo, hi = self.min, self.max
        # Means of float sums may stray a rounding error outside [min, max].
        slack = 1e-9 * max(1.0, abs(lo), abs(hi))
        if not (lo <= self.last <= hi and lo - slack <= self.mean <= hi + slack):
            raise ValueError("signal stats need min <= last, mean <= max")
        return self


class Sample(_Message):
    """What one machine did during one interval ``(ts - interval_s, ts]``."""

    machine: Id
    seq: int = Field(ge=0, le=2**63 - 1, description="Per-gateway sequence number.")
    ts: UtcDatetime = Field(description="End of the interval, taken at the edge (UTC).")
    interval_s: float = Field(gt=0, le=MAX_INTERVAL_S)
    state: MachineState = Field(description="State at ts.")
    durations_s: dict[MachineState, Annotated[float, Field(ge=0)]] = Field(
        description="Seconds spent in each state during the interval; they sum to interval_s."
    )
    counters: dict[Name, Counter] = Field(default_factory=dict, max_length=16)
    signals: dict[Name, SignalStats] = Field(default_factory=dict, max_length=32)
    alarm: int | None = Field(default=None, ge=0, le=2**32 - 1, description="Alarm code at ts.")
    missing: list[Name] = Field(
        default_factory=list,
        max_length=64,
        description="Fields that could not be read in the interval (device error or timeout).",
    )

    @model_validator(mode="after")
    def _durations_fill_interval(self) -> Self:
        total = math.fsum(self.durations_s.values())
        if abs(total - self.interval_s) > DURATION_TOLERANCE_S:
            raise ValueError(
                f"state durations sum to {total:.3f} s but interval_s is {self.interval_s:.3f} s"
            )
        if self.missing and (both := set(self.missing) & (self.signals.keys() | self.counters)):
            raise ValueError(f"{sorted(both)} both carry a value and are listed as missing")
        return self


class SampleBatch(_Envelope):
    """Samples of one gateway, one session, in sequence order; the unit of publishing."""

    factory: Id
    gateway: Id
    session: Id = Field(description="Boot/session id of the gateway's sequence counter.")
    samples: list[Sample] = Field(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        seqs = [s.seq for s in self.samples]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            raise ValueError("sample seq numbers must strictly increase within a batch")
        return self


class Sharing(_Message):
    """What a factory agrees to share about a machine with the region."""

    capacity: bool = Field(default=True, description="Aggregated free capacity.")
    kpis: bool = Field(default=False, description="Aggregated KPIs (availability, OEE).")


class MachineDescription(_Envelope):
    """A machine's identity, capabilities and calendar; retained on its topic."""

    factory: Id
    gateway: Id
    machine: Id
    name: str = Field(max_length=128, description="Display name.")
    updated_at: UtcDatetime
    capabilities: list[Capability] = Field(default_factory=list, max_length=16)
    ideal_cycle_time_s: float | None = Field(default=None, gt=0, le=86_400)
    calendar: ShiftCalendar
    sharing: Sharing = Field(default_factory=Sharing)


GatewayState = Literal["online", "offline"]
GatewayReason = Literal["connected", "shutdown", "connection_lost"]
"""Why a gateway is in its state: ``connected`` (online), ``shutdown`` or
``connection_lost`` (its last will)."""


class GatewayStatus(_Envelope):
    """A gateway's liveness; retained, and its ``offline`` form is the MQTT last will."""

    factory: Id
    gateway: Id
    session: Id
    status: GatewayState
    ts: UtcDatetime = Field(
        description="When the gateway composed this message; for the last will, its connect time."
    )
    reason: GatewayReason
    software: str = Field(default="", max_length=64)

    @model_validator(mode="after")
    def _reason_fits(self) -> Self:
        if (self.status == "online") != (self.reason == "connected"):
            raise ValueError("status online goes with reason connected, offline with the others")
        return self


MAX_RECEIPT_SESSIONS: Final = 64
MAX_RECEIPT_RANGES: Final = 256

SeqRange = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]
"""``[first, last]``: the sequence numbers from ``first`` to ``last``, both included."""


class SessionReceipt(_Message):
    """The sequence numbers of one gateway session that an ingest worker has stored."""

    session: Id
    ranges: list[SeqRange] = Field(
        min_length=1,
        max_length=MAX_RECEIPT_RANGES,
        description="Stored seq ranges [first, last], ascending, apart (not even adjacent).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        for first, last in self.ranges:
            if last < first:
                raise ValueError(f"range [{first}, {last}] ends before it starts")
        for (_, last), (first, _) in itertools.pairwise(self.ranges):
            if first <= last + 1:
                raise ValueError("ranges must ascend with a gap between them")
        return self


class StoreReceipt(_Envelope):
    """What the ingest has taken of one gateway's samples, as one worker knows it (its own
    and those of the other workers' receipts it heard); retained on ``…/stored/<worker>``.
    The gateway keeps every sample until a receipt covers it."""

    factory: Id
    gateway: Id
    worker: Id = Field(description="The ingest worker (its broker username).")
    ts: UtcDatetime = Field(description="When the worker published this receipt.")
    sessions: list[SessionReceipt] = Field(max_length=MAX_RECEIPT_SESSIONS)


Message = SampleBatch | MachineDescription | GatewayStatus | StoreReceipt

_BY_KIND: dict[
    TopicKind,
    type[SampleBatch] | type[MachineDescription] | type[GatewayStatus] | type[StoreReceipt],
] = {
    TopicKind.SAMPLES: SampleBatch,
    TopicKind.STATUS: GatewayStatus,
    TopicKind.MACHINE: MachineDescription,
    TopicKind.STORED: StoreReceipt,
}

DeadLetterReason = Literal["oversize", "topic", "json", "schema", "version", "spoofed"]


class ContractError(ValueError):
    """A message the contract refuses; ``reason`` is a short code for counting."""

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason: DeadLetterReason = reason


def encode(message: Message) -> bytes:
    """The wire form of a message: compact JSON, no null fields."""
    return message.model_dump_json(exclude_none=True).encode()


def decode(topic: str, payload: bytes) -> Message:
    """Validate a message received on ``topic``; raise :class:`ContractError` if refused.

    Checks, in order: size, topic, JSON and schema, and that the factory, gateway and
    machine named in the payload are those of the topic (a gateway cannot speak for
    another).
    """
    where = checked_topic(topic, payload)
    model = _BY_KIND[where.kind]
    try:
        message = model.model_validate_json(payload, strict=True, context=_WIRE)
    except ValidationError as exc:
        raise _classify(exc) from exc
    check_origin(where, message)
    return message


def checked_topic(topic: str, payload: bytes) -> Topic:
    """Where a message received on ``topic`` comes from; raise :class:`ContractError` for
    an oversize payload or a topic outside the contract (the first checks of
    :func:`decode`)."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ContractError("oversize", f"payload of {len(payload)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        return parse_topic(topic)
    except TopicError as exc:
        raise ContractError("topic", str(exc)) from exc


def _classify(exc: ValidationError) -> ContractError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return ContractError("json", f"invalid JSON: {first['msg']}")
    if first["loc"] == ("v",):
        return ContractError("version", f"v: {first['msg']} (this decoder reads {SCHEMA_VERSION})")
    details = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:5]
    )
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return ContractError("schema", details + more)


class _Origin(Protocol):
    @property
    def factory(self) -> str: ...
    @property
    def gateway(self) -> str: ...


def check_origin(where: Topic, message: _Origin) -> None:
    """Raise :class:`ContractError` ``spoofed`` unless ``message`` names the factory,
    gateway (and machine or worker) of the topic it came on."""
    if (message.factory, message.gateway) != (where.factory, where.gateway):
        raise ContractError(
            "spoofed",
            f"payload names {message.factory}/{message.gateway} "
            f"but was published under {where.factory}/{where.gateway}",
        )
    if isinstance(message, MachineDescription) and message.machine != where.machine:
        raise ContractError(
            "spoofed",
            f"payload describes machine {message.machine} but was published for {where.machine}",
        )
    if isinstance(message, StoreReceipt) and message.worker != where.worker:
        raise ContractError(
            "spoofed",
            f"receipt of worker {message.worker} was published for worker {where.worker}",
        )
