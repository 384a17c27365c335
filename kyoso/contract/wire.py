"""Sample batches as the ingest reads them: decoded at compiled speed into plain structs.

The ingest's hot path decodes every sample it stores. :func:`decode_samples` reads a
``SampleBatch`` payload into :class:`WireBatch`, msgspec structs that carry the contract's
rules on single fields (bounds, lengths, strict types, unknown fields refused, ``v``
required), then checks in plain Python the ids and names (a set lookup once seen) and the
rules across fields (durations fill the interval, ``seq`` increases, signal stats are
ordered, no name both present and missing, totals within 64 bits, timestamps through the
models' own :func:`~.messages._utc`). No pydantic object is built: building them cost as
much as decoding.

The promise, pinned by tests/test_contract_wire.py: :func:`decode_samples` accepts exactly
the payloads that :func:`~.messages.decode` accepts on a samples topic, and returns the same
values (:func:`from_model` of the models' batch). Where the structs refuse a payload, the
models decide: they word the refusal (reason code and message) or, for what the structs
read more strictly (a key given twice in an object: the models take the last value,
msgspec checks each), accept it, and their batch is converted. A dead letter never depends
on this module's wording. Size, topic and origin (``spoofed``) are checked as
:func:`~.messages.decode` checks them.

:class:`SampleLike` is what the stores read of a sample: a :class:`~.messages.Sample` and a
:class:`WireSample` both are one.
"""

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Final, Literal, Protocol

import msgspec
from msgspec import Meta, Struct, field

from .ids import ID_PATTERN, NAME_PATTERN
from .messages import (
    DURATION_TOLERANCE_S,
    MAX_COUNTER_DELTA,
    MAX_INTERVAL_S,
    MAX_SAMPLES_PER_BATCH,
    ContractError,
    SampleBatch,
    _utc,
    check_origin,
    checked_topic,
    decode,
)
from .states import MachineState
from .topics import TopicKind

__all__ = [
    "CounterLike",
    "SampleLike",
    "SignalLike",
    "WireBatch",
    "WireCounter",
    "WireSample",
    "WireSignal",
    "decode_samples",
    "from_model",
]

# --- what the stores read of a sample ---------------------------------------------------------


class CounterLike(Protocol):
    @property
    def delta(self) -> int: ...
    @property
    def total(self) -> int | None: ...


class SignalLike(Protocol):
    @property
    def last(self) -> float: ...
    @property
    def mean(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def count(self) -> int: ...


class SampleLike(Protocol):
    """The fields of a :class:`~.messages.Sample`, read only."""

    @property
    def machine(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def interval_s(self) -> float: ...
    @property
    def state(self) -> MachineState: ...
    @property
    def durations_s(self) -> Mapping[MachineState, float]: ...
    @property
    def counters(self) -> Mapping[str, CounterLike]: ...
    @property
    def signals(self) -> Mapping[str, SignalLike]: ...
    @property
    def alarm(self) -> int | None: ...
    @property
    def missing(self) -> Sequence[str]: ...


# --- the structs ------------------------------------------------------------------------------


class _Wire(Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """Unknown fields refused at every level (the models' ``extra="forbid"``). Not tracked
    by the garbage collector: short-lived, without cycles. msgspec refuses NaN and Infinity
    (no JSON) and numbers that overflow a float; its ints take no floats nor booleans (the
    models decode strictly too). Ids and names are plain ``str``: :func:`_check` checks
    them."""


class WireCounter(_Wire, frozen=True):
    delta: Annotated[int, Meta(ge=0, le=MAX_COUNTER_DELTA)]
    total: Annotated[int, Meta(ge=0)] | None = None
    """At most 2**64 - 1 (msgspec reads no larger integer)."""


class WireSignal(_Wire, frozen=True):
    last: float
    mean: float
    min: float
    max: float
    count: Annotated[int, Meta(ge=1, le=1_000_000)] = 1


_Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
_Interval = Annotated[float, Meta(gt=0, le=MAX_INTERVAL_S)]
_Durations = dict[MachineState, Annotated[float, Meta(ge=0)]]
_Counters = Annotated[dict[str, WireCounter], Meta(max_length=16)]
_Signals = Annotated[dict[str, WireSignal], Meta(max_length=32)]
_Alarm = Annotated[int, Meta(ge=0, le=2**32 - 1)] | None
_Missing = Annotated[list[str], Meta(max_length=64)]


class _SampleFields(_Wire, frozen=True, kw_only=True):
    machine: str
    seq: _Seq
    interval_s: _Interval
    state: MachineState
    durations_s: _Durations
    counters: _Counters = field(default_factory=dict)
    signals: _Signals = field(default_factory=dict)
    alarm: _Alarm = None
    missing: _Missing = field(default_factory=list)


class WireSample(_SampleFields, frozen=True, kw_only=True):
    """A :class:`~.messages.Sample`'s values; ``ts`` in UTC."""

    ts: datetime


class WireBatch(_Wire, frozen=True):
    """A :class:`~.messages.SampleBatch`'s values."""

    v: Literal[1]
    factory: str
    gateway: str
    session: str
    samples: list[WireSample]


class _Sample(_SampleFields, frozen=True, kw_only=True):
    """A sample as read, its timestamp still text (RFC 3339 only, as the models read it)."""

    ts: str


class _Batch(_Wire, frozen=True):
    v: Literal[1]
    factory: str
    gateway: str
    session: str
    samples: Annotated[list[_Sample], Meta(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)]


_DECODER: Final = msgspec.json.Decoder(_Batch)

# --- ids and names ----------------------------------------------------------------------------

_ID_RE: Final = re.compile(ID_PATTERN)
_NAME_RE: Final = re.compile(NAME_PATTERN)
_IDS_SEEN: Final[set[str]] = set()
_NAMES_SEEN: Final[set[str]] = set()
_SEEN_MAX: Final = 100_000
"""Ids and names checked already (they repeat in every batch); a set is emptied when full."""


class _RefusedError(Exception):
    """A rule is broken: the models decide, and word, the refusal."""


def _check(text: str, pattern: re.Pattern[str], seen: set[str]) -> None:
    """Refuse ``text`` unless it is an id (or a name, by ``pattern``). Callers test
    ``text in seen`` first, inline."""
    if not pattern.fullmatch(text):
        raise _RefusedError
    if len(seen) >= _SEEN_MAX:
        seen.clear()
    seen.add(text)


# --- decoding ---------------------------------------------------------------------------------


def decode_samples(topic: str, payload: bytes) -> WireBatch:
    """The sample batch received on ``topic``; raise :class:`~.messages.ContractError` if
    the contract refuses it (module docstring)."""
    where = checked_topic(topic, payload)
    if where.kind is not TopicKind.SAMPLES:
        raise ContractError("topic", f"{topic!r} is not a samples topic")
    try:
        batch = _decode(payload)
    except (msgspec.DecodeError, _RefusedError):  # a msgspec.ValidationError is a DecodeError
        model = decode(topic, payload)  # raises the models' refusal, or accepts
        assert isinstance(model, SampleBatch)
        return from_model(model)
    check_origin(where, batch)
    return batch


def from_model(batch: SampleBatch) -> WireBatch:
    """The structs holding ``batch``'s values."""
    return WireBatch(
        v=batch.v,
        factory=batch.factory,
        gateway=batch.gateway,
        session=batch.session,
        samples=[
            WireSample(
                machine=s.machine,
                seq=s.seq,
                ts=s.ts,
                interval_s=s.interval_s,
                state=s.state,
                durations_s=dict(s.durations_s),
                counters={n: WireCounter(c.delta, c.total) for n, c in s.counters.items()},
                signals={
                    n: WireSignal(x.last, x.mean, x.min, x.max, x.count)
                    for n, x in s.signals.items()
                },
                alarm=s.alarm,
                missing=list(s.missing),
            )
            for s in batch.samples
        ],
    )


def _decode(payload: bytes) -> WireBatch:
    read = _DECODER.decode(payload)
    ids = _IDS_SEEN
    for text in (read.factory, read.gateway, read.session):
        if text not in ids:
            _check(text, _ID_RE, ids)
    samples = []
    moments: dict[str, datetime] = {}  # the samples of a batch often share their ts
    previous = -1
    for item in read.samples:
        if item.seq <= previous:
            raise _RefusedError
        previous = item.seq
        samples.append(_sample(item, moments))
    return WireBatch(read.v, read.factory, read.gateway, read.session, samples)


def _sample(item: _Sample, moments: dict[str, datetime]) -> WireSample:
    machine, interval_s, durations = item.machine, item.interval_s, item.durations_s
    if machine not in _IDS_SEEN:
        _check(machine, _ID_RE, _IDS_SEEN)
    if (moment := moments.get(item.ts)) is None:
        moment = moments[item.ts] = _moment(item.ts)
    if abs(math.fsum(durations.values()) - interval_s) > DURATION_TOLERANCE_S:
        raise _RefusedError
    names = _NAMES_SEEN
    counters, signals, missing = item.counters, item.signals, item.missing
    for name in counters:
        if name not in names:
            _check(name, _NAME_RE, names)
    for name, stats in signals.items():
        if name not in names:
            _check(name, _NAME_RE, names)
        low, high = stats.min, stats.max
        slack = 1e-9 * max(1.0, abs(low), abs(high))  # SignalStats._ordered, verbatim
        if not (low <= stats.last <= high and low - slack <= stats.mean <= high + slack):
            raise _RefusedError
    if missing:
        for name in missing:
            if name not in names:
                _check(name, _NAME_RE, names)
        if not set(missing).isdisjoint(signals.keys() | counters.keys()):
            raise _RefusedError
    return WireSample(
        machine=machine,
        seq=item.seq,
        ts=moment,
        interval_s=interval_s,
        state=item.state,
        durations_s=durations,
        counters=counters,
        signals=signals,
        alarm=item.alarm,
        missing=missing,
    )


def _moment(text: str) -> datetime:
    try:
        moment = _utc(text)
    except ValueError as exc:
        raise _RefusedError from exc
    if not isinstance(moment, datetime):  # pragma: no cover - _utc parses every str
        raise _RefusedError
    return moment
