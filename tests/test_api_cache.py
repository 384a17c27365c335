"""The capacity service's caches (kyoso/api/cache.py): values computed again ahead of their
bound so that no request waits, never served past it, one computation per key at a time,
and a region's figures computed again together. Clocks are the tests': no wall-clock
deadline is asserted, only orders and counts."""

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from apikit import Clocks, Region, build_region, copy_region

from kyoso.api.bookings import BookingStore
from kyoso.api.cache import FreshCache
from kyoso.api.profile_file import ProfileFile
from kyoso.api.service import CapacityService
from kyoso.capacity.rules import CapacityRules
from kyoso.store import SqliteStore

TTL_S = 5.0


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _computation(clock: _Clock, took_s: float) -> tuple[Callable[[], Awaitable[float]], list[int]]:
    """A computation that takes ``took_s`` on ``clock`` (letting others run meanwhile)
    and answers when it began; and how many run at once, over time."""
    running = [0]
    seen: list[int] = []

    async def compute() -> float:
        began = clock.now
        running[0] += 1
        seen.append(running[0])
        await asyncio.sleep(0)
        clock.now += took_s
        running[0] -= 1
        return began

    return compute, seen


def _look_up_for_a_minute(
    cache: FreshCache[float], clock: _Clock, compute: Callable[[], Awaitable[float]]
) -> None:
    """Look ``k`` up every 0.1 s for a minute; no value served is as old as its bound."""

    async def scenario() -> None:
        await cache.get("k", compute)
        while clock.now < 60:
            born = await cache.get("k", compute)
            assert clock.now - born < TTL_S
            clock.now += 0.1
            for _ in range(5):  # what runs in the background goes on meanwhile
                await asyncio.sleep(0)

    asyncio.run(scenario())


def test_values_are_computed_again_ahead_and_never_served_past_their_bound() -> None:
    """Lookups every 0.1 s for a minute of a value that takes 1 s to compute: after the
    first, no lookup waits (none finds its value at the bound), every value served is
    younger than the time to live, and one computation runs at a time."""
    clock = _Clock()
    cache: FreshCache[float] = FreshCache(TTL_S, clock, serve_stale=False)
    compute, running = _computation(clock, took_s=1.0)

    _look_up_for_a_minute(cache, clock, compute)
    assert cache.counts["miss"] == 1
    assert cache.counts["expired"] == 0
    assert cache.counts["refresh"] >= 60 // TTL_S
    assert cache.counts["refresh_failed"] == 0
    assert max(running) == 1


def test_a_source_slower_than_half_the_time_to_live_is_not_read_ahead() -> None:
    """Lookups every 0.1 s of a value that takes 3 s of a 5 s time to live: read ahead, it
    would be computed again as soon as it is done (every 3 s, the slower the source, the
    more often). After the first time, which teaches it how slow the source is, the lookup
    at its bound waits instead: one computation per time to live, and no value served
    past its bound."""
    clock = _Clock()
    cache: FreshCache[float] = FreshCache(TTL_S, clock, serve_stale=False)
    compute, _ = _computation(clock, took_s=3.0)

    _look_up_for_a_minute(cache, clock, compute)
    assert cache.counts["refresh"] == 1
    assert cache.counts["expired"] <= 60 // TTL_S + 1


def test_a_slow_first_computation_does_not_set_how_early_values_are_computed_again() -> None:
    """A first computation of 4 s (a cold start, its queue), then 0.2 s each time: once a
    value has been computed again, values are computed again by how long that took, not
    4 s ahead (which, decaying, had them computed every 2.5 s for half a minute): in a
    minute of lookups every 0.1 s, one computation per time to live less at most a fifth
    of it (a tenth at least ahead, as much again by key)."""
    clock = _Clock()
    cache: FreshCache[float] = FreshCache(TTL_S, clock, serve_stale=False)
    durations = itertools.chain([4.0], itertools.repeat(0.2))

    async def compute() -> float:
        began = clock.now
        await asyncio.sleep(0)
        clock.now += next(durations)
        return began

    _look_up_for_a_minute(cache, clock, compute)
    assert cache.counts["expired"] == 0
    assert cache.counts["refresh"] <= 60 // (TTL_S - 2 * TTL_S * 0.1)


def test_values_are_computed_again_by_how_long_computations_take_not_the_slowest() -> None:
    """Computations of 1 s each, but one of 3 s early on: once they have been steady a
    while, a value of 5 s is computed again about a second and a tenth of its life before
    its bound (their mean and deviation, and up to a tenth more by key), not twice the
    slowest recent one (2.5 s at most: every 2.5-3 s, a value read twice as often)."""
    clock = _Clock()
    cache: FreshCache[float] = FreshCache(TTL_S, clock, serve_stale=False)
    durations = itertools.chain([1.0, 1.0, 3.0], itertools.repeat(1.0))
    began: list[float] = []

    async def compute() -> float:
        began.append(clock.now)
        await asyncio.sleep(0)
        clock.now += next(durations)
        return began[-1]

    _look_up_for_a_minute(cache, clock, compute)
    assert cache.counts["expired"] <= 1  # the slow one, unforeseen, may be waited for
    later = [t for t in began if t >= 40]
    assert len(later) >= 4
    assert min(b - a for a, b in itertools.pairwise(later)) >= TTL_S - 1.0 - 2 * 0.1 * TTL_S


def test_a_value_at_its_bound_waits_and_a_failure_is_no_old_value() -> None:
    """A value nobody asked for ahead of its bound is computed again by the lookup that
    finds it there, which waits; and when that fails it gets the error, not the value."""
    clock = _Clock()
    cache: FreshCache[str] = FreshCache(TTL_S, clock, serve_stale=False)
    answers = iter(["first", "second"])

    async def compute() -> str:
        return next(answers)

    async def scenario() -> None:
        assert await cache.get("k", compute) == "first"
        clock.now = TTL_S / 2
        assert await cache.get("k", compute) == "first"
        clock.now = TTL_S
        assert await cache.get("k", compute) == "second"
        assert cache.counts["expired"] == 1
        assert cache.counts["refresh"] == 0
        clock.now = 2 * TTL_S

        async def failing() -> str:
            raise RuntimeError("the store is down")

        with pytest.raises(RuntimeError, match="the store is down"):
            await cache.get("k", failing)

    asyncio.run(scenario())


def test_what_was_learnt_together_is_learnt_again_apart() -> None:
    """Values served past their time to live (learnt profiles), all computed at the start,
    are computed again over the last tenth of it, by key, not all at once; each once."""
    clock = _Clock()
    cache: FreshCache[str] = FreshCache(600.0, clock, serve_stale=True)
    keys = [f"factory-{i}" for i in range(40)]

    async def compute() -> str:
        return "learnt"

    async def scenario() -> list[int]:
        for key in keys:
            await cache.get(key, compute)
        started = []
        for now in (500.0, 550.0, 570.0, 590.0, 600.0, 601.0):
            clock.now = now
            for key in keys:
                assert await cache.get(key, compute) == "learnt"  # never waited for
            started.append(cache.counts["refresh"])
            await asyncio.sleep(0)
        return started

    started = asyncio.run(scenario())
    assert started[0] == 0
    assert 0 < started[1] < started[3] < len(keys)
    assert started[-2:] == [len(keys), len(keys)]
    assert cache.counts["miss"] == len(keys)


def test_concurrent_lookups_share_one_computation() -> None:
    clock = _Clock()
    cache: FreshCache[float] = FreshCache(TTL_S, clock, serve_stale=False)
    compute, running = _computation(clock, took_s=1.0)
    calls = itertools.count()

    async def counted() -> float:
        next(calls)
        return await compute()

    async def scenario() -> None:
        found = await asyncio.gather(*(cache.get("k", counted) for _ in range(20)))
        assert len(set(found)) == 1
        clock.now = found[0] + TTL_S - 0.5  # due ahead: every lookup sees it, one computes
        for _ in range(20):
            await cache.get("k", counted)
        await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert next(calls) == 2
    assert cache.counts["refresh"] == 1
    assert max(running) == 1


def test_values_computed_again_together_replace_the_old_at_once() -> None:
    clock = _Clock()
    cache: FreshCache[str] = FreshCache(TTL_S, clock, serve_stale=False)
    release = asyncio.Event

    async def scenario() -> None:
        slow_done = release()

        async def old(name: str) -> str:
            return f"old {name}"

        async def fast() -> str:
            return "new a"

        async def slow() -> str:
            await slow_done.wait()
            return "new b"

        for name in "ab":
            await cache.get(name, lambda n=name: old(n))  # type: ignore[misc]
        cache.refresh([("a", fast, None), ("b", slow, None)])
        for _ in range(5):
            await asyncio.sleep(0)
        assert [cache.ready(k, fast) for k in "ab"] == ["old a", "old b"]  # a is done, b not
        slow_done.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert [cache.ready(k, fast) for k in "ab"] == ["new a", "new b"]

    asyncio.run(scenario())


class _SlowStore:
    """The region's store, each query taking 10 ms on the test's clocks (and counted by
    name in ``asked``)."""

    def __init__(self, store: SqliteStore, clocks: Clocks, asked: Counter[str]) -> None:
        self._store = store
        self._clocks = clocks
        self._asked = asked

    def __getattr__(self, name: str) -> object:
        found = getattr(self._store, name)
        if not asyncio.iscoroutinefunction(found):
            return found

        async def slow(*args: object, **kwargs: object) -> object:
            self._asked[name] += 1
            self._clocks.advance(0.01)
            return await found(*args, **kwargs)

        return slow


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 2)


def _service(
    region: Region,
    workdir: Path,
    clocks: Clocks,
    store: SqliteStore,
    *,
    asked: Counter[str] | None = None,
    kept: ProfileFile | None = None,
) -> CapacityService:
    return CapacityService(
        _SlowStore(store, clocks, Counter() if asked is None else asked),  # type: ignore[arg-type]
        BookingStore(workdir / "bookings.sqlite3"),
        CapacityRules(stale_after_s=3600),
        clock=clocks.now,
        monotonic=clocks.monotonic,
        kept=kept,
    )


def test_a_view_is_as_old_as_its_read_not_its_wait_for_the_store(
    region: Region, tmp_path: Path
) -> None:
    """A view's read that waits for the store (10 ms here, as for a free connection) is
    born when the store began reading: the wait does not age its figures."""
    clocks = Clocks(region.end + timedelta(seconds=30))

    async def scenario() -> None:
        async with SqliteStore(region.path) as store:
            service = _service(region, tmp_path, clocks, store)
            asked, asked_wall = clocks.monotonic(), clocks.wall
            view = await service.view(next(iter(region.simulations)))
            waited = 0.02  # its machines' descriptions are asked first, then its live read
            assert view.read_at == asked + waited
            assert view.as_of == asked_wall + timedelta(seconds=waited)
            service.bookings.close()

    asyncio.run(scenario())


def test_descriptions_are_read_by_their_own_time_to_live_not_with_every_view(
    region: Region, tmp_path: Path
) -> None:
    """Views read every 0.5 s for a minute; the machines' descriptions, which change seldom,
    every 5 s (descriptions_ttl_s): a machine withdrawn shows within that."""
    clocks = Clocks(region.end + timedelta(seconds=30))
    factory = next(iter(region.simulations))
    asked: Counter[str] = Counter()

    async def scenario() -> int:
        async with SqliteStore(copy_region(region, tmp_path).path) as store:
            service = _service(region, tmp_path, clocks, store, asked=asked)
            try:
                machine = min((await service.view(factory)).machines)
                for step in range(120):
                    if step == 60:
                        await store.remove_description(factory, machine)
                    if machine not in (await service.view(factory)).machines:
                        return step
                    clocks.advance(0.5)
                    for _ in range(5):  # what runs in the background goes on meanwhile
                        await asyncio.sleep(0)
                return -1
            finally:
                service.bookings.close()

    withdrawn_at = asyncio.run(scenario())
    rules = CapacityRules()
    assert rules.descriptions_ttl_s == 5.0
    assert 60 <= withdrawn_at <= 60 + rules.descriptions_ttl_s / 0.5
    assert asked["live"] >= withdrawn_at
    assert asked["machines"] <= asked["live"] / 5


def test_a_restart_answers_from_the_kept_history_and_checks_it_behind(
    region: Region, tmp_path: Path
) -> None:
    """After a restart, a factory's first figures read no history from the store: the one
    kept is served, and checked against the store in the background when the figures are
    computed next (kyoso/api/learning.py)."""
    clocks = Clocks(region.end + timedelta(seconds=30))
    factory = next(iter(region.simulations))
    horizon = timedelta(hours=24)

    def started(store: SqliteStore, asked: Counter[str]) -> CapacityService:
        kept = ProfileFile(tmp_path / "profiles.sqlite3", "the region")
        return _service(region, tmp_path, clocks, store, asked=asked, kept=kept)

    async def scenario() -> tuple[Counter[str], dict[str, int]]:
        async with SqliteStore(region.path) as store:
            first = started(store, Counter())
            await first.capacity(factory, horizon)
            await first.close()  # what it learnt is kept once written
            first.bookings.close()
            asked: Counter[str] = Counter()
            service = started(store, asked)
            try:
                await service.capacity(factory, horizon)
                before = Counter(asked)
                clocks.advance(CapacityRules().cache_ttl_s)  # figures computed again: the
                await service.capacity(factory, horizon)  # kept history is due, and checked
                for _ in range(3000):  # in the background, its reads in threads
                    if service.cache_counts()["history"]["kept"]:
                        break
                    await asyncio.sleep(0.01)
                return before, service.cache_counts()["history"]
            finally:
                await service.close()
                service.bookings.close()

    before, history = asyncio.run(scenario())
    assert before["state_run_rows"] == 0  # no history read for the first answer
    assert history == {"updated": 1, "relearnt": 0, "kept": 1, "refused": 0}


def test_no_regional_answer_carries_figures_older_than_the_bound(
    region: Region, tmp_path: Path
) -> None:
    """A regional query every 0.2 s for a minute over a store that takes time to answer:
    the figures of every answer were computed less than cache_ttl_s before it, though
    they are computed again in the background, ahead of their bound, while answers are
    served; every few seconds, not at every query (five a second)."""
    clocks = Clocks(region.end + timedelta(seconds=30))
    horizon = timedelta(hours=24)

    async def scenario() -> None:
        async with SqliteStore(region.path) as store:
            service = _service(region, tmp_path, clocks, store)
            first = await service.region(horizon)
            start = clocks.ticks
            while clocks.ticks < start + 60:
                found = await service.region(horizon)
                bound = timedelta(seconds=service.rules.cache_ttl_s)
                assert all(clocks.wall - c.as_of < bound for c in found)
                clocks.advance(0.2)
                for _ in range(20):
                    await asyncio.sleep(0)
            counts = service.cache_counts()["capacity"]
            cycles = 60 // service.rules.cache_ttl_s
            assert cycles * len(first) <= counts["refresh"] <= 60 * len(first)  # not each time
            service.bookings.close()

    asyncio.run(scenario())


def test_the_regions_figures_are_computed_again_together(region: Region, tmp_path: Path) -> None:
    """The first factory due to be computed again brings the others with it, so that the
    regional answer changes once, not once per factory: until all are done the answer is
    the one before, then it is made of the new figures only."""
    clocks = Clocks(region.end + timedelta(seconds=30))
    horizon = timedelta(hours=24)

    async def scenario() -> None:
        async with SqliteStore(region.path) as store:
            service = _service(region, tmp_path, clocks, store)
            before = await service.region(horizon)
            clocks.advance(service.rules.cache_ttl_s * 0.92)  # due, and the views are old
            during = await service.region(horizon)
            assert service.cache_counts()["capacity"]["refresh"] == len(before)
            old = {id(c) for c in before}
            assert {id(c) for c in during} == old
            for _ in range(1000):  # until the new figures are served, never mixed with old
                await asyncio.sleep(0.01)
                found = {id(c) for c in await service.region(horizon)}
                assert found == old or not found & old
                if found != old:
                    break
            assert not found & old
            service.bookings.close()

    asyncio.run(scenario())
