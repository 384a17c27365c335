"""The embedded store: one SQLite file, for the demo and single-shop deployments.

Design, and why:

- **One connection on one dedicated thread** (a single-worker executor): no sqlite3 call
  blocks the event loop, the connection stays on the thread that made it, and calls run
  in the order they were made, which :meth:`write_status` relies on (``to_thread`` would
  scatter them over a pool, needing a lock and losing the order). A call whose task is
  cancelled still completes on the thread; harmless, as writes are idempotent.
- **WAL**, so readers outside this process never block the writer; ``synchronous=full``
  by default, so a write the ingest acknowledged survives a power cut (one fsync a batch).
- **Samples keyed by (series, ts)**, ``WITHOUT ROWID``; ``series`` is an integer standing
  for (factory, machine), so the key is (factory, machine, ts) and a replay replaces its
  row. Integer ids for series and for (gateway, session) save some 60 bytes a row (the
  session is a 36-character UUID); the primary key is the only index a window query needs.
- **One REAL column per state** (NULL when the sample did not carry it): window sums are
  ``TOTAL()`` over columns, 1.6x faster than ``json_extract`` from a JSON column (measured:
  0.23 s against 0.37 s for 345 600 rows), and the six states are fixed by contract v1.
  Counter deltas have their own table keyed (series, ts, name). What is only read back
  whole (counter totals, which may exceed SQLite's 64-bit integers, signals, missing) is
  JSON, and most of a row. Times are integer microseconds: bucket arithmetic is exact.
"""

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from kyoso.contract import (
    MAX_INTERVAL_S,
    GatewayStatus,
    MachineDescription,
    MachineState,
    Sample,
    check_id,
)
from kyoso.contract.wire import SampleLike

from .base import (
    BucketGrid,
    CounterWindow,
    GapReport,
    LatestSample,
    LiveRead,
    ParseMemo,
    Refusal,
    RunRow,
    SampleGroup,
    StateRun,
    StateWindow,
    StoredSample,
    StoreError,
    StoreUnavailableError,
    chain_runs,
    check_aware,
    check_window,
    window_buckets,
)

__all__ = ["SqliteStore"]

Bucket = tuple[datetime, datetime]
_T = TypeVar("_T")

_SCHEMA_VERSION: Final = 1
_STATES: Final = tuple(MachineState)
_COLS: Final = ", ".join(f"d_{s.value}" for s in _STATES)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_MAX_INTERVAL_US: Final = int(MAX_INTERVAL_S * 1_000_000)
# SQLite primary result codes worth retrying: BUSY, LOCKED, IOERR, FULL, CANTOPEN.
_RETRYABLE: Final = frozenset({5, 6, 10, 13, 14})

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, factory TEXT NOT NULL,
    machine TEXT NOT NULL, UNIQUE (factory, machine));
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY, factory TEXT NOT NULL, gateway TEXT NOT NULL,
    session TEXT NOT NULL, UNIQUE (factory, gateway, session));
CREATE TABLE IF NOT EXISTS samples (
    series INTEGER NOT NULL, ts INTEGER NOT NULL, start INTEGER NOT NULL,
    source INTEGER NOT NULL, seq INTEGER NOT NULL, interval_s REAL NOT NULL,
    state TEXT NOT NULL, {", ".join(f"d_{s.value} REAL" for s in _STATES)},
    alarm INTEGER, extra TEXT, received INTEGER NOT NULL,
    PRIMARY KEY (series, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    series INTEGER NOT NULL, ts INTEGER NOT NULL, name TEXT NOT NULL,
    start INTEGER NOT NULL, delta INTEGER NOT NULL,
    PRIMARY KEY (series, ts, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS descriptions (
    factory TEXT NOT NULL, machine TEXT NOT NULL, updated_at INTEGER NOT NULL,
    body TEXT NOT NULL, PRIMARY KEY (factory, machine)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS statuses (
    factory TEXT NOT NULL, gateway TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (factory, gateway)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gaps (
    factory TEXT NOT NULL, gateway TEXT NOT NULL, missing INTEGER NOT NULL,
    oldest_s REAL NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (factory, gateway)) WITHOUT ROWID;
"""

# One pass over the window's rows. A sample wholly inside one bucket is summed into group
# k (its bucket); any other sample overlapping the window (straddling a bucket or window
# edge) forms a group of its own (k = -1, keyed by its ts) and is prorated in Python:
# there are at most about one per machine and bucket edge.
_SCAN: Final = """
SELECT series, {names}k, CASE WHEN k < 0 THEN ts END AS sts, MIN(start), MAX(ts), {sums}
FROM (SELECT *, CASE WHEN ts <= :e AND start >= :s + ((ts - 1 - :s) / :b) * :b
                     THEN (ts - 1 - :s) / :b ELSE -1 END AS k
      FROM {table}
      WHERE series IN (SELECT id FROM series WHERE factory = :f AND machine = coalesce(:m, machine))
        AND ts > :s AND ts < :e + :max_iv AND start < :e)
GROUP BY series, {names}k, sts
"""
_STATE_SCAN: Final = _SCAN.format(
    names="",
    table="samples",
    sums=", ".join(f"TOTAL(d_{s.value})" for s in _STATES) + ", SUM(ts - start)",
)
_COUNTER_SCAN: Final = _SCAN.format(names="name, ", table="counters", sums="TOTAL(delta)")
_INSERT_SAMPLE: Final = (
    f"INSERT OR REPLACE INTO samples VALUES ({', '.join('?' * (10 + len(_STATES)))})"  # noqa: S608
)
_LATEST: Final = f"""
SELECT m.machine, src.gateway, src.session, x.seq, x.ts, x.interval_s, x.state, {_COLS},
       x.alarm, x.extra, x.received
FROM series m
JOIN samples x ON x.series = m.id AND x.ts = (SELECT MAX(ts) FROM samples WHERE series = m.id)
JOIN sources src ON src.id = x.source
WHERE m.factory = ?
"""  # noqa: S608 (column names from the MachineState enum)
_MACHINES: Final = "SELECT machine, body FROM descriptions WHERE factory = ? ORDER BY machine"
_STATUSES: Final = "SELECT body FROM statuses WHERE factory = ? ORDER BY gateway"
_GAPS: Final = "SELECT gateway, missing, oldest_s, at FROM gaps WHERE factory = ? ORDER BY gateway"
_LIVE: Final = (_STATUSES, _LATEST, _GAPS)
"""The reads of a live view (:meth:`SqliteStore.live`), in the order of its fields."""
# The samples a run of a state is made of (base.py); {column} is a d_<state> column.
_RUNS: Final = """
SELECT m.machine, x.start, x.ts, x.{column}, x.state = :state
FROM series m JOIN samples x ON x.series = m.id
WHERE m.factory = :f AND x.ts > :s AND x.ts <= :e AND x.{column} > 0
"""
_ONE: Final = "SELECT :m, coalesce((SELECT id FROM series WHERE factory = :f AND machine = :m), -1)"
_DESCRIBED_OR_SAMPLED: Final = """
SELECT machine, id FROM series
WHERE factory = :f AND EXISTS (SELECT 1 FROM samples WHERE series = series.id
                               AND ts > :s AND ts < :e + :max_iv AND start < :e)
UNION ALL SELECT machine, -1 FROM descriptions WHERE factory = :f
"""
# The id of a series or source, made on first use (the no-op update makes RETURNING work).
_SERIES_ID: Final = """INSERT INTO series (factory, machine) VALUES (?, ?)
    ON CONFLICT DO UPDATE SET machine = excluded.machine RETURNING id"""
_SOURCE_ID: Final = """INSERT INTO sources (factory, gateway, session) VALUES (?, ?, ?)
    ON CONFLICT DO UPDATE SET session = excluded.session RETURNING id"""


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // _US


def _dt(us: int) -> datetime:
    return _EPOCH + us * _US


class SqliteStore:
    """The :class:`~kyoso.store.base.Store` on one SQLite file (see the module docstring).

    Use ``async with SqliteStore(path) as store:``, or :meth:`open` and :meth:`close`.
    """

    def __init__(self, path: Path, *, synchronous: Literal["full", "normal"] = "full") -> None:
        self.path = path
        self._synchronous = synchronous
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # touched on the worker thread only
        self._series: dict[tuple[str, str], int] = {}
        self._sources: dict[tuple[str, str, str], int] = {}
        self._descriptions = ParseMemo[str, MachineDescription](
            MachineDescription.model_validate_json
        )
        self._latest = ParseMemo(_stored_sample)

    async def open(self) -> Self:
        """Create the file and schema if needed; start the worker thread."""
        if self._executor is not None:
            raise StoreError("store is already open")
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kyoso-sqlite-store")
        try:
            await self._call(self._connect)
        except BaseException:
            self._executor.shutdown()
            self._executor = None
            raise
        return self

    async def close(self) -> None:
        """Close the connection and stop the worker thread; idempotent."""
        if self._executor is None:
            return
        try:
            await self._call(self._disconnect)
        finally:
            self._executor.shutdown()
            self._executor = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- writes -----------------------------------------------------------------------

    async def write_samples(
        self,
        factory: str,
        gateway: str,
        session: str,
        samples: Sequence[SampleLike],
        *,
        received_at: datetime | None = None,
    ) -> list[Refusal]:
        return await self.write_batch(
            [SampleGroup(factory, gateway, session, samples, received_at)]
        )

    async def write_batch(self, groups: Sequence[SampleGroup]) -> list[Refusal]:
        now = datetime.now(UTC)
        rows = []
        for group in groups:
            check_id(group.factory, "factory")
            at = now if group.received_at is None else check_aware(group.received_at, "received_at")
            if group.samples:
                rows.append((group, _us(at)))
        if rows:
            await self._call(self._write_batch, rows)
        return []  # every contract sample fits a row

    async def write_description(self, desc: MachineDescription) -> None:
        sql = """INSERT INTO descriptions VALUES (?, ?, ?, ?)
                 ON CONFLICT (factory, machine) DO UPDATE
                 SET updated_at = excluded.updated_at, body = excluded.body
                 WHERE excluded.updated_at >= descriptions.updated_at"""
        row = (desc.factory, desc.machine, _us(desc.updated_at), desc.model_dump_json())
        await self._call(self._sql, sql, row)

    async def remove_description(self, factory: str, machine: str) -> None:
        sql = "DELETE FROM descriptions WHERE factory = ? AND machine = ?"
        await self._call(self._sql, sql, (factory, machine))

    async def write_status(self, status: GatewayStatus) -> None:
        sql = "INSERT OR REPLACE INTO statuses VALUES (?, ?, ?)"
        row = (status.factory, status.gateway, status.model_dump_json())
        await self._call(self._sql, sql, row)

    async def write_gaps(
        self, factory: str, gateway: str, missing: int, oldest_s: float, at: datetime
    ) -> None:
        row = (factory, gateway, missing, oldest_s, _us(check_aware(at, "at")))
        await self._call(self._sql, "INSERT OR REPLACE INTO gaps VALUES (?, ?, ?, ?, ?)", row)

    # --- reads ------------------------------------------------------------------------

    async def factories(self) -> list[str]:
        sql = """SELECT factory FROM series UNION SELECT factory FROM descriptions
                 UNION SELECT factory FROM statuses UNION SELECT factory FROM gaps ORDER BY 1"""
        return [r[0] for r in await self._call(self._sql, sql, ())]

    async def machines(self, factory: str) -> list[MachineDescription]:
        return self._machines(factory, await self._call(self._sql, _MACHINES, (factory,)))

    async def gateway_status(self, factory: str) -> list[GatewayStatus]:
        return _statuses(await self._call(self._sql, _STATUSES, (factory,)))

    async def gateway_gaps(self, factory: str) -> dict[str, GapReport]:
        return _gaps(await self._call(self._sql, _GAPS, (factory,)))

    async def live(self, factory: str, on_read: Callable[[], object] | None = None) -> LiveRead:
        """The three reads in one turn of the store's thread, of one snapshot."""
        statuses, latest, gaps = await self._call(self._live_rows, factory, on_read)
        heard = {m: LatestSample.of(s) for m, s in self._latest_samples(factory, latest).items()}
        return LiveRead(_statuses(statuses), heard, _gaps(gaps))

    async def latest_samples(self, factory: str) -> dict[str, StoredSample]:
        return self._latest_samples(factory, await self._call(self._sql, _LATEST, (factory,)))

    def _machines(self, factory: str, rows: list[Any]) -> list[MachineDescription]:
        return [self._descriptions((factory, machine), body) for machine, body in rows]

    def _latest_samples(self, factory: str, rows: list[Any]) -> dict[str, StoredSample]:
        return {row[0]: self._latest((factory, row[0]), tuple(row)) for row in rows}

    async def state_seconds(
        self,
        factory: str,
        machine: str | None,
        start: datetime,
        end: datetime,
        bucket_s: float | None = None,
    ) -> list[StateWindow]:
        buckets = window_buckets(start, end, bucket_s)
        return await self._call(self._state_windows, factory, machine, buckets, bucket_s)

    async def counter_totals(
        self,
        factory: str,
        machine: str | None,
        start: datetime,
        end: datetime,
        bucket_s: float | None = None,
    ) -> list[CounterWindow]:
        buckets = window_buckets(start, end, bucket_s)
        return await self._call(self._counter_windows, factory, machine, buckets, bucket_s)

    async def state_runs(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[StateRun]:
        start, end = check_window(start, end)
        args = {"f": factory, "s": _us(start), "e": _us(end), "state": state.value}
        return await self._call(lambda: chain_runs(self._state_run_rows(state, args)))

    async def state_run_rows(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[RunRow]:
        start, end = check_window(start, end)
        args = {"f": factory, "s": _us(start), "e": _us(end), "state": state.value}
        return await self._call(self._state_run_rows, state, args)

    # --- on the worker thread ---------------------------------------------------------

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise StoreError("store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            kind = StoreUnavailableError if code in _RETRYABLE else StoreError
            raise kind(f"sqlite store {self.path}: {exc}") from exc

    def _connect(self) -> None:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise StoreError(f"{self.path} has schema {version}, not {_SCHEMA_VERSION}")
            # executescript commits any open transaction first: the script brings its own.
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;"
            )
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
            raise
        self._db = db

    def _disconnect(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    def _sql(self, sql: str, args: tuple[object, ...] | dict[str, object]) -> list[Any]:
        return self._conn().execute(sql, args).fetchall()

    def _live_rows(self, factory: str, on_read: Callable[[], object] | None) -> list[list[Any]]:
        if on_read is not None:
            on_read()
        with _reading(self._conn()) as db:
            return [db.execute(sql, (factory,)).fetchall() for sql in _LIVE]

    def _state_windows(
        self, factory: str, machine: str | None, buckets: list[Bucket], bucket_s: float | None
    ) -> list[StateWindow]:
        if not buckets:
            return []
        grid, args = _grid(factory, machine, buckets, bucket_s)
        cells: dict[tuple[int, int], list[float]] = {}
        with _reading(self._conn()) as db:
            for series, k, _sts, first, last, *values in db.execute(_STATE_SCAN, args):
                for b, share, overlap in _parts(grid, k, first, last):
                    cell = cells.setdefault((series, b), [0.0] * len(values))
                    for i, value in enumerate(values[:-1]):
                        cell[i] += value * share
                    cell[-1] += values[-1] if k >= 0 else overlap  # covered µs
            reported = _reported(db, args)
        empty = [0.0] * (len(_STATES) + 1)
        result = []
        for name, series in reported.items():
            for b, (w0, w1) in enumerate(buckets):
                *seconds, covered_us = cells.get((series, b), empty)
                no_data_s = max(0.0, (w1 - w0).total_seconds() - covered_us / 1e6)
                by_state = dict(zip(_STATES, seconds, strict=True))
                result.append(StateWindow(name, w0, w1, by_state, no_data_s))
        return result

    def _state_run_rows(self, state: MachineState, args: dict[str, object]) -> list[RunRow]:
        rows = self._sql(_RUNS.format(column=f"d_{state.value}"), args)
        return [(m, _dt(first), _dt(ts), d, bool(ended)) for m, first, ts, d, ended in rows]

    def _counter_windows(
        self, factory: str, machine: str | None, buckets: list[Bucket], bucket_s: float | None
    ) -> list[CounterWindow]:
        if not buckets:
            return []
        grid, args = _grid(factory, machine, buckets, bucket_s)
        totals: dict[tuple[int, int], dict[str, float]] = {}
        with _reading(self._conn()) as db:
            for series, name, k, _sts, first, last, delta in db.execute(_COUNTER_SCAN, args):
                for b, share, _overlap in _parts(grid, k, first, last):
                    cell = totals.setdefault((series, b), {})
                    cell[name] = cell.get(name, 0.0) + delta * share
            reported = _reported(db, args)
        return [
            CounterWindow(name, w0, w1, totals.get((series, b), {}))
            for name, series in reported.items()
            for b, (w0, w1) in enumerate(buckets)
        ]

    def _write_batch(self, groups: Sequence[tuple[SampleGroup, int]]) -> None:
        """Every group's samples (with when they were received) in one transaction."""
        db = self._conn()
        try:
            with _transaction(db):
                rows, keys, counters = [], [], []
                for group, received in groups:
                    key = (group.factory, group.gateway, group.session)
                    source = _id(db, _SOURCE_ID, self._sources, key)
                    for sample in group.samples:
                        machine = (group.factory, sample.machine)
                        series = _id(db, _SERIES_ID, self._series, machine)
                        ts = _us(sample.ts)
                        start = ts - max(1, round(sample.interval_s * 1e6))
                        durations = (sample.durations_s.get(state) for state in _STATES)
                        head = (series, ts, start, source, sample.seq, sample.interval_s)
                        tail = (sample.alarm, _extra(sample), received)
                        rows.append((*head, sample.state.value, *durations, *tail))
                        keys.append((series, ts))
                        counters += [
                            (series, ts, n, start, c.delta) for n, c in sample.counters.items()
                        ]
                db.executemany("DELETE FROM counters WHERE series = ? AND ts = ?", keys)
                db.executemany(_INSERT_SAMPLE, rows)
                db.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?, ?)", counters)
        except BaseException:
            self._series.clear()  # ids made in the rolled-back transaction are gone
            self._sources.clear()
            raise


def _grid(
    factory: str, machine: str | None, buckets: list[Bucket], bucket_s: float | None
) -> tuple[BucketGrid, dict[str, object]]:
    start, end = _us(buckets[0][0]), _us(buckets[-1][1])
    grid = BucketGrid(start, end, end - start if bucket_s is None else round(bucket_s * 1e6))
    window = {"s": start, "e": end, "b": grid.step, "max_iv": _MAX_INTERVAL_US}
    return grid, {"f": factory, "m": machine, **window}


def _parts(grid: BucketGrid, k: int, first: int, last: int) -> Iterator[tuple[int, float, int]]:
    """A scan row's buckets: a group wholly inside bucket ``k``, or one sample prorated."""
    return iter([(k, 1.0, last - first)]) if k >= 0 else grid.shares(first, last)


def _reported(db: sqlite3.Connection, args: dict[str, object]) -> dict[str, int]:
    """Machine -> series id (-1: no samples in the window) of the machines to report:
    the one asked for, or those described or with a sample overlapping the window."""
    found: dict[str, int] = {}
    for name, series in db.execute(_DESCRIBED_OR_SAMPLED if args["m"] is None else _ONE, args):
        found[name] = max(found.get(name, -1), series)
    return dict(sorted(found.items()))


def _id(db: sqlite3.Connection, sql: str, cache: dict[Any, int], key: tuple[str, ...]) -> int:
    if (found := cache.get(key)) is None:
        found = cache[key] = db.execute(sql, key).fetchone()[0]
    return found


def _statuses(rows: list[Any]) -> list[GatewayStatus]:
    return [GatewayStatus.model_validate_json(r[0]) for r in rows]


def _gaps(rows: list[Any]) -> dict[str, GapReport]:
    return {gateway: GapReport(n, oldest_s, _dt(at)) for gateway, n, oldest_s, at in rows}


@contextlib.contextmanager
def _reading(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One snapshot for the several statements of a query."""
    db.execute("BEGIN")
    try:
        yield db
    finally:
        db.execute("COMMIT")


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _extra(sample: SampleLike) -> str | None:
    """What a window query never reads, as JSON (counter totals may exceed 64-bit ints)."""
    counters, signals, missing = sample.counters, sample.signals, sample.missing
    if not (counters or signals or missing):
        return None
    extra = {
        "counters": {n: {"delta": c.delta, "total": c.total} for n, c in counters.items()},
        "signals": {
            n: {"last": s.last, "mean": s.mean, "min": s.min, "max": s.max, "count": s.count}
            for n, s in signals.items()
        },
        "missing": list(missing),
    }
    return json.dumps(extra, separators=(",", ":"), allow_nan=False)


def _stored_sample(row: Sequence[Any]) -> StoredSample:
    machine, gateway, session, seq, ts, interval_s, state = row[:7]
    durations = row[7 : 7 + len(_STATES)]
    alarm, extra, received = row[7 + len(_STATES) :]
    durations_s = {s: d for s, d in zip(_STATES, durations, strict=True) if d}  # no zeros
    fields = {"machine": machine, "seq": seq, "ts": _dt(ts), "interval_s": interval_s}
    fields |= {"state": state, "durations_s": durations_s, "alarm": alarm}
    sample = Sample.model_validate(fields | (json.loads(extra) if extra else {}))
    return StoredSample(gateway=gateway, session=session, sample=sample, received_at=_dt(received))
