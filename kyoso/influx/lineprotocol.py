"""InfluxDB line protocol: escaping, and the points written for each message.

Pure functions, no I/O. Every function either returns one complete, safe line or raises
:class:`LineProtocolError`: no measurement, tag, field key or value can add a line, a tag
or a field. What is escaped and what is refused, and why (checked character by character
against InfluxDB 1.6.7 in tests/test_influx_lineprotocol.py), and the points each message
becomes, are in docs/storage.md (sections 2 and 3).

What a rewrite must replace is always written, because InfluxDB merges field sets when a
point is written again at the same key: hence all six state durations and
``ideal_cycle_time_s`` as 0.0 when absent. Status and gap report points are stamped with
the time they are written: the current one is the last one written (see
:mod:`kyoso.store.base`).

Why :class:`SampleLines` (and :func:`sample_point`, one sample's line) does not escape: it
is the ingest's hot path (one call per sample, the session's ids checked once per batch)
and a sample's tag values and field keys are contract ids and names
(``[a-z0-9][a-z0-9_-]*``), which line protocol never needs to escape. It checks each with
one regular expression instead (once: the ids and names seen are remembered), checks that
every number is a finite float or a 64-bit integer, and refuses anything else, so the
promise above holds for samples not built by the contract's validation too. The machine,
names and numbers of a :class:`~kyoso.contract.wire.WireSample` are not checked again: the
ingest's decoder (:mod:`kyoso.contract.wire`), the only maker of them, checked them.
"""

import functools
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from kyoso.contract import GatewayStatus, MachineDescription, MachineState, check_id
from kyoso.contract.wire import SampleLike, WireSample

__all__ = [
    "CAPACITY_DATABASE_SUFFIX",
    "DEFAULT_DATABASE_PREFIX",
    "MAX_TIME_NS",
    "MIN_TIME_NS",
    "RESERVED_FACTORY_IDS",
    "FieldValue",
    "LineProtocolError",
    "SampleLines",
    "database_name",
    "description_point",
    "escape_field_key",
    "escape_measurement",
    "escape_tag",
    "format_field_value",
    "gaps_point",
    "interval_ns",
    "line",
    "sample_point",
    "status_point",
    "timestamp_ns",
]

FieldValue = bool | int | float | str

MIN_TIME_NS: Final = -(2**63) + 2
"""Earliest timestamp InfluxDB stores (``models.MinNanoTime``, 1677-09-21)."""
MAX_TIME_NS: Final = 2**63 - 2
"""Latest timestamp InfluxDB stores (``models.MaxNanoTime``, 2262-04-11)."""
DEFAULT_DATABASE_PREFIX: Final = "kyoso_"
CAPACITY_DATABASE_SUFFIX: Final = "capacity"
"""The shared capacity database is ``<prefix>capacity``."""
RESERVED_FACTORY_IDS: Final = frozenset({CAPACITY_DATABASE_SUFFIX})
"""Factory ids whose database name would be a shared database's name."""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
_BREAKS: Final = ("\n", "\r")
_MEASUREMENT_ESCAPES: Final = str.maketrans({",": "\\,", " ": "\\ "})
_TAG_ESCAPES: Final = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})
_RESERVED_TAG_KEYS: Final = frozenset({"time", "_measurement", "_field"})
_PLAIN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""Text line protocol needs no escape for, anywhere: contract ids and names."""


class LineProtocolError(ValueError):
    """A value that cannot be written as line protocol without changing its meaning."""


def _check_utf8(text: str, what: str) -> None:
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise LineProtocolError(f"{what} {text[:80]!r} is not valid Unicode text") from exc


def _check_name(text: str, what: str) -> None:
    if not text:
        raise LineProtocolError(f"{what} must not be empty")
    if "\\" in text or "\n" in text or "\r" in text:
        raise LineProtocolError(
            f"{what} {text[:80]!r} contains a backslash or a line break, "
            "which line protocol cannot carry"
        )
    _check_utf8(text, what)


def _skipped(char: str) -> bool:
    """InfluxDB 1.x skips spaces, tabs and NUL before a line and before its first field."""
    return char.isspace() or char == "\x00"


@functools.lru_cache(maxsize=4096)  # keys and ids repeat in every point
def escape_measurement(name: str) -> str:
    """Escape a measurement name (commas and spaces)."""
    _check_name(name, "measurement")
    if name[0] == "#" or _skipped(name[0]):
        raise LineProtocolError(
            f"measurement {name[:80]!r} must not start with '#', whitespace or NUL"
        )
    return name.translate(_MEASUREMENT_ESCAPES)


@functools.lru_cache(maxsize=4096)  # keys and ids repeat in every point
def escape_tag(text: str, what: str = "tag") -> str:
    """Escape a tag key or tag value (commas, equals signs and spaces)."""
    _check_name(text, what)
    return text.translate(_TAG_ESCAPES)


@functools.lru_cache(maxsize=4096)  # keys and ids repeat in every point
def escape_field_key(key: str) -> str:
    """Escape a field key (commas, equals signs and spaces); ``time`` is refused."""
    _check_name(key, "field key")
    if key == "time":
        raise LineProtocolError("field key 'time' is reserved by InfluxDB")
    if _skipped(key[0]):
        raise LineProtocolError(f"field key {key[:80]!r} must not start with whitespace or NUL")
    return key.translate(_TAG_ESCAPES)


def format_field_value(value: FieldValue) -> str:
    """One field value: ``true``/``false``, ``12i``, ``1.5``/``1e+16``, or ``"text"``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise LineProtocolError(f"integer {value} does not fit in a signed 64-bit field")
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LineProtocolError(f"float field value {value!r} is not finite")
        return repr(value)  # shortest round-trip form, always with '.' or an exponent
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise LineProtocolError(
                f"string field value {value[:80]!r} contains a line break, "
                "which line protocol cannot escape"
            )
        _check_utf8(value, "string field value")
        return f'"{value.translate(_STRING_ESCAPES)}"'
    raise LineProtocolError(f"unsupported field value type {type(value).__name__}")


def timestamp_ns(moment: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime, exactly (no float rounding)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise LineProtocolError(f"timestamp {moment.isoformat()} has no time zone")
    ns = (moment - _EPOCH) // _MICROSECOND * 1000
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise LineProtocolError(f"timestamp {moment.isoformat()} is outside InfluxDB's range")
    return ns


def line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue],
    ts: datetime | int | None = None,
) -> str:
    """One point as one line; tags are sorted by key, as InfluxDB stores them."""
    if not fields:
        raise LineProtocolError("a point needs at least one field")
    parts = [escape_measurement(measurement)]
    for key in sorted(tags):
        if key in _RESERVED_TAG_KEYS:
            raise LineProtocolError(f"tag key {key!r} is reserved by InfluxDB")
        parts.append(f",{escape_tag(key, 'tag key')}={escape_tag(tags[key], 'tag value')}")
    parts.append(" ")
    parts.append(
        ",".join(f"{escape_field_key(k)}={format_field_value(v)}" for k, v in fields.items())
    )
    if ts is not None:
        ns = timestamp_ns(ts) if isinstance(ts, datetime) else ts
        if isinstance(ns, bool) or not MIN_TIME_NS <= ns <= MAX_TIME_NS:
            raise LineProtocolError(f"timestamp {ns!r} is outside InfluxDB's range")
        parts.append(f" {ns}")
    return "".join(parts)


def database_name(factory: str, prefix: str = DEFAULT_DATABASE_PREFIX) -> str:
    """The database holding one factory's raw telemetry: ``<prefix><factory>``."""
    check_id(factory, "factory")
    if factory in RESERVED_FACTORY_IDS:
        raise LineProtocolError(
            f"factory id {factory!r} is reserved: its database would be a shared one"
        )
    return prefix + factory


class _Fields(dict[str, FieldValue]):
    """Field map that refuses to overwrite a key (two names mapping to one field)."""

    def put(self, key: str, value: FieldValue) -> None:
        if key in self:
            raise LineProtocolError(f"field {key!r} would be written twice")
        self[key] = value


def interval_ns(interval_s: float) -> int:
    """A sample's interval in whole nanoseconds, at least one: ``start_ns`` is ``ts`` minus it."""
    return max(1, round(interval_s * 1e9))


def sample_point(
    factory: str,
    gateway: str,
    session: str,
    sample: SampleLike,
    *,
    received_at: datetime | int | None = None,
) -> str:
    """The ``samples`` line of one sample (``factory`` picks the database, not a tag);
    ``received_at`` (a datetime or nanoseconds), when given, is kept as ``received_ns``."""
    return SampleLines(factory, gateway, session, received_at=received_at)(sample)


class SampleLines:
    """Builds the ``samples`` lines of one gateway session's samples (``factory`` picks the
    database, not a tag); ``received_at`` (a datetime or nanoseconds), when given, is kept
    as ``received_ns``. The session's ids are checked once, here; ids and names are
    checked, not escaped, and numbers are checked, but for what the decoder of a
    :class:`~kyoso.contract.wire.WireSample` checked already: its machine, its names and its
    numbers (module docstring)."""

    __slots__ = ("_head", "_last", "_session", "_tail")

    def __init__(
        self, factory: str, gateway: str, session: str, *, received_at: datetime | int | None
    ) -> None:
        _plain((factory, gateway, session))
        self._head = f"samples,gateway={gateway},machine="
        self._session = f'i,session="{session}",interval_s='
        received = "" if received_at is None else f",received_ns={_received_ns(received_at)}i"
        self._tail = f"{received} "
        self._last: tuple[datetime | None, int] = (None, 0)
        """The last timestamp converted: a session's samples often share theirs."""

    def __call__(self, sample: SampleLike) -> str:
        """The line of ``sample``; raise :class:`LineProtocolError` if it cannot be written."""
        counters, signals, missing = sample.counters, sample.signals, sample.missing
        machine = sample.machine
        if type(sample) is not WireSample:  # a WireSample's machine and names are checked
            _plain((machine, *counters, *signals, *missing))
            _check_sample_numbers(sample)
        moment = sample.ts
        last, ts = self._last
        if moment is not last:
            if moment.tzinfo is None:
                raise LineProtocolError(f"timestamp {moment.isoformat()} has no time zone")
            ts = (moment - _EPOCH) // _MICROSECOND * 1000
            if not MIN_TIME_NS <= ts <= MAX_TIME_NS:
                raise LineProtocolError(
                    f"timestamp {moment.isoformat()} is outside InfluxDB's range"
                )
            self._last = (moment, ts)
        interval, get = sample.interval_s, sample.durations_s.get
        parts = [
            f"{self._head}{machine} seq={sample.seq}{self._session}{interval!r},"
            f"start_ns={ts - max(1, round(interval * 1e9))}i,"  # interval_ns, inline
            f'state="{_STATE_TEXT[sample.state]}",running_s={get(_RUNNING, 0.0)!r},'
            f"setup_s={get(_SETUP, 0.0)!r},down_s={get(_DOWN, 0.0)!r},"
            f"idle_s={get(_IDLE, 0.0)!r},planned_stop_s={get(_PLANNED, 0.0)!r},"
            f"unknown_s={get(_UNKNOWN, 0.0)!r}"
        ]
        for name in sorted(counters) if len(counters) > 1 else counters:
            counter = counters[name]
            if (total := counter.total) is None:
                parts.append(f",{name}_delta={counter.delta}i")
            else:
                if total > _INT64_MAX:  # a raw 64-bit reading: two's complement (docstring)
                    total -= 2**64
                parts.append(f",{name}_delta={counter.delta}i,{name}_total={total}i")
        for name in sorted(signals) if len(signals) > 1 else signals:
            stats = signals[name]
            parts.append(
                f",{name}_last={stats.last!r},{name}_mean={stats.mean!r},"
                f"{name}_min={stats.min!r},{name}_max={stats.max!r},{name}_count={stats.count}i"
            )
        if (alarm := sample.alarm) is not None:
            parts.append(f",alarm={alarm}i")
        if missing:
            parts.append(f',missing="{",".join(missing)}"')
        parts.append(f"{self._tail}{ts}")
        return "".join(parts)


def _received_ns(received_at: datetime | int) -> int:
    received = timestamp_ns(received_at) if isinstance(received_at, datetime) else received_at
    if type(received) is not int or not _INT64_MIN <= received <= _INT64_MAX:
        raise LineProtocolError(f"received_at {received!r} is not a 64-bit integer")
    return received


def _check_sample_numbers(sample: SampleLike) -> None:
    """Refuse what :func:`sample_point` would format but line protocol would misread: a
    float field that is not a finite ``float`` (``repr`` of anything else is no number), or
    an integer field that is not an ``int`` within signed 64 bits (a bool is no integer)."""
    durations, counters, signals = sample.durations_s, sample.counters, sample.signals
    floats = [sample.interval_s, *durations.values()]
    ints = [sample.seq, *(c.delta for c in counters.values())]
    for counter in counters.values():
        if (total := counter.total) is not None:  # two's complement above 2**63 - 1
            ints.append(
                total - 2**64 if type(total) is int and _INT64_MAX < total < 2**64 else total
            )
    for stats in signals.values():
        floats += (stats.last, stats.mean, stats.min, stats.max)
        ints.append(stats.count)
    if sample.alarm is not None:
        ints.append(sample.alarm)
    for value in floats:
        if type(value) is not float or value - value != 0.0:  # NaN and infinities
            raise LineProtocolError(f"float field value {value!r} is not a finite float")
    for number in ints:
        if type(number) is not int or not _INT64_MIN <= number <= _INT64_MAX:
            raise LineProtocolError(f"integer {number!r} does not fit in a signed 64-bit field")


_STATE_TEXT: Final = {state: state.value for state in MachineState}
_RUNNING, _SETUP, _DOWN, _IDLE, _PLANNED, _UNKNOWN = (
    MachineState.RUNNING,
    MachineState.SETUP,
    MachineState.DOWN,
    MachineState.IDLE,
    MachineState.PLANNED_STOP,
    MachineState.UNKNOWN,
)
_PLAIN_SEEN: Final[set[str]] = set()
"""Ids and names :func:`_plain` has checked already: they repeat in every sample."""
_PLAIN_SEEN_MAX: Final = 100_000


def _plain(texts: tuple[str, ...]) -> None:
    """Refuse text that is not a contract id or name (a set lookup once seen)."""
    seen = _PLAIN_SEEN
    for text in texts:
        if text in seen:
            continue
        if type(text) is not str or not _PLAIN.fullmatch(text):
            raise LineProtocolError(f"{str(text)[:80]!r} is not a contract id or name")
        if len(seen) >= _PLAIN_SEEN_MAX:
            seen.clear()
        seen.add(text)


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def description_point(description: MachineDescription) -> str:
    """The ``machines`` line of a machine description, at its ``updated_at``."""
    fields = _Fields(
        name=description.name,
        capabilities=_compact_json(
            [c.model_dump(mode="json", exclude_none=True) for c in description.capabilities]
        ),
        calendar=_compact_json(description.calendar.model_dump(mode="json", exclude_none=True)),
    )
    fields.put("ideal_cycle_time_s", float(description.ideal_cycle_time_s or 0.0))
    fields.put("share_capacity", description.sharing.capacity)
    fields.put("share_kpis", description.sharing.kpis)
    tags = {"gateway": description.gateway, "machine": description.machine}
    return line("machines", tags, fields, description.updated_at)


def status_point(status: GatewayStatus, *, written_at: datetime | int) -> str:
    """The ``gateway_status`` line of a gateway status, at ``written_at`` (the store's write
    time: a datetime or nanoseconds), with the gateway's own ``ts`` as ``ts_ns``."""
    fields: dict[str, FieldValue] = {
        "status": status.status,
        "reason": status.reason,
        "session": status.session,
        "software": status.software,
        "ts_ns": timestamp_ns(status.ts),
    }
    return line("gateway_status", {"gateway": status.gateway}, fields, written_at)


def gaps_point(
    gateway: str, missing: int, oldest_s: float, at: datetime, *, written_at: datetime | int
) -> str:
    """The ``gaps`` line of a gateway's gap report, at ``written_at`` (the store's write
    time, as for a status), with when the ingest counted the gaps as ``at_ns``."""
    fields: dict[str, FieldValue] = {
        "missing": missing,
        "oldest_s": float(oldest_s),
        "at_ns": timestamp_ns(at),
    }
    return line("gaps", {"gateway": gateway}, fields, written_at)
