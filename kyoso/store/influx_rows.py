"""InfluxDB's rows read back as the contract's objects: what :mod:`kyoso.store.influx`
wrote (kyoso/influx/lineprotocol.py) turned back into descriptions, statuses and samples.
InfluxDB's JSON writes whole floats as integers, hence the ``float()`` calls."""

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from kyoso.contract import GatewayStatus, MachineDescription, MachineState, Sample

from .base import GapReport, LatestSample, StoredSample, StoreError

__all__ = [
    "COUNTER_QUANTITY",
    "LATEST_FIELDS",
    "STATE_QUANTITY",
    "Quantity",
    "RawRow",
    "Row",
    "datetime_of",
    "description_of",
    "description_of_raw",
    "gaps_of",
    "latest_of",
    "latest_of_raw",
    "raw_row",
    "row_values",
    "status_of",
    "statuses_of",
    "stored_sample_of",
    "stored_sample_of_raw",
]

log = logging.getLogger(__name__)

Row = dict[str, Any]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_STATES: Final = tuple(MachineState)
_STATE_FIELDS: Final = tuple(f"{state.value}_s" for state in _STATES)
_SAMPLE_FIELDS: Final = frozenset(
    {"seq", "session", "interval_s", "start_ns", "state", "alarm", "missing"}
    | {"received_ns", "time", "machine", "gateway", *_STATE_FIELDS}
)
_COUNTER_PARTS: Final = frozenset({"delta", "total"})
_SIGNAL_PARTS: Final = frozenset({"last", "mean", "min", "max", "count"})


def datetime_of(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def description_of(factory: str, row: Row) -> MachineDescription:
    return MachineDescription.model_validate(
        {
            "factory": factory,
            "gateway": row["gateway"],
            "machine": row["machine"],
            "name": row["name"],
            "updated_at": datetime_of(row["time"]),
            "capabilities": json.loads(row["capabilities"]),
            "ideal_cycle_time_s": float(row["ideal_cycle_time_s"]) or None,
            "calendar": json.loads(row["calendar"]),
            "sharing": {"capacity": row["share_capacity"], "kpis": row["share_kpis"]},
        }
    )


def status_of(factory: str, row: Row) -> GatewayStatus:
    fields = {key: row[key] for key in ("gateway", "session", "status", "reason", "software")}
    return GatewayStatus.model_validate(
        {"factory": factory, "ts": datetime_of(row["ts_ns"]), **fields}
    )


def statuses_of(factory: str, rows: list[Row]) -> list[GatewayStatus]:
    """The gateways' latest ``gateway_status`` points, sorted by gateway."""
    return sorted((status_of(factory, row) for row in rows), key=lambda s: s.gateway)


def gaps_of(rows: list[Row]) -> dict[str, GapReport]:
    """The gateways' latest ``gaps`` points, by gateway."""
    return {
        r["gateway"]: GapReport(r["missing"], float(r["oldest_s"]), datetime_of(r["at_ns"]))
        for r in rows
    }


LATEST_FIELDS: Final = '"seq", "state", "alarm", "received_ns", "gateway"'
"""What a live view reads of a machine's latest ``samples`` point (:func:`latest_of`); its
``seq``, which every sample is written with, so that a point without the others shows."""


def _lacks(row: Row, required: Iterable[str]) -> bool:
    """Whether a ``samples`` point lacks a field every sample is written with (one InfluxDB
    holds only part of); warned: it is no sample, and the machine has none, rather than
    the read failing."""
    lacking = [key for key in required if row.get(key) is None]
    if lacking:
        log.warning(
            "the latest samples point of machine %r at %s lacks %s: read as no sample",
            row.get("machine"),
            datetime_of(row["time"]).isoformat(),
            ", ".join(lacking),
        )
    return bool(lacking)


def latest_of(row: Row) -> LatestSample | None:
    """A machine's latest ``samples`` point, of :data:`LATEST_FIELDS`, as a live view shows
    it (None: partly held, as in :func:`stored_sample_of`)."""
    if _lacks(row, ("gateway", "seq", "state", "received_ns")):
        return None
    try:
        state = MachineState(row["state"])
    except ValueError:
        raise StoreError(f"samples field state {row['state']!r} is no machine state") from None
    ts, received_at = datetime_of(row["time"]), datetime_of(row["received_ns"])
    return LatestSample(row["gateway"], ts, state, row.get("alarm"), received_at)


def stored_sample_of(row: Row) -> StoredSample | None:
    """A ``samples`` point read back: fixed fields by name, the others by their suffix
    (None: partly held, see :func:`_lacks`)."""
    required = ("gateway", "seq", "session", "interval_s", "state", "received_ns")
    if _lacks(row, (*required, *_STATE_FIELDS)):
        return None
    durations = {
        state: float(row[field])
        for state, field in zip(_STATES, _STATE_FIELDS, strict=True)
        if row[field]  # zero durations are not reported (base.py)
    }
    counters: dict[str, dict[str, int]] = {}
    signals: dict[str, dict[str, float]] = {}
    for key, value in row.items():
        if value is None or key in _SAMPLE_FIELDS:
            continue
        name, _, part = key.rpartition("_")
        if part in _COUNTER_PARTS:
            total = part == "total" and value < 0  # stored as total - 2**64
            counters.setdefault(name, {})[part] = value + 2**64 if total else value
        elif part in _SIGNAL_PARTS:
            signals.setdefault(name, {})[part] = value if part == "count" else float(value)
        else:
            raise StoreError(f"samples field {key!r} is not one this store writes")
    sample = Sample.model_validate(
        {
            "machine": row["machine"],
            "seq": row["seq"],
            "ts": datetime_of(row["time"]),
            "interval_s": float(row["interval_s"]),
            "state": row["state"],
            "durations_s": durations,
            "counters": counters,
            "signals": signals,
            "alarm": row.get("alarm"),
            "missing": row["missing"].split(",") if row.get("missing") else [],
        }
    )
    received_at = datetime_of(row["received_ns"])
    return StoredSample(row["gateway"], row["session"], sample, received_at)


RawRow = tuple[str, tuple[tuple[str, Any], ...]]
"""A factory and a row's fields, hashable: what :class:`~kyoso.store.base.ParseMemo`
compares."""


def raw_row(factory: str, row: Row) -> RawRow:
    """``row`` of ``factory`` as a :data:`RawRow`."""
    return factory, tuple(row.items())


def description_of_raw(raw: RawRow) -> MachineDescription:
    """:func:`description_of` a :data:`RawRow`."""
    return description_of(raw[0], dict(raw[1]))


def stored_sample_of_raw(raw: RawRow) -> StoredSample | None:
    """:func:`stored_sample_of` a :data:`RawRow`."""
    return stored_sample_of(dict(raw[1]))


def latest_of_raw(raw: RawRow) -> LatestSample | None:
    """:func:`latest_of` a :data:`RawRow`."""
    return latest_of(dict(raw[1]))


@dataclass(frozen=True, slots=True)
class Quantity:
    """What a window query sums per bucket: the state durations, or the counter deltas."""

    sums: str
    """Aggregates, each column named ``sum_<field>``."""
    firsts: str
    """``FIRST`` of each summed field, named ``first_<field>``; empty if not exact."""
    fields: str
    """The summed fields in a raw select."""
    owns: Callable[[str], bool]
    """Whether a field is summed (``interval_s`` too, for states: the covered time)."""


STATE_QUANTITY: Final = Quantity(
    sums=", ".join(f'SUM("{f}") AS "sum_{f}"' for f in (*_STATE_FIELDS, "interval_s")),
    firsts="".join(f', FIRST("{f}") AS "first_{f}"' for f in _STATE_FIELDS),
    fields=", ".join(f'"{f}"' for f in _STATE_FIELDS),
    owns=frozenset((*_STATE_FIELDS, "interval_s")).__contains__,
)
COUNTER_QUANTITY: Final = Quantity(
    sums="SUM(/_delta$/)", firsts="", fields="/_delta$/", owns=lambda f: f.endswith("_delta")
)


def row_values(row: Row, quantity: Quantity, prefix: str = "") -> dict[str, float]:
    """The summed fields a row carries (those named ``<prefix><field>``), as floats."""
    return {
        key[len(prefix) :]: float(value)
        for key, value in row.items()
        if value is not None and key.startswith(prefix) and quantity.owns(key[len(prefix) :])
    }
