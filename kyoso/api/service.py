"""The capacity service's read model: what the API answers, computed from the store.

Nothing here survives a restart or needs to: every figure is recomputed from the store
(telemetry, descriptions, statuses) and the booking file, so API replicas run side by side
and agree. A factory's live view is read again after ``view_ttl_s`` (1 s), its capacity per
horizon computed again after ``cache_ttl_s`` (5 s) or as soon as the view's evidence
changes (a machine's state, a stop, an offline, stale or unreadable machine, a machine
described or withdrawn), and learnt load profiles after ``profile_ttl_s``; concurrent
requests for the same figure share one computation.

**Staleness.** A machine whose latest sample is older than ``stale_after_s`` (or that has
none) is *stale*, and a factory is *offline* when every gateway it has reported is offline
or none of its machines is fresh. A stale machine, and every machine of an offline
factory, has its available capacity withdrawn with reason ``offline``: the platform must
never sell capacity on stale data.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar, cast

from kyoso.capacity.aggregate import FactoryCapacity
from kyoso.capacity.assess import Evidence, assess
from kyoso.capacity.forecast import LoadProfile, forecast
from kyoso.capacity.kpi import Performance, TimeElements
from kyoso.capacity.repair import RepairRecord, stop
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import GatewayStatus, MachineDescription, MachineState
from kyoso.store import GapReport, StateRun, StateWindow, StoredSample, StoreReader

from .bookings import BookingStore

__all__ = ["CapacityService", "FactoryView", "MachineKpis", "MachineView"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)
_DOWN_RUN_SPAN: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class MachineView:
    """A described machine and its live state."""

    description: MachineDescription
    latest: StoredSample | None
    stale: bool
    unreadable: bool = False
    """Heard, but its state unknown for ``unreadable_after_s`` (see capacity/evidence.py)."""
    down_for_s: float | None = None
    """Down now, for this long by its samples (None: not down)."""

    @property
    def newest(self) -> datetime | None:
        """When its latest sample ended (None: no sample yet)."""
        return None if self.latest is None else self.latest.sample.ts


@dataclass(frozen=True, slots=True)
class FactoryView:
    """A factory now: its machines, gateways and whether it is offline."""

    factory: str
    as_of: datetime
    machines: dict[str, MachineView]
    gateways: list[GatewayStatus]
    heard: dict[str, datetime]
    """When each gateway's latest sample of any machine was received (last heard of)."""
    gaps: dict[str, GapReport]
    """Each reported gateway's samples no ingest worker has taken (the ingest's last word)."""
    offline: bool
    newest: datetime | None
    """When the newest sample of any machine ended (None: no sample yet)."""


def _evidence_key(view: FactoryView, minor_stop_max_s: float) -> Hashable:
    """What of a view decides capacity figures, but for time passing: capacity is computed
    again when it changes (a stop turning into a breakdown included)."""
    return (
        view.offline,
        tuple(
            (
                name,
                m.description.updated_at,
                m.stale,
                m.unreadable,
                None if m.latest is None else m.latest.sample.state,
                m.down_for_s is not None and m.down_for_s >= minor_stop_max_s,
            )
            for name, m in view.machines.items()
        ),
    )


@dataclass(frozen=True, slots=True)
class _Learnt:
    """What a machine's history teaches: its load profile and its breakdowns."""

    profile: LoadProfile
    repairs: RepairRecord


@dataclass(frozen=True, slots=True)
class MachineKpis:
    """One machine's ISO 22400 figures over a window."""

    machine: str
    performance: Performance


class _Cache:
    """Values by key for a time to live.

    A key asked for the first time is computed while the caller waits (concurrent callers
    share that one computation). What happens once its time to live is over depends on what
    is cached. Figures served to a client (``serve_stale`` false) are never older than the
    time to live: the next caller waits for them to be computed again, and so do the
    callers arriving meanwhile; a failure reaches them all, never an old value. What only
    shapes figures (learnt load profiles, ``serve_stale`` true) is served while one refresh
    runs in the background, so no request waits for it after the first. At most
    ``max_entries`` keys are kept: the ones read longest ago go first (a client cycling
    through horizons cannot fill the memory).
    """

    def __init__(
        self,
        ttl_s: float,
        clock: Callable[[], float],
        *,
        serve_stale: bool,
        max_entries: int = 256,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.serve_stale = serve_stale
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}
        self._refreshing: set[asyncio.Task[None]] = set()
        self.counts = {"hit": 0, "miss": 0, "expired": 0, "refresh": 0, "refresh_failed": 0}
        """Lookups answered from the cache, computed (new, or too old to serve), and
        background refreshes started and failed."""

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[_T]]) -> _T:
        entry = self._entries.pop(key, None)
        outcome = "miss" if entry is None else "hit"
        if (
            entry is not None
            and not self.serve_stale
            and entry.value.done()
            and entry.expires <= self._clock()
        ):
            entry, outcome = None, "expired"  # too old to serve: computed while callers wait
        self.counts[outcome] += 1
        if entry is None:
            entry = _Entry(asyncio.get_running_loop().create_future(), 0.0)
            self._store(key, entry)
            await self._fill(key, entry, compute)
        else:
            self._entries[key] = entry  # now the most recently read
            if entry.expires <= self._clock() and entry.value.done() and not entry.refreshing:
                entry.refreshing = True
                self.counts["refresh"] += 1
                task = asyncio.create_task(self._refresh(key, entry, compute))
                self._refreshing.add(task)
                task.add_done_callback(self._refreshing.discard)
        return cast(_T, await asyncio.shield(entry.value))

    def _store(self, key: Hashable, entry: "_Entry") -> None:
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            del self._entries[next(iter(self._entries))]

    async def _fill(
        self, key: Hashable, entry: "_Entry", compute: Callable[[], Awaitable[_T]]
    ) -> None:
        try:
            value = await compute()
        except BaseException as exc:
            if self._entries.get(key) is entry:
                del self._entries[key]
            entry.value.set_exception(exc)
            entry.value.exception()  # retrieved: waiters re-raise it
            raise
        entry.value.set_result(value)
        entry.expires = self._clock() + self.ttl_s

    async def _refresh(
        self, key: Hashable, entry: "_Entry", compute: Callable[[], Awaitable[_T]]
    ) -> None:
        fresh = _Entry(asyncio.get_running_loop().create_future(), 0.0)
        try:
            await self._fill(key, fresh, compute)
        except Exception:  # keep serving the value we have; the next read tries again
            log.warning("refreshing %r failed; serving the previous value", key, exc_info=True)
            self.counts["refresh_failed"] += 1
            entry.refreshing = False
            return
        if self._entries.get(key) is entry:
            self._entries[key] = fresh

    def forget(self, match: Callable[[Hashable], bool]) -> None:
        """Drop the entries whose key matches (their data changed)."""
        for key in [k for k in self._entries if match(k)]:
            del self._entries[key]


@dataclass(slots=True)
class _Entry:
    value: "asyncio.Future[object]"
    expires: float
    refreshing: bool = False


class CapacityService:
    """Answers the API's questions from a store reader and the booking file."""

    def __init__(
        self,
        store: StoreReader,
        bookings: BookingStore,
        rules: CapacityRules,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backfilling: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.bookings = bookings
        self.rules = rules
        self._clock = clock
        self._backfilling = backfilling
        self._views = _Cache(rules.view_ttl_s, monotonic, serve_stale=False)
        self._capacity = _Cache(rules.cache_ttl_s, monotonic, serve_stale=False)
        self._profiles = _Cache(rules.profile_ttl_s, monotonic, serve_stale=True)

    def forget(self, factory: str, *, history: bool = False) -> None:
        """Recompute the factory's capacity on the next request (its bookings changed), and
        with ``history`` its load profiles too (history was written into its past)."""
        self._capacity.forget(lambda key: isinstance(key, tuple) and key[0] == factory)
        if history:
            self._profiles.forget(lambda key: isinstance(key, tuple) and key[0] == factory)

    def cache_counts(self) -> dict[str, dict[str, int]]:
        """Each cache's lookups by outcome (for ``/metrics``)."""
        caches = {"views": self._views, "capacity": self._capacity, "profiles": self._profiles}
        return {name: dict(cache.counts) for name, cache in caches.items()}

    def now(self) -> datetime:
        """The service's clock (UTC)."""
        return datetime.fromtimestamp(self._clock(), UTC)

    async def factories(self) -> list[str]:
        """Every factory the store knows (cached briefly, like the views: every request
        for a factory checks that it exists)."""
        return await self._views.get(("factories",), self.store.factories)  # no id is a tuple

    async def view(self, factory: str) -> FactoryView:
        """The factory's machines, gateways and staleness now (cached briefly)."""
        return await self._views.get(factory, lambda: self._view(factory))

    async def _view(self, factory: str) -> FactoryView:
        as_of = self.now()
        descriptions, statuses, latest, gaps = await asyncio.gather(
            self.store.machines(factory),
            self.store.gateway_status(factory),
            self.store.latest_samples(factory),
            self.store.gateway_gaps(factory),
        )
        stale_after = self.rules.stale_after_s
        unreadable = await self._unreadable(factory, as_of, latest)
        down = await self._down_for(factory, as_of, latest)
        machines: dict[str, MachineView] = {}
        for description in descriptions:
            name = description.machine
            stored = latest.get(name)
            stale = stored is None or (as_of - stored.sample.ts).total_seconds() > stale_after
            machines[name] = MachineView(
                description, stored, stale, name in unreadable, down.get(name)
            )
        ends = [v.newest for v in machines.values() if v.newest is not None]
        all_offline = bool(statuses) and all(s.status == "offline" for s in statuses)
        offline = all_offline or all(v.stale for v in machines.values())
        heard: dict[str, datetime] = {}
        for stored in latest.values():
            known = heard.get(stored.gateway, stored.received_at)
            heard[stored.gateway] = max(known, stored.received_at)
        return FactoryView(
            factory, as_of, machines, statuses, heard, gaps, offline, max(ends, default=None)
        )

    async def _unreadable(
        self, factory: str, as_of: datetime, latest: dict[str, StoredSample]
    ) -> set[str]:
        """The machines whose state is unknown now and was through the last
        ``unreadable_after_s``: none of that time was read (asked of the store only when
        some machine is unknown now)."""
        unknown = {m for m, s in latest.items() if s.sample.state is MachineState.UNKNOWN}
        if not unknown:
            return set()
        start = as_of - timedelta(seconds=self.rules.unreadable_after_s)
        windows = await self.store.state_seconds(factory, None, start, as_of)
        read = {  # seconds of the window in a known state
            w.machine: sum(s for state, s in w.seconds.items() if state is not MachineState.UNKNOWN)
            for w in windows
        }
        return {m for m in unknown if read.get(m, 0.0) <= 0.0}

    async def _down_for(
        self, factory: str, as_of: datetime, latest: dict[str, StoredSample]
    ) -> dict[str, float]:
        """How long each machine down now has been down: from the start of its down run
        going on at its latest sample to that sample's end (asked of the store only when
        some machine is down; runs are looked for over the last ``_DOWN_RUN_SPAN``, so a
        longer stop counts as that long)."""
        down = {m: s.sample.ts for m, s in latest.items() if s.sample.state is MachineState.DOWN}
        if not down:
            return {}
        end = max(as_of, *down.values())
        runs = await self.store.state_runs(factory, MachineState.DOWN, end - _DOWN_RUN_SPAN, end)
        going = {r.machine: r for r in runs if r.ongoing}  # sorted by start: the last wins
        found: dict[str, float] = {}
        for machine, ts in down.items():
            run = going.get(machine)
            started = run.start if run is not None and run.end == ts else ts
            found[machine] = (ts - started).total_seconds()
        return found

    async def _learnt(self, factory: str, view: FactoryView) -> dict[str, "_Learnt"]:
        """Each machine's load profile and breakdowns over the lookback (cached for
        ``profile_ttl_s``; history up to the last whole hour)."""

        async def compute() -> dict[str, _Learnt]:
            end = view.as_of.replace(minute=0, second=0, microsecond=0)
            start = end - self.rules.lookback
            windows, runs = await asyncio.gather(
                self.store.state_seconds(factory, None, start, end, 3600.0),
                self.store.state_runs(factory, MachineState.DOWN, start, end),
            )
            by_machine: dict[str, list[StateWindow]] = {}
            for window in windows:
                by_machine.setdefault(window.machine, []).append(window)
            runs_of: dict[str, list[StateRun]] = {}
            for run in runs:
                runs_of.setdefault(run.machine, []).append(run)
            return await asyncio.to_thread(
                lambda: {
                    m: _Learnt(
                        LoadProfile.build(
                            by_machine.get(m, []), v.description.calendar, start, end
                        ),
                        RepairRecord.learn(runs_of.get(m, []), self.rules, end),
                    )
                    for m, v in view.machines.items()
                }
            )

        # Keyed by the machines too: a machine described since is learnt at once.
        return await self._profiles.get((factory, tuple(view.machines)), compute)

    async def capacity(self, factory: str, horizon: timedelta) -> FactoryCapacity:
        """Every described machine's capacity over the horizon from now (cached briefly),
        computed from a view with the same evidence as the factory's current one: the
        capacity and ``/v1/factories`` (its offline flags, its machines) never disagree."""
        view = await self.view(factory)
        return await self._capacity.get(
            (factory, horizon, _evidence_key(view, self.rules.minor_stop_max_s)),
            lambda: self._compute_capacity(view, horizon),
        )

    async def _compute_capacity(self, view: FactoryView, horizon: timedelta) -> FactoryCapacity:
        learnt = await self._learnt(view.factory, view)
        declared = await asyncio.to_thread(self.bookings.declared, view.factory)
        backfilling = self._backfilling()
        machines = await asyncio.to_thread(  # CPU (an hour loop per machine): off the loop
            lambda: [
                assess(
                    machine.description,
                    learnt[name].profile,
                    self._evidence(view, machine, learnt[name].repairs),
                    as_of=view.as_of,
                    horizon=horizon,
                    rules=self.rules,
                    bookings=declared.get(name),
                    backfilling=backfilling,
                )
                for name, machine in view.machines.items()
            ]
        )
        return FactoryCapacity(
            view.factory, view.as_of, horizon, view.offline, view.newest, machines
        )

    @staticmethod
    def _evidence(view: FactoryView, machine: MachineView, repairs: RepairRecord) -> Evidence:
        return Evidence(
            stale=machine.stale,
            offline=view.offline,
            unreadable=machine.unreadable,
            down_for_s=machine.down_for_s,
            newest=machine.newest,
            repairs=repairs,
        )

    async def outage_s(self, factory: str, machine: str) -> float | None:
        """How long ``machine`` is expected to be out from now: the rest of a stop under way,
        the prior repair time for a machine withdrawn as offline or unreadable (nothing is
        known of it), None for a machine that works."""
        view = await self.view(factory)
        found = view.machines[machine]
        learnt = (await self._learnt(factory, view))[machine]
        if found.stale or view.offline or found.unreadable:
            return self.rules.repair_estimate_s
        stopped = stop(found.down_for_s, learnt.repairs, self.rules)
        return None if stopped is None else stopped[1]

    async def attainable(
        self, factory: str, machine: str, start: datetime, end: datetime
    ) -> tuple[float, float]:
        """Planned and attainable seconds of ``machine`` within ``[start, end)`` from now
        on: its planned time less expected losses and, if it is down now, the time until
        its expected repair (no load counted: what bookings could fill at most)."""
        view = await self.view(factory)
        found = view.machines[machine]
        begin = max(start, view.as_of)
        if end <= begin:
            return 0.0, 0.0
        learnt = (await self._learnt(factory, view))[machine]
        stopped = stop(found.down_for_s, learnt.repairs, self.rules)
        figures = forecast(
            found.description.calendar,
            learnt.profile,
            begin,
            end - begin,
            down_now=stopped is not None,
            repair_estimate=timedelta(seconds=0.0 if stopped is None else stopped[1]),
        )
        return figures.total_s, figures.total_s - figures.unattainable_s

    async def expected_work(self, factory: str, machine: str, span: timedelta) -> float:
        """Seconds of work ``machine`` was expected to do in ``span`` from now, as if it
        worked (its bookings and expected load): what a neighbour must take if it cannot."""
        view = await self.view(factory)
        found = view.machines[machine]
        profile = (await self._learnt(factory, view))[machine].profile
        declared = await asyncio.to_thread(self.bookings.declared, factory)
        figures = forecast(
            found.description.calendar, profile, view.as_of, span, bookings=declared.get(machine)
        )
        return figures.committed_s

    async def region(self, horizon: timedelta) -> list[FactoryCapacity]:
        """The capacity of every factory over the horizon."""
        factories = await self.factories()
        return list(await asyncio.gather(*(self.capacity(f, horizon) for f in factories)))

    async def kpis(
        self, factory: str, start: datetime, end: datetime, machine: str | None = None
    ) -> list[MachineKpis]:
        """ISO 22400 figures of each described machine (or one) over ``[start, end)``."""
        view = await self.view(factory)
        states, counters = await asyncio.gather(
            self.store.state_seconds(factory, machine, start, end),
            self.store.counter_totals(factory, machine, start, end),
        )
        counts = {c.machine: c.totals for c in counters}
        result = []
        for window in states:
            described = view.machines.get(window.machine)
            if described is None:
                continue
            description = described.description
            pbt = description.calendar.planned_seconds(start, end)
            elements = TimeElements.measured(pbt, window.seconds, window.no_data_s)
            performance = Performance.of_machine(
                elements, counts.get(window.machine, {}), description.ideal_cycle_time_s
            )
            result.append(MachineKpis(window.machine, performance))
        return result
