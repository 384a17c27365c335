"""InfluxDB's rows read back as the contract's objects: what :mod:`kyoso.store.influx`
wrote (kyoso/influx/lineprotocol.py) turned back into descriptions, statuses and samples.
InfluxDB's JSON writes whole floats as integers, hence the ``float()`` calls."""

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from kyoso.contract import GatewayStatus, MachineDescription, MachineState, Sample

from .base import StoredSample, StoreError

__all__ = ["Row", "datetime_of", "description_of", "status_of", "stored_sample_of"]

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


def stored_sample_of(row: Row) -> StoredSample | None:
    """A ``samples`` point read back: fixed fields by name, the others by their suffix.

    None for a point without a field every sample is written with (one InfluxDB holds only
    part of): it is no sample, and the machine has none, rather than the read failing."""
    required = ("gateway", "seq", "session", "interval_s", "state", "received_ns")
    lacking = [key for key in (*required, *_STATE_FIELDS) if row.get(key) is None]
    if lacking:
        log.warning(
            "the latest samples point of machine %r at %s lacks %s: read as no sample",
            row.get("machine"),
            datetime_of(row["time"]).isoformat(),
            ", ".join(lacking),
        )
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
