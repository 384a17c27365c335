"""The capacity service's read model: what the API answers, computed from the store.

No figure here survives a restart or needs to: every figure is computed from the store
(telemetry, descriptions, statuses) and the booking file, so API replicas run side by side
and agree. A factory's live view is read again within ``view_ttl_s`` (0.5 s), its machines'
descriptions within ``descriptions_ttl_s`` (5 s: they change seldom), its capacity
per horizon computed again within ``cache_ttl_s`` (5 s) or as soon as the view's evidence
changes (a machine's state, a stop, an offline, stale or unreadable machine, a machine
described or withdrawn): ahead of those bounds, in the background, while requests are
served (kyoso/api/cache.py); concurrent requests for the same figure share one
computation. Learnt load profiles are brought up to date every ``profile_ttl_s``, hour by
hour, and may be kept between restarts (kyoso/api/learning.py).

**Staleness.** A machine whose latest sample is older than ``stale_after_s`` (or that has
none) is *stale*, and a factory is *offline* when every gateway it has reported is offline
or none of its machines is fresh. A stale machine, and every machine of an offline
factory, has its available capacity withdrawn with reason ``offline``: the platform must
never sell capacity on stale data.
"""

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable, Collection, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kyoso.capacity.aggregate import FactoryCapacity, MachineCapacity
from kyoso.capacity.assess import Evidence, assess, assess_hourly
from kyoso.capacity.forecast import Slice, forecast
from kyoso.capacity.history import FactoryHistory
from kyoso.capacity.kpi import Performance, TimeElements
from kyoso.capacity.repair import RepairRecord, stop
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import GatewayStatus, MachineDescription, MachineState
from kyoso.store import GapReport, LatestSample, StoreReader

from .bookings import BookingStore
from .cache import FreshCache
from .downtime import DownTimes
from .learning import HistoryLearner
from .phasing import Phasing
from .profile_file import ProfileFile

__all__ = ["CapacityService", "FactoryView", "MachineKpis", "MachineView"]


@dataclass(frozen=True, slots=True)
class MachineView:
    """A described machine and its live state."""

    description: MachineDescription
    latest: LatestSample | None
    stale: bool
    unreadable: bool = False
    """Heard, but its state unknown for ``unreadable_after_s`` (see capacity/evidence.py)."""
    down_for_s: float | None = None
    """Down now, for this long by its samples (None: not down)."""

    @property
    def newest(self) -> datetime | None:
        """When its latest sample ended (None: no sample yet)."""
        return None if self.latest is None else self.latest.ts


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
    read_at: float
    """When it was read, on the service's monotonic clock (what its figures' age counts from)."""
    evidence: Hashable
    """What of it decides capacity figures (:func:`_evidence_key`)."""


class _Evidence:
    """A view's evidence as a cache key: hashed once (a key is looked up for every factory
    of every regional request), compared in full."""

    __slots__ = ("_hash", "value")

    def __init__(self, value: Hashable) -> None:
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (
            isinstance(other, _Evidence) and self._hash == other._hash and self.value == other.value
        )


def _evidence_key(
    offline: bool, machines: dict[str, MachineView], minor_stop_max_s: float
) -> _Evidence:
    """What of a view decides capacity figures, but for time passing: capacity is computed
    again when it changes (a stop turning into a breakdown included)."""
    return _Evidence(
        (
            offline,
            tuple(
                (
                    name,
                    m.description.updated_at,
                    m.stale,
                    m.unreadable,
                    None if m.latest is None else m.latest.state,
                    m.down_for_s is not None and m.down_for_s >= minor_stop_max_s,
                )
                for name, m in machines.items()
            ),
        )
    )


@dataclass(frozen=True, slots=True)
class MachineKpis:
    """One machine's ISO 22400 figures over a window."""

    machine: str
    performance: Performance


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
        kept: ProfileFile | None = None,
    ) -> None:
        self.store = store
        self.bookings = bookings
        self.rules = rules
        self._clock = clock
        self._monotonic = monotonic
        self._backfilling = backfilling
        self._views: FreshCache[FactoryView] = FreshCache(
            rules.view_ttl_s, monotonic, serve_stale=False
        )
        self._factories: FreshCache[list[str]] = FreshCache(
            rules.view_ttl_s, monotonic, serve_stale=False
        )
        self._descriptions: FreshCache[list[MachineDescription]] = FreshCache(
            rules.descriptions_ttl_s, monotonic, serve_stale=False
        )
        self._capacity: FreshCache[FactoryCapacity] = FreshCache(
            rules.cache_ttl_s, monotonic, serve_stale=False
        )
        self._profiles: FreshCache[FactoryHistory] = FreshCache(
            rules.profile_ttl_s, monotonic, serve_stale=True
        )
        self.phasing = Phasing(self, FreshCache(rules.cache_ttl_s, monotonic, serve_stale=False))
        """The figures in time (kyoso/api/phasing.py)."""
        self._learner = HistoryLearner(store, rules, kept)
        self._down_times = DownTimes(store, rules.cache_ttl_s, monotonic)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="kyoso-capacity")
        """Where the forecasts' CPU work runs, one at a time: off the event loop, and never
        more than one thread contending with it for the interpreter."""

    async def close(self) -> None:
        """Stop what runs in the background, before the store and the bookings close."""
        caches = (self._views, self._factories, self._descriptions, self._capacity, self._profiles)
        for cache in caches:
            await cache.close()
        await self.phasing.close()
        await self._learner.close()
        self._worker.shutdown(wait=False, cancel_futures=True)

    def forget(self, factory: str, *, history: bool = False) -> None:
        """Recompute the factory's capacity on the next request (its bookings or holds
        changed), and with ``history`` its load profiles too (history was written into its
        past)."""
        self._capacity.forget(lambda key: isinstance(key, tuple) and key[0] == factory)
        self.phasing.forget(factory)
        if history:
            self._profiles.forget(lambda key: key == factory)
            self._learner.forget(factory)
            self._down_times.forget(factory)

    def cache_counts(self) -> dict[str, dict[str, int]]:
        """Each cache's lookups by outcome (for ``/metrics``)."""
        views = {k: n + self._factories.counts[k] for k, n in self._views.counts.items()}
        caches = {
            "descriptions": self._descriptions.counts,
            "capacity": self._capacity.counts,
            "profiles": self._profiles.counts,
            "history": self._learner.counts,
        }
        return {"views": views, **{name: dict(counts) for name, counts in caches.items()}}

    def now(self) -> datetime:
        """The service's clock (UTC)."""
        return datetime.fromtimestamp(self._clock(), UTC)

    async def factories(self) -> list[str]:
        """Every factory the store knows (cached briefly, like the views: every request
        for a factory checks that it exists)."""
        return await self._factories.get(None, self.store.factories)

    async def view(self, factory: str) -> FactoryView:
        """The factory's machines, gateways and staleness now (cached briefly)."""
        return await self._views.get(factory, lambda: self._view(factory), _read_at)

    async def _view(self, factory: str) -> FactoryView:
        read = [(self._monotonic(), self.now())]  # when it read, if it does not say
        descriptions, live = await asyncio.gather(
            self._descriptions.get(factory, lambda: self.store.machines(factory)),
            self.store.live(factory, lambda: read.append((self._monotonic(), self.now()))),
        )
        read_at, as_of = read[-1]
        statuses, latest, gaps = live.statuses, live.latest, live.gaps
        stale_after = self.rules.stale_after_s
        unreadable = await self._unreadable(factory, as_of, latest)
        down = await self._down_times.down_for(factory, as_of, latest)
        machines: dict[str, MachineView] = {}
        for description in descriptions:
            name = description.machine
            stored = latest.get(name)
            stale = stored is None or (as_of - stored.ts).total_seconds() > stale_after
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
            factory,
            as_of,
            machines,
            statuses,
            heard,
            gaps,
            offline,
            max(ends, default=None),
            read_at,
            _evidence_key(offline, machines, self.rules.minor_stop_max_s),
        )

    async def _unreadable(
        self, factory: str, as_of: datetime, latest: dict[str, LatestSample]
    ) -> set[str]:
        """The machines whose state is unknown now and was through the last
        ``unreadable_after_s``: none of that time was read (asked of the store only when
        some machine is unknown now)."""
        unknown = {m for m, s in latest.items() if s.state is MachineState.UNKNOWN}
        if not unknown:
            return set()
        start = as_of - timedelta(seconds=self.rules.unreadable_after_s)
        windows = await self.store.state_seconds(factory, None, start, as_of)
        read = {  # seconds of the window in a known state
            w.machine: sum(s for state, s in w.seconds.items() if state is not MachineState.UNKNOWN)
            for w in windows
        }
        return {m for m in unknown if read.get(m, 0.0) <= 0.0}

    async def history(self, factory: str, as_of: datetime) -> FactoryHistory:
        """What the factory's history up to the last whole hour teaches (learnt anew every
        ``profile_ttl_s``, hour by hour; after a restart, what was kept, checked in the
        background: kyoso/api/learning.py)."""

        async def learnt() -> FactoryHistory:
            early = await self._learner.early(factory, as_of)
            return early if early is not None else await self._learner.learn(factory, as_of)

        return await self._profiles.get(factory, learnt, self._learnt_at)

    def _learnt_at(self, history: FactoryHistory) -> float:
        """When a history was learnt; one kept from before a restart and not yet checked
        against the store, a time to live ago: served, and checked at once in the
        background."""
        if self._learner.checked(history):
            return self._monotonic()
        return self._monotonic() - self.rules.profile_ttl_s

    async def capacity(self, factory: str, horizon: timedelta) -> FactoryCapacity:
        """Every described machine's capacity over the horizon from now (cached briefly),
        computed from a view with the same evidence as the factory's current one: the
        capacity and ``/v1/factories`` (its offline flags, its machines) never disagree."""
        view = await self.view(factory)
        return await self._capacity.get(*self._refreshed(view, horizon))

    async def _compute_capacity(self, view: FactoryView, horizon: timedelta) -> FactoryCapacity:
        machines = [m for m, _ in await self.assessed(view, horizon)]
        return FactoryCapacity(
            view.factory, view.as_of, horizon, view.offline, view.newest, machines
        )

    async def assessed(
        self,
        view: FactoryView,
        horizon: timedelta,
        *,
        hourly: bool = False,
        only: Collection[str] | None = None,
    ) -> list[tuple[MachineCapacity, list[Slice]]]:
        """Each described machine of ``view`` (or ``only`` those) assessed over the
        horizon from the view's moment, with its bookings and the platform's holds; with
        ``hourly``, hour by hour too (kyoso/capacity/phased.py)."""
        history = await self.history(view.factory, view.as_of)
        backfilling = self._backfilling()

        def assessed() -> list[tuple[MachineCapacity, list[Slice]]]:
            declared = self.bookings.declared(view.factory)
            held = self.bookings.holds.active(view.factory, view.as_of)
            machines = []
            for name, machine in view.machines.items():
                if only is not None and name not in only:
                    continue
                learnt = history.learnt(machine.description)
                evidence = self._evidence(view, machine, learnt.repairs)
                options: dict[str, Any] = {
                    "as_of": view.as_of,
                    "horizon": horizon,
                    "rules": self.rules,
                    "bookings": declared.get(name),
                    "held": held.get(name, ()),
                    "backfilling": backfilling,
                }
                if hourly:
                    machines.append(
                        assess_hourly(machine.description, learnt.profile, evidence, **options)
                    )
                else:
                    machines.append(
                        (assess(machine.description, learnt.profile, evidence, **options), [])
                    )
                time.sleep(0)  # the event loop may have the interpreter: it need not wait 5 ms
            return machines

        # The bookings' and holds' reads and the CPU work (an hour loop per machine): off
        # the loop.
        return await asyncio.get_running_loop().run_in_executor(self._worker, assessed)

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
        learnt = (await self.history(factory, view.as_of)).learnt(found.description)
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
        learnt = (await self.history(factory, view.as_of)).learnt(found.description)
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
        worked (its bookings, expected load, and the platform's holds and orders on it):
        what a neighbour must take if it cannot."""
        view = await self.view(factory)
        found = view.machines[machine]
        history = await self.history(factory, view.as_of)
        profile = history.learnt(found.description).profile
        declared = await asyncio.to_thread(self.bookings.declared, factory)
        held = await asyncio.to_thread(self.bookings.holds.held_on, factory, machine, view.as_of)
        figures = forecast(
            found.description.calendar,
            profile,
            view.as_of,
            span,
            bookings=declared.get(machine),
            held=held[1],
        )
        return figures.committed_s

    async def region(self, horizon: timedelta) -> list[FactoryCapacity]:
        """The capacity of every factory over the horizon: what can be served at once, and
        what cannot waited for, concurrently; again if, meanwhile, some figures passed their
        bound (no answer carries figures older than ``cache_ttl_s``, unless computing them
        takes about as long, when the third try is served)."""
        for again in range(3):
            ready = {f: self._ready_view(f) for f in await self.factories()}
            late = [f for f, view in ready.items() if view is None]
            waited_views = await asyncio.gather(*(self.view(f) for f in late))
            views = {f: v for f, v in ready.items() if v is not None}
            views |= zip(late, waited_views, strict=True)
            found: dict[str, tuple[FactoryCapacity, float] | None] = {}  # with when born
            served: dict[Hashable, tuple[FactoryView, float]] = {}  # by key: view, born
            for factory in ready:  # in the factories' order
                view = views[factory]
                key = (factory, horizon, view.evidence)
                found[factory] = peeked = self._capacity.peek(key)
                if peeked is not None:
                    served[key] = (view, peeked[1])
            if any(self._capacity.due(key, born) for key, (_, born) in served.items()):
                # The region's figures are computed again together, those due within half
                # their life too: its answer changes once (kyoso/api/cache.py), not per
                # factory.
                half = self.rules.cache_ttl_s / 2
                self._capacity.refresh(
                    [
                        self._refreshed(view, horizon)
                        for key, (view, born) in served.items()
                        if self._capacity.due(key, born, within_s=half)
                    ]
                )
            wait = [f for f, capacity in found.items() if capacity is None]
            waited = await asyncio.gather(
                *(self._capacity.fetch(*self._refreshed(views[f], horizon)) for f in wait)
            )
            found |= zip(wait, waited, strict=True)
            answer = [capacity for capacity in found.values() if capacity is not None]
            oldest = min((born for _, born in answer), default=math.inf)
            if again == 2 or self._capacity.fresh(oldest):
                break
        return [capacity for capacity, _ in answer]

    def _ready_view(self, factory: str) -> FactoryView | None:
        return self._views.ready(factory, functools.partial(self._view, factory), _read_at)

    def _refreshed(
        self, view: FactoryView, horizon: timedelta
    ) -> tuple[Hashable, Callable[[], Awaitable[FactoryCapacity]], Callable[[object], float]]:
        """The capacity's cache key for ``view``, how to compute it, and when its figures
        were born: when the view they come from was read."""
        return (
            (view.factory, horizon, view.evidence),
            lambda: self._compute_capacity(view, horizon),
            lambda _: view.read_at,
        )

    async def kpis(
        self,
        view: FactoryView,
        start: datetime,
        end: datetime,
        machine: str | None = None,
        *,
        shared_only: bool = False,
    ) -> list[MachineKpis]:
        """ISO 22400 figures over ``[start, end)`` of each machine described in ``view`` (or
        one), with ``shared_only`` of those whose factory shares their KPIs
        (``sharing.kpis``) alone: then the store is not asked when none does."""
        described = {
            name: m.description
            for name, m in view.machines.items()
            if (machine is None or name == machine)
            and (m.description.sharing.kpis or not shared_only)
        }
        if not described:
            return []
        states, counters = await asyncio.gather(
            self.store.state_seconds(view.factory, machine, start, end),
            self.store.counter_totals(view.factory, machine, start, end),
        )
        counts = {c.machine: c.totals for c in counters}
        result = []
        for window in states:
            description = described.get(window.machine)
            if description is None:
                continue
            pbt = description.calendar.planned_seconds(start, end)
            elements = TimeElements.measured(pbt, window.seconds, window.no_data_s)
            performance = Performance.of_machine(
                elements, counts.get(window.machine, {}), description.ideal_cycle_time_s
            )
            result.append(MachineKpis(window.machine, performance))
        return result


def _read_at(view: FactoryView) -> float:
    return view.read_at
