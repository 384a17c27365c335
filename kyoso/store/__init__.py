"""Telemetry storage: the :class:`Store` interface, its embedded SQLite implementation and
its InfluxDB implementation.

The ingest writes through :class:`StoreWriter`, the capacity service reads through
:class:`StoreReader`; see :mod:`kyoso.store.base` for the semantics both promise.
"""

from .base import (
    MAX_BUCKETS,
    BucketGrid,
    CounterWindow,
    GapReport,
    LatestSample,
    LiveRead,
    Refusal,
    SampleGroup,
    StateRun,
    StateWindow,
    Store,
    StoreAuthError,
    StoredSample,
    StoreError,
    StoreReader,
    StoreRefusedError,
    StoreUnavailableError,
    StoreWriter,
    check_aware,
    window_buckets,
)
from .influx import InfluxStore
from .sqlite import SqliteStore

__all__ = [
    "MAX_BUCKETS",
    "BucketGrid",
    "CounterWindow",
    "GapReport",
    "InfluxStore",
    "LatestSample",
    "LiveRead",
    "Refusal",
    "SampleGroup",
    "SqliteStore",
    "StateRun",
    "StateWindow",
    "Store",
    "StoreAuthError",
    "StoreError",
    "StoreReader",
    "StoreRefusedError",
    "StoreUnavailableError",
    "StoreWriter",
    "StoredSample",
    "check_aware",
    "window_buckets",
]
