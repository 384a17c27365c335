"""The store interface: what the ingest writes and what the capacity service reads.

Two implementations share it: the embedded :class:`~kyoso.store.sqlite.SqliteStore` (demo,
single shop) and :class:`~kyoso.store.influx.InfluxStore` (regional stack). One test suite
(``tests/store_suite.py``) pins the semantics below for both.

Why a :class:`typing.Protocol` and not an ABC: the implementations share no code (SQL over a
local file versus line protocol and InfluxQL over HTTP), so a base class would hold nothing
but abstract methods. A protocol lets the ingest depend on :class:`StoreWriter` alone and
the capacity service on :class:`StoreReader` alone, lets any test fake satisfy them without
inheriting, and mypy checks conformance wherever a concrete store is used as a ``Store``.
Lifecycle (open, close) is deliberately not part of it: whoever builds a store closes it.

Semantics every implementation keeps
------------------------------------

**Time.** Every datetime argument must be timezone-aware (any offset; ``ValueError``
otherwise); every datetime returned is in UTC. Precision is the microsecond.

**Samples are keyed by (factory, machine, ts)**, like an InfluxDB point keyed by
measurement, tags and timestamp. Writing a sample again at the same key replaces it: a
replay or duplicate is counted once, and the later write wins for every value it carries.
(A field-union store such as InfluxDB may keep a counter or signal *name* carried only by
the earlier write; the contract forbids replays that differ (section 8.5), so the suite does
not pin that case. It does pin that all six state durations are replaced.)

**A sample covers its interval** ``(ts - interval_s, ts]``. Window queries over
``[start, end)`` attribute every sample by **proration**: a sample contributes to a window
(or bucket) the share ``overlap / interval_s`` of each of its state durations and counter
deltas, where ``overlap`` is the length of the intersection of its interval with the
window. A sample wholly inside contributes fully; one ending exactly at ``start`` or
starting exactly at ``end`` contributes nothing; one straddling an edge is split between
the two sides in proportion to time, so the buckets of a window always add up to the whole
window. Counter totals are therefore floats.

**Zero durations are not kept.** A state sent with 0 s and a state not sent mean the same;
:meth:`StoreReader.latest_samples` returns only the states with time in them.

**Gaps stay visible.** ``no_data_s`` of a window is its length minus the time covered by
sample intervals (never negative, should a faulty gateway send overlapping intervals).
``unknown`` time (the gateway ran but could not read the machine) is reported as a state;
time without any sample is ``no_data_s``. The state seconds of a window add up to its
covered time within the contract's tolerance (durations may sum 0.01 s away from
``interval_s`` per sample).

**Which machines a window query reports.** For ``machine=None``: every machine of the
factory that has a description now or a sample overlapping ``[start, end)``, each with one
result per bucket, buckets without samples included (all ``no_data_s``). For a given
machine: that machine's buckets, whatever is stored. Results are sorted by machine, then
start. Buckets are aligned to ``start``; the last one ends at ``end`` and may be shorter.

**Runs of a state** (:meth:`StoreReader.state_runs`) are not prorated: they are made of the
factory's samples whose ``ts`` lies in ``(start, end]`` (a sample ending exactly at ``start``
is out, one ending exactly at ``end`` in) and that carry more than 0 s of the state. A run is
a maximal chain of such samples of one machine in which each sample **adjoins** the one
before (its interval start ``ts - interval_s`` lies within 1 s of that sample's ``ts``:
gateways tile time, so a gap of no data ends a run) and the one before **ended in the
state** (its ``state`` field, the state at its ``ts``, is the state): a sample that ended in
another state closes its run, so down, running, down within consecutive samples are two
runs. A run's ``seconds`` are the sum of its samples' seconds of the state. A run's edges
inside a sample are placed assuming the state held one contiguous part of it, at the end
for the first sample and at the start for the last: ``start`` is the first sample's ``ts``
less its seconds of the state if that sample ended in the state, else its interval start;
``end`` is the last sample's ``ts`` if it ended in the state, else its interval start plus
its seconds of the state; neither leaves the sample's interval (durations may sum a little
over ``interval_s``). ``ongoing`` is whether the last sample ended in the state: the state
went on past ``end``, for as long as no later sample tells. A run ending at a gap of no data
or at the window's ``end`` may thus be ongoing; it is going on now only if its last sample
is the machine's latest. Only samples inside the window count, so a run that began before
``start`` is reported from its first sample ending after ``start``. Runs are sorted by
machine, then start; ``end < start`` raises ``ValueError``.

**Gap reports** (:class:`GapReport`) tell, per (factory, gateway), how many of the gateway's
samples no ingest worker has taken (lost, or not yet replayed: docs/contract.md, 8.6) and
how long the oldest hole had been open when the ingest counted them. As for statuses, the
report **last written** is kept, whatever its ``at``: several ingest workers write them, by
their own clocks. ``missing`` 0 means the gaps closed. A factory with only gap reports is
one :meth:`StoreReader.factories` lists.
"""

import asyncio
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Generic, Protocol, TypeVar

from kyoso.contract import GatewayStatus, MachineDescription, MachineState, Sample
from kyoso.contract.wire import SampleLike

__all__ = [
    "ADJOIN",
    "MAX_BUCKETS",
    "BucketGrid",
    "CounterWindow",
    "GapReport",
    "LatestSample",
    "LiveRead",
    "ParseMemo",
    "Refusal",
    "RunRow",
    "SampleGroup",
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
    "chain_runs",
    "check_aware",
    "check_window",
    "read_live",
    "window_buckets",
]

_R = TypeVar("_R", bound=Hashable)
_V = TypeVar("_V")

MAX_BUCKETS: Final = 100_000
"""Most buckets one window query may ask for (a year of 6-minute buckets)."""

ADJOIN: Final = timedelta(seconds=1)
"""How far a sample's interval start may lie from the previous sample's ``ts`` for the two
to adjoin in a run of a state (module docstring)."""


class StoreError(Exception):
    """Root of the store's errors; a permanent failure unless it is the subclass below."""


class StoreUnavailableError(StoreError):
    """Retryable: the store is busy or unreachable. Writes are idempotent, so repeat them,
    not before ``retry_after_s`` when the store named a time (an HTTP ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreAuthError(StoreError):
    """The store refused the credentials or a privilege: alarm, acknowledge nothing, retry."""


class StoreRefusedError(StoreError):
    """Permanent, for one message: the store cannot keep it (dead-letter it, go on)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A sample the store could not keep, and why; the others of its call were kept."""

    index: int
    """Position in its group's ``samples``."""
    reason: str
    group: int = 0
    """Position of its group in the call's ``groups`` (0 for :meth:`write_samples`)."""


@dataclass(frozen=True, slots=True)
class SampleGroup:
    """Samples sent by one gateway in one session (of one message, or of several)."""

    factory: str
    gateway: str
    session: str
    samples: Sequence[SampleLike]
    received_at: datetime | None = None
    """When the ingest received them (default: now), reported by ``latest_samples``."""


@dataclass(frozen=True, slots=True)
class StoredSample:
    """A sample as stored, with who sent it and when the ingest received it."""

    gateway: str
    session: str
    sample: Sample
    received_at: datetime


@dataclass(frozen=True, slots=True)
class LatestSample:
    """What a live view shows of a machine's latest sample (:meth:`StoreReader.live`): a
    read of a whole sample opens every counter and signal field in InfluxDB, three times
    the cost of these."""

    gateway: str
    ts: datetime
    state: MachineState
    alarm: int | None
    received_at: datetime

    @classmethod
    def of(cls, stored: StoredSample) -> "LatestSample":
        sample = stored.sample
        return cls(stored.gateway, sample.ts, sample.state, sample.alarm, stored.received_at)


@dataclass(frozen=True, slots=True)
class StateWindow:
    """Prorated state seconds of one machine over ``[start, end)``."""

    machine: str
    start: datetime
    end: datetime
    seconds: Mapping[MachineState, float]
    """Every state, zeros included."""
    no_data_s: float
    """Time of the window covered by no sample."""

    @property
    def length_s(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, slots=True)
class CounterWindow:
    """Prorated counter deltas of one machine over ``[start, end)``, by counter name.

    A name is present when some sample overlapping the window carries it (with delta 0
    too); an empty mapping means no counter was reported in the window.
    """

    machine: str
    start: datetime
    end: datetime
    totals: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class StateRun:
    """A stretch of time one machine spent in one state, from its samples (the rules are
    in the module docstring)."""

    machine: str
    start: datetime
    """When the run began (UTC)."""
    end: datetime
    """When it ended, or the end of its last sample if it goes on (UTC)."""
    seconds: float
    """The state's seconds in the run: the sum of its samples' durations of the state."""
    ongoing: bool
    """The run's last sample ended in the state (its ``state`` field)."""


@dataclass(frozen=True, slots=True)
class GapReport:
    """A gateway's gaps over all its sessions, as an ingest worker last wrote them."""

    missing: int
    """Samples no ingest worker has taken; 0: none (the gaps closed)."""
    oldest_s: float
    """How long the oldest hole had been open at ``at``; 0.0 without one."""
    at: datetime
    """When the ingest counted them (UTC)."""

    def oldest_s_at(self, now: datetime) -> float | None:
        """How long the oldest hole has been open at ``now`` (None: no gap). A report is
        written when the gaps change, not as they age, so the hole aged since ``at``."""
        if not self.missing:
            return None
        return self.oldest_s + max(0.0, (now - self.at).total_seconds())


@dataclass(frozen=True, slots=True)
class LiveRead:
    """What a factory's live view reads: :meth:`StoreReader.live`."""

    statuses: list[GatewayStatus]
    latest: dict[str, LatestSample]
    gaps: dict[str, GapReport]


RunRow = tuple[str, datetime, datetime, float, bool]
"""A sample considered for runs: ``(machine, interval start, ts, seconds of the state,
whether it ended in the state)``, times aware."""


class StoreWriter(Protocol):
    """What the ingest needs: idempotent writes of decoded messages."""

    async def write_batch(self, groups: Sequence[SampleGroup]) -> list[Refusal]:
        """Store the samples of every group at once, as :meth:`write_samples` stores one
        group: one request per database (InfluxDB), one transaction (SQLite). The refusals
        name their group and their index in it, sorted by both."""
        ...

    async def write_samples(
        self,
        factory: str,
        gateway: str,
        session: str,
        samples: Sequence[SampleLike],
        *,
        received_at: datetime | None = None,
    ) -> list[Refusal]:
        """Store samples of one batch; a sample at an existing (factory, machine, ts)
        replaces it. ``received_at`` (default: now) is reported by :meth:`latest_samples`.
        When this returns, the samples are durable except those refused (returned, with
        the reason; an empty list when all were kept): the ingest may acknowledge the
        message and dead-letters the refused ones. Several calls may run concurrently."""
        ...

    async def write_description(self, desc: MachineDescription) -> None:
        """Keep the description with the latest ``updated_at`` per (factory, machine); an
        equal ``updated_at`` replaces, an older one (a late redelivery) is ignored.
        :class:`StoreRefusedError` if this store cannot keep it."""
        ...

    async def remove_description(self, factory: str, machine: str) -> None:
        """The machine was withdrawn (empty retained payload): :meth:`StoreReader.machines`
        no longer lists it. Its samples stay; a later description lists it again."""
        ...

    async def write_status(self, status: GatewayStatus) -> None:
        """Keep the status **last written** per (factory, gateway), whatever its ``ts``:
        a last will carries the time of its CONNECT, earlier than the online status it
        supersedes, so only arrival order tells which is current. The ingest writes the
        statuses of one gateway in the order the broker delivered them."""
        ...

    async def write_gaps(
        self, factory: str, gateway: str, missing: int, oldest_s: float, at: datetime
    ) -> None:
        """Keep the gap report **last written** per (factory, gateway), whatever its ``at``
        (when the ingest counted: ``ValueError`` if naive); ``missing`` 0: its gaps closed."""
        ...


class StoreReader(Protocol):
    """What the capacity service needs; every query is confined to one factory."""

    async def factories(self) -> list[str]:
        """Every factory with a stored sample, description, status or gap report, sorted."""
        ...

    async def machines(self, factory: str) -> list[MachineDescription]:
        """The current description of each described machine, sorted by machine."""
        ...

    async def gateway_status(self, factory: str) -> list[GatewayStatus]:
        """The status last written per gateway, sorted by gateway."""
        ...

    async def gateway_gaps(self, factory: str) -> dict[str, GapReport]:
        """The gap report last written per gateway (those never reported are absent)."""
        ...

    async def live(self, factory: str, on_read: Callable[[], object] | None = None) -> LiveRead:
        """:meth:`gateway_status`, :meth:`latest_samples` (what a live view shows of them)
        and :meth:`gateway_gaps` read together, in one request where the store can: the
        capacity service reads them for every factory every ``view_ttl_s`` (and
        :meth:`machines`, which change seldom, less often). ``on_read`` is called (from
        any thread) as the read begins, after any wait for a connection: the moment the
        answer describes at the earliest."""
        ...

    async def latest_samples(self, factory: str) -> dict[str, StoredSample]:
        """The sample with the latest ``ts`` of each machine that has one."""
        ...

    async def state_seconds(
        self,
        factory: str,
        machine: str | None,
        start: datetime,
        end: datetime,
        bucket_s: float | None = None,
    ) -> list[StateWindow]:
        """Prorated state durations per machine (and per bucket of ``bucket_s``)."""
        ...

    async def counter_totals(
        self,
        factory: str,
        machine: str | None,
        start: datetime,
        end: datetime,
        bucket_s: float | None = None,
    ) -> list[CounterWindow]:
        """Prorated counter deltas per machine (and per bucket), the same rows as
        :meth:`state_seconds` would report."""
        ...

    async def state_runs(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[StateRun]:
        """The runs of ``state`` made of the samples whose ``ts`` lies in ``(start, end]``
        and that carry more than 0 s of it, per machine, sorted by machine and start.

        A run chains the samples of one machine that adjoin (within 1 s) while each but
        the last ended in the state; its edges inside a sample assume the state held one
        contiguous part of it, at the end of the first sample and at the start of the
        last; ``ongoing`` is whether the last ended in the state (module docstring).
        ``ValueError`` for a naive datetime or ``end < start``.
        """
        ...

    async def state_run_rows(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[RunRow]:
        """The samples :meth:`state_runs` chains into runs (in any order), so that
        ``chain_runs(rows)`` is what it returns: who keeps runs up to date reads only the
        new samples, and chains them with those it kept."""
        ...


class Store(StoreWriter, StoreReader, Protocol):
    """A store both written and read (one embedded process, or the test suite)."""


def check_aware(moment: datetime, what: str) -> datetime:
    """``moment`` in UTC; ``ValueError`` if it is naive."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} {moment.isoformat()} must be timezone-aware")
    return moment.astimezone(UTC)


def check_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``start`` and ``end`` in UTC; ``ValueError`` if either is naive or ``end < start``."""
    start, end = check_aware(start, "start"), check_aware(end, "end")
    if end < start:
        raise ValueError(f"window end {end.isoformat()} is before its start {start.isoformat()}")
    return start, end


def window_buckets(
    start: datetime, end: datetime, bucket_s: float | None
) -> list[tuple[datetime, datetime]]:
    """The UTC buckets of a window query: ``[start, end)`` cut every ``bucket_s`` from
    ``start`` (the last bucket may be shorter), or the whole window for ``None``.

    An empty window gives no bucket; ``end < start``, a non-positive or sub-microsecond
    ``bucket_s``, or more than :data:`MAX_BUCKETS` buckets raise ``ValueError``.
    """
    start, end = check_window(start, end)
    if bucket_s is not None and not (math.isfinite(bucket_s) and bucket_s >= 1e-6):
        raise ValueError(f"bucket_s must be at least one microsecond, not {bucket_s!r}")
    if end == start:
        return []
    if bucket_s is None:
        return [(start, end)]
    step = timedelta(microseconds=round(bucket_s * 1e6))
    count = -((start - end) // step)  # exact ceiling, no float
    if count > MAX_BUCKETS:
        raise ValueError(f"{count} buckets asked for; at most {MAX_BUCKETS} per query")
    return [(start + i * step, min(start + (i + 1) * step, end)) for i in range(count)]


@dataclass(frozen=True, slots=True)
class BucketGrid:
    """The buckets of a window query on an integer time axis (µs, ns: any one unit), and
    the proration rule above in code, for stores whose query language cannot prorate:
    bucket ``i`` is ``[start + i * step, min(start + (i + 1) * step, end))``."""

    start: int
    end: int
    step: int

    @property
    def count(self) -> int:
        return -((self.start - self.end) // self.step)

    def shares(self, first: int, last: int) -> Iterator[tuple[int, float, int]]:
        """``(bucket, share, overlap)`` for each bucket that the interval ``(first, last]``
        overlaps: ``overlap`` is the length in common, ``share`` its fraction of the
        interval (multiply durations and counter deltas by it)."""
        low = max(0, (first - self.start) // self.step)
        high = min(self.count - 1, (last - 1 - self.start) // self.step)
        for index in range(low, high + 1):
            begin = self.start + index * self.step
            overlap = min(last, begin + self.step, self.end) - max(first, begin)
            if overlap > 0:
                yield index, overlap / (last - first), overlap


def chain_runs(rows: Iterable[RunRow]) -> list[StateRun]:
    """The runs of a state, by the rules of the module docstring, from the samples the
    store considered (in any order; each machine's ``ts`` distinct), sorted by machine and
    start. The one place those rules are coded: every store calls it."""
    chains: list[list[RunRow]] = []
    for row in sorted(rows, key=lambda r: (r[0], r[2])):
        before = chains[-1][-1] if chains else None
        if (
            before is not None
            and before[0] == row[0]  # the same machine
            and before[4]  # which ended in the state
            and abs(row[1] - before[2]) <= ADJOIN
        ):
            chains[-1].append(row)
        else:
            chains.append([row])
    return sorted((_run(chain) for chain in chains), key=lambda r: (r.machine, r.start))


def _run(chain: list[RunRow]) -> StateRun:
    machine, first_begin, first_ts, first_s, first_ended = chain[0]
    _, last_begin, last_ts, last_s, last_ended = chain[-1]
    start = max(first_ts - timedelta(seconds=first_s), first_begin) if first_ended else first_begin
    end = last_ts if last_ended else min(last_begin + timedelta(seconds=last_s), last_ts)
    seconds = math.fsum(row[3] for row in chain)
    return StateRun(machine, start.astimezone(UTC), end.astimezone(UTC), seconds, last_ended)


class ParseMemo(Generic[_R, _V]):
    """The object last parsed from each stored row, reused while the row is unchanged.

    The capacity service reads every factory's descriptions and latest samples every second
    (its live view); validating them again (some 200 µs a description) cost more than the
    queries did. Rows are named by what they describe (a factory and a machine): one entry
    each, replaced when the row changes. The objects are frozen, so sharing them is safe."""

    def __init__(self, parse: Callable[[_R], _V]) -> None:
        self._parse = parse
        self._known: dict[Hashable, tuple[_R, _V]] = {}

    def __call__(self, name: Hashable, row: _R) -> _V:
        """The object of ``row`` (stored under ``name``), parsed only if it changed."""
        known = self._known.get(name)
        if known is not None and known[0] == row:
            return known[1]
        value = self._parse(row)
        self._known[name] = (row, value)
        return value


async def read_live(
    store: StoreReader, factory: str, on_read: Callable[[], object] | None = None
) -> LiveRead:
    """:meth:`StoreReader.live` of a store that reads its parts one by one, concurrently."""
    if on_read is not None:
        on_read()
    statuses, latest, gaps = await asyncio.gather(
        store.gateway_status(factory),
        store.latest_samples(factory),
        store.gateway_gaps(factory),
    )
    heard = {machine: LatestSample.of(stored) for machine, stored in latest.items()}
    return LiveRead(statuses, heard, gaps)
