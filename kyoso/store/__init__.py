"""Telemetry storage: the :class:`Store` interface and its embedded SQLite implementation.

The ingest writes through :class:`StoreWriter`, the capacity service reads through
:class:`StoreReader`; see :mod:`kyoso.store.base` for the semantics both promise.
"""

from .base import (
    MAX_BUCKETS,
    BucketGrid,
    CounterWindow,
    StateWindow,
    Store,
    StoredSample,
    StoreError,
    StoreReader,
    StoreUnavailableError,
    StoreWriter,
    check_aware,
    window_buckets,
)
from .sqlite import SqliteStore

__all__ = [
    "MAX_BUCKETS",
    "BucketGrid",
    "CounterWindow",
    "SqliteStore",
    "StateWindow",
    "Store",
    "StoreError",
    "StoreReader",
    "StoreUnavailableError",
    "StoreWriter",
    "StoredSample",
    "check_aware",
    "window_buckets",
]
