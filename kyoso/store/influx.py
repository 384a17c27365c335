"""The regional store: telemetry in InfluxDB, one database per factory (docs/storage.md).

Design, and why:

- **Writes** are the lines of :mod:`kyoso.influx.lineprotocol`. The ingest hands a whole
  batch to :meth:`InfluxStore.write_batch` (its samples grouped by gateway and session),
  which sends one request per factory database, concurrently (the writer cuts a request
  above ``max_batch_lines`` and halves one InfluxDB finds too large). A line that cannot be
  built or that InfluxDB rejects comes back as a :class:`~kyoso.store.base.Refusal`; its
  neighbours are kept.
- **Replacing at the same key** is InfluxDB's own rule (measurement, tags, time). What a
  rewrite must replace is always written, since InfluxDB merges the field sets.
- **Descriptions** are points at ``updated_at``: the latest point per machine is current,
  so an older description arriving late is simply not the latest, and an equal
  ``updated_at`` overwrites. Removing one deletes all of the machine's points.
- **Statuses and gap reports** are points at the store's write time, strictly increasing in
  this process, so the latest point is the one last written, whatever the gateway's ``ts``
  (kept as ``ts_ns``) or the report's ``at`` (``at_ns``). With several ingest workers the
  order across them follows their clocks.
- **Reads** are InfluxQL confined to the factory's database; a factory without one (or a
  reserved id) has empty results.

**Window queries are aggregated by InfluxDB**, never by fetching the raw points (a week of
10-s samples of 20 machines is 1.2 M points). One statement sums the fields per machine
and bucket with ``GROUP BY time(step, offset)``, the offset shifted by 1 ns so that
InfluxDB's bucket ``[b + 1 ns, b + step + 1 ns)`` holds exactly the samples whose ``ts``
lies in ``(b, b + step]``, the bucket a sample ending at ``b + step`` belongs to. That
counts every sample whole in the bucket of its ``ts``; then proration is corrected here:

- A machine's samples tile time without overlapping, so in each bucket only the first
  sample can start before the bucket does. The statement also returns ``FIRST`` of
  ``start_ns`` and of each summed field; when that start lies before the bucket, the
  sample's own values are taken out of the bucket and spread over the buckets its
  interval overlaps (:meth:`~kyoso.store.base.BucketGrid.shares`; the share outside the
  window is dropped). Counters are summed by regex (``SUM(/_delta$/)``), over which
  ``FIRST`` may take a counter from a later point when the first one lacks it, so a
  straddling sample's counters are read exactly, by machine and time.
- The first sample of each machine ending after the window (by at most
  ``MAX_INTERVAL_S``) is read raw, and the part of it inside the window added.
- Covered time is the prorated ``interval_s``; ``no_data_s`` the rest of the bucket.

The one assumption is that a machine's samples do not overlap, which the contract requires
(docs/contract.md, 8.2). Should a faulty gateway send overlapping intervals, a sample
other than a bucket's first that starts before the bucket counts whole in the bucket of its
``ts`` instead of being split: its time shows in a later bucket than it belongs to (or
inside the window although it partly lies before it), and ``no_data_s`` may floor at 0. The
SQLite store prorates each sample on its own and needs no such assumption.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Final, Self, TypeVar

from kyoso.contract import (
    MAX_INTERVAL_S,
    GatewayStatus,
    MachineDescription,
    MachineState,
)
from kyoso.contract.wire import SampleLike
from kyoso.influx.client import (
    InfluxAuthError,
    InfluxConfig,
    InfluxError,
    InfluxQueryError,
    InfluxRetryableError,
    InfluxWriter,
    WriteResult,
)
from kyoso.influx.lineprotocol import (
    LineProtocolError,
    SampleLines,
    database_name,
    description_point,
    gaps_point,
    interval_ns,
    status_point,
    timestamp_ns,
)

from .base import (
    BucketGrid,
    CounterWindow,
    GapReport,
    LiveRead,
    ParseMemo,
    Refusal,
    RunRow,
    SampleGroup,
    StateRun,
    StateWindow,
    StoreAuthError,
    StoredSample,
    StoreError,
    StoreRefusedError,
    StoreUnavailableError,
    chain_runs,
    check_aware,
    check_window,
    read_live,
    window_buckets,
)
from .influx_rows import (
    COUNTER_QUANTITY,
    LATEST_FIELDS,
    STATE_QUANTITY,
    Quantity,
    RawRow,
    Row,
    datetime_of,
    description_of_raw,
    gaps_of,
    latest_of_raw,
    raw_row,
    row_values,
    statuses_of,
    stored_sample_of_raw,
)

__all__ = ["InfluxStore"]

_V = TypeVar("_V")
Bucket = tuple[datetime, datetime]
Cells = dict[str, dict[int, dict[str, float]]]
"""Sums by machine, bucket index and field name."""

_STATES: Final = tuple(MachineState)
_STATE_FIELDS: Final = tuple(f"{state.value}_s" for state in _STATES)
_MAX_INTERVAL_NS: Final = int(MAX_INTERVAL_S * 1e9)
_MISSING_DATABASE: Final = "database not found"
_STATEMENTS_PER_REQUEST: Final = 200
"""Exact reads of straddling samples in one query (a URL of some 40 kB, a GET's limit
being the server's header size: 1 MB in InfluxDB 1.x)."""
_LATEST: Final = "SELECT {} FROM {} GROUP BY {} ORDER BY time DESC LIMIT 1"
_LATEST_SAMPLES: Final = _LATEST.format("*", "samples", "machine")
_MACHINES: Final = _LATEST.format("*", "machines", "machine")
_LIVE: Final = tuple(
    _LATEST.format(fields, measurement, tag)
    for fields, measurement, tag in (
        ("*", "gateway_status", "gateway"),
        (LATEST_FIELDS, "samples", "machine"),
        ("*", "gaps", "gateway"),
    )
)
"""The reads of a live view (:meth:`InfluxStore.live`), in the order of its fields; of the
latest samples, what it shows (influxd's work grows with the fields read)."""
_NOT_EXECUTED: Final = "not executed"
# The window queries of the module docstring: sums per machine and bucket, the first sample
# after the window, a straddling sample's own fields. Formatted with field names and
# integers only; values are bound as $parameters.
_BUCKETED: Final = """
SELECT {sums}, FIRST("start_ns") AS "first_start_ns", FIRST("interval_s") AS "first_interval_s"
    {firsts}
FROM samples WHERE time > $start AND time <= $end{only}
GROUP BY time({step}ns, {offset}ns), machine fill(none)"""
_FOLLOWING: Final = """
SELECT "start_ns", "interval_s", {fields} FROM samples
WHERE time > $end AND time <= $after{only} GROUP BY machine LIMIT 1"""
_RUNS: Final = """SELECT "{field}", "start_ns", "state" FROM samples
WHERE "{field}" > 0 AND time > $start AND time <= $end GROUP BY machine"""
"""The samples a run of a state is made of (base.py), by the state's field."""
_EXACT: Final = (
    "SELECT {fields} FROM samples WHERE machine = $m{i} AND time = $t{i} GROUP BY machine"
)


class InfluxStore:
    """The :class:`~kyoso.store.base.Store` on InfluxDB's v1 HTTP API (see the module
    docstring). Use ``async with InfluxStore(config) as store:``, or :meth:`open` and
    :meth:`close`. It connects on first use: an unreachable server shows as
    :class:`~kyoso.store.base.StoreUnavailableError` from the call that needed it.
    """

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        self._writer: InfluxWriter | None = None
        self._written_ns = 0
        self._descriptions = ParseMemo(description_of_raw)
        self._latest = ParseMemo(stored_sample_of_raw)
        self._heard = ParseMemo(latest_of_raw)

    async def open(self) -> Self:
        """Start the HTTP client."""
        if self._writer is not None:
            raise StoreError("store is already open")
        self._writer = InfluxWriter(self.config)
        return self

    async def close(self) -> None:
        """Close the client; idempotent."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        await writer.aclose()

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
        refused: list[Refusal] = []
        lines: dict[str, list[str]] = {}
        sources: dict[str, list[tuple[int, int]]] = {}  # the (group, sample) of each line
        for g, group in enumerate(groups):
            at = now if group.received_at is None else check_aware(group.received_at, "received_at")
            try:
                database = self._database(group.factory)
                build = SampleLines(
                    group.factory, group.gateway, group.session, received_at=timestamp_ns(at)
                )
            except (StoreRefusedError, LineProtocolError) as exc:  # none of it can be kept
                refused += (Refusal(i, str(exc), g) for i in range(len(group.samples)))
                continue
            into, source = lines.setdefault(database, []), sources.setdefault(database, [])
            for i, sample in enumerate(group.samples):
                try:
                    into.append(build(sample))
                except LineProtocolError as exc:
                    refused.append(Refusal(i, str(exc), g))
                else:
                    source.append((g, i))
        databases = list(lines)
        results = await asyncio.gather(*(self._write(d, lines[d]) for d in databases))
        for database, result in zip(databases, results, strict=True):
            for rejected in result.rejected:
                g, i = sources[database][rejected.index]
                refused.append(Refusal(i, rejected.reason, g))
        return sorted(refused, key=lambda r: (r.group, r.index))

    async def write_description(self, desc: MachineDescription) -> None:
        await self._write_point(self._database(desc.factory), partial(description_point, desc))

    async def remove_description(self, factory: str, machine: str) -> None:
        database = self._readable(factory)
        if database is not None:
            delete = "DELETE FROM machines WHERE machine = $machine"
            await self._query(database, delete, {"machine": machine})

    async def write_status(self, status: GatewayStatus) -> None:
        point = partial(status_point, status, written_at=self._write_time())
        await self._write_point(self._database(status.factory), point)

    async def write_gaps(
        self, factory: str, gateway: str, missing: int, oldest_s: float, at: datetime
    ) -> None:
        check_aware(at, "at")
        point = partial(gaps_point, gateway, missing, oldest_s, at, written_at=self._write_time())
        await self._write_point(self._database(factory), point)

    # --- reads ------------------------------------------------------------------------

    async def factories(self) -> list[str]:
        prefix = self.config.database_prefix
        names = [row["name"] for row in await self._query(None, "SHOW DATABASES")]
        found = (name[len(prefix) :] for name in names if name.startswith(prefix))
        return sorted(factory for factory in found if self._readable(factory) is not None)

    async def machines(self, factory: str) -> list[MachineDescription]:
        return self._machines(factory, await self._read(factory, _MACHINES))

    async def gateway_status(self, factory: str) -> list[GatewayStatus]:
        return statuses_of(factory, await self._read(factory, _LIVE[0]))

    async def latest_samples(self, factory: str) -> dict[str, StoredSample]:
        return _by_machine(self._latest, factory, await self._read(factory, _LATEST_SAMPLES))

    async def gateway_gaps(self, factory: str) -> dict[str, GapReport]:
        return gaps_of(await self._read(factory, _LIVE[2]))

    async def live(self, factory: str, on_read: Callable[[], object] | None = None) -> LiveRead:
        """The three reads in one request: a view is read for every factory every
        ``view_ttl_s``, and the requests (the client's work per request) were the API's
        limit, not influxd's."""
        database = self._readable(factory)
        if database is None:
            return LiveRead([], {}, {})
        try:
            with _translated():
                each = await self._client().query_each(database, "; ".join(_LIVE), on_send=on_read)
        except StoreError as exc:
            if _NOT_EXECUTED in str(exc):  # the database is missing: its reads say so
                return await read_live(self, factory, on_read)
            raise
        statuses, latest, gaps = each
        return LiveRead(
            statuses_of(factory, statuses),
            _by_machine(self._heard, factory, latest),
            gaps_of(gaps),
        )

    def _machines(self, factory: str, rows: list[Row]) -> list[MachineDescription]:
        found = (self._descriptions((factory, r["machine"]), raw_row(factory, r)) for r in rows)
        return sorted(found, key=lambda d: d.machine)

    async def state_seconds(
        self,
        factory: str,
        machine: str | None,
        start: datetime,
        end: datetime,
        bucket_s: float | None = None,
    ) -> list[StateWindow]:
        buckets = window_buckets(start, end, bucket_s)
        result = []
        for name, (w0, w1), cell in await self._windows(STATE_QUANTITY, factory, machine, buckets):
            seconds = {s: cell.get(f, 0.0) for s, f in zip(_STATES, _STATE_FIELDS, strict=True)}
            no_data_s = max(0.0, (w1 - w0).total_seconds() - cell.get("interval_s", 0.0))
            result.append(StateWindow(name, w0, w1, seconds, no_data_s))
        return result

    async def counter_totals(
        self,
        factory: str,
        machine: str | None,
        start: datetime,
        end: datetime,
        bucket_s: float | None = None,
    ) -> list[CounterWindow]:
        buckets = window_buckets(start, end, bucket_s)
        windows = await self._windows(COUNTER_QUANTITY, factory, machine, buckets)
        return [
            CounterWindow(name, w0, w1, {field[: -len("_delta")]: v for field, v in cell.items()})
            for name, (w0, w1), cell in windows
        ]

    async def state_runs(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[StateRun]:
        return chain_runs(await self.state_run_rows(factory, state, start, end))

    async def state_run_rows(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[RunRow]:
        start, end = check_window(start, end)
        field, bounds = f"{state.value}_s", {"start": timestamp_ns(start), "end": timestamp_ns(end)}
        rows = await self._read(factory, _RUNS.format(field=field), bounds)
        return [
            (
                r["machine"],
                datetime_of(r["start_ns"]),
                datetime_of(r["time"]),
                float(r[field]),
                r["state"] == state.value,
            )
            for r in rows
        ]

    # --- window queries ---------------------------------------------------------------

    async def _windows(
        self, quantity: Quantity, factory: str, machine: str | None, buckets: list[Bucket]
    ) -> list[tuple[str, Bucket, dict[str, float]]]:
        """The prorated sums per reported machine and bucket, sorted by machine and start."""
        database = self._readable(factory)
        if not buckets:
            return []
        cells: Cells = {}
        reported: set[str] = set() if machine is None else {machine}
        if database is not None:
            # Every bucket but the last has the full step: so has the first, unless alone.
            start, end = timestamp_ns(buckets[0][0]), timestamp_ns(buckets[-1][1])
            grid = BucketGrid(start, end, timestamp_ns(buckets[0][1]) - start)
            cells, described = await asyncio.gather(
                self._sums(database, grid, machine, quantity), self._described(database, machine)
            )
            if machine is None:
                reported |= described | set(cells)
        return [
            (name, bucket, cells.get(name, {}).get(index, {}))
            for name in sorted(reported)
            for index, bucket in enumerate(buckets)
        ]

    async def _sums(
        self, database: str, grid: BucketGrid, machine: str | None, quantity: Quantity
    ) -> Cells:
        params: dict[str, object] = {
            "start": grid.start,
            "end": grid.end,
            "after": grid.end + _MAX_INTERVAL_NS,
        }
        only = ""
        if machine is not None:
            params["machine"] = machine
            only = " AND machine = $machine"
        offset = (grid.start + 1) % grid.step
        bucketed = _BUCKETED.format(
            sums=quantity.sums, firsts=quantity.firsts, only=only, step=grid.step, offset=offset
        )
        following = _FOLLOWING.format(fields=quantity.fields, only=only)
        rows, after = await asyncio.gather(
            self._query(database, bucketed, params), self._query(database, following, params)
        )
        cells: Cells = {}
        straddlers: list[tuple[str, int, int, int]] = []  # machine, bucket, start, ts
        own: dict[tuple[str, int], dict[str, float]] = {}  # by machine and ts
        for row in rows:
            name = row["machine"]
            index = (row["time"] - 1 - grid.start) // grid.step
            cell = cells.setdefault(name, {}).setdefault(index, {})
            for key, value in row.items():
                if key.startswith("sum_") and value is not None:
                    cell[key[4:]] = cell.get(key[4:], 0.0) + float(value)
            begin = row["first_start_ns"]
            if begin < grid.start + index * grid.step:
                ts = begin + interval_ns(float(row["first_interval_s"]))
                straddlers.append((name, index, begin, ts))
                if quantity.firsts:
                    own[name, ts] = row_values(row, quantity, "first_")
        if straddlers and not quantity.firsts:
            own = await self._exact(database, quantity, [(s[0], s[3]) for s in straddlers])
        for name, index, begin, ts in straddlers:
            values = own.get((name, ts), {})
            cell = cells[name][index]
            for key, value in values.items():
                cell[key] = cell.get(key, 0.0) - value
            _spread(cells[name], grid, begin, ts, values)
        for row in after:
            if row["start_ns"] < grid.end:
                values = row_values(row, quantity)
                _spread(
                    cells.setdefault(row["machine"], {}), grid, row["start_ns"], row["time"], values
                )
        return cells

    async def _exact(
        self, database: str, quantity: Quantity, samples: list[tuple[str, int]]
    ) -> dict[tuple[str, int], dict[str, float]]:
        """The summed fields of the samples at these (machine, ts), read point by point."""
        queries = []
        for first in range(0, len(samples), _STATEMENTS_PER_REQUEST):
            chunk = samples[first : first + _STATEMENTS_PER_REQUEST]
            statements = "; ".join(
                _EXACT.format(fields=quantity.fields, i=i) for i in range(len(chunk))
            )
            params: dict[str, object] = {}
            for i, (name, ts) in enumerate(chunk):
                params |= {f"m{i}": name, f"t{i}": ts}
            queries.append(self._query(database, statements, params))
        rows = [row for answer in await asyncio.gather(*queries) for row in answer]
        return {(row["machine"], row["time"]): row_values(row, quantity) for row in rows}

    async def _described(self, database: str, machine: str | None) -> set[str]:
        """The machines with a description now (none looked up when one is asked for)."""
        if machine is not None:
            return set()
        rows = await self._query(database, 'SELECT LAST("name") FROM machines GROUP BY machine')
        return {row["machine"] for row in rows}

    # --- InfluxDB ---------------------------------------------------------------------

    def _client(self) -> InfluxWriter:
        if self._writer is None:
            raise StoreError("store is not open")
        return self._writer

    def _write_time(self) -> int:
        """Now in ns, strictly increasing in this process (a status or gap report point)."""
        self._written_ns = max(time.time_ns(), self._written_ns + 1)
        return self._written_ns

    def _database(self, factory: str) -> str:
        """The factory's database, to write; a reserved factory id cannot be kept."""
        try:
            return database_name(factory, self.config.database_prefix)
        except LineProtocolError as exc:
            raise StoreRefusedError(str(exc)) from exc

    def _readable(self, factory: str) -> str | None:
        """The factory's database, to read; None for an id no factory can have."""
        try:
            return database_name(factory, self.config.database_prefix)
        except ValueError:
            return None

    async def _write(self, database: str, lines: Sequence[str]) -> WriteResult:
        with _translated():
            return await self._client().write(database, lines)

    async def _write_point(self, database: str, build: Callable[[], str]) -> None:
        """Write one point, or raise :class:`StoreRefusedError` if it cannot be kept."""
        try:
            point = build()
        except LineProtocolError as exc:
            raise StoreRefusedError(str(exc)) from exc
        result = await self._write(database, [point])
        if result.rejected:
            raise StoreRefusedError(result.rejected[0].reason)

    async def _read(
        self, factory: str, influxql: str, params: Mapping[str, object] | None = None
    ) -> list[Row]:
        database = self._readable(factory)
        return [] if database is None else await self._query(database, influxql, params)

    async def _query(
        self, database: str | None, influxql: str, params: Mapping[str, object] | None = None
    ) -> list[Row]:
        """Run InfluxQL; a missing database has no rows."""
        with _translated():
            try:
                return await self._client().query(database, influxql, params)
            except InfluxQueryError as exc:
                if database is not None and _MISSING_DATABASE in str(exc):
                    return []
                raise


def _by_machine(memo: ParseMemo[RawRow, _V | None], factory: str, rows: list[Row]) -> dict[str, _V]:
    """The machines' latest ``samples`` points, parsed (or reused) by ``memo``, by machine;
    those it reads as no sample left out."""
    found = ((r["machine"], memo((factory, r["machine"]), raw_row(factory, r))) for r in rows)
    return {machine: value for machine, value in found if value is not None}


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The client's errors as the store's: retryable, credentials, or permanent."""
    try:
        yield
    except InfluxRetryableError as exc:
        raise StoreUnavailableError(f"InfluxDB: {exc}", retry_after_s=exc.retry_after_s) from exc
    except InfluxAuthError as exc:
        raise StoreAuthError(f"InfluxDB: {exc}") from exc
    except InfluxError as exc:
        raise StoreError(f"InfluxDB: {exc}") from exc


def _spread(
    buckets: dict[int, dict[str, float]],
    grid: BucketGrid,
    start: int,
    end: int,
    values: dict[str, float],
) -> None:
    """Add one machine's sample covering ``(start, end]`` to its buckets, prorated."""
    for index, share, _ in grid.shares(start, end):
        cell = buckets.setdefault(index, {})
        for key, value in values.items():
            cell[key] = cell.get(key, 0.0) + value * share
