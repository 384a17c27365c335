"""The capacity service's caches: values by key, computed on demand, kept for a time to live,
and computed again *ahead* of it, so that a steady stream of requests never waits.

A key asked for the first time is computed while the caller waits; concurrent callers share
that one computation (one computation per key at any time: no thundering herd). What
happens as a value ages depends on what is cached:

- **Figures served to a client** (``serve_stale`` false: the live views, capacity) are never
  older than the time to live, counted from when the value was *born* (the moment its data
  was read, which the caller may give: capacity counts from its view's reading). Once a
  value has lived its time to live less how long computing it again takes at most, as
  far as recent computations tell (their smoothed mean and four times their smoothed
  deviation, as TCP times its retransmissions; of first computations until a value has
  been computed again: a cold start's queue says little of a refresh; at least a tenth of
  its time to live, and up to a tenth more, by key, so that values born together are
  computed again apart; at most half; and not at all while a
  recent value computed again was older than that half when it came (born that long
  before it was done), which would have a key computed again as soon as it is done, more
  often the slower its source: then the lookup at the bound waits, as below; time spent
  waiting for the store before the data was read does not age a value, if the caller
  says when it was read), the next lookup starts
  computing it again in the background and is answered from the value it has, still
  within its bound; the new value replaces it when done. Several keys may be computed
  again together, their new values replacing the old at once (:meth:`FreshCache.refresh`).
  A lookup that finds a value at its bound waits for the computation under way, or starts
  one, and a failure then reaches every waiter: never an old value (nor one whose data
  aged past the bound while it was computed). A failed refresh ahead is only counted.
- **What only shapes figures** (``serve_stale`` true: learnt load profiles) is served after
  its time to live while one refresh runs in the background; only its first computation is
  waited for. Keys learnt together are computed again apart: each up to a tenth of its
  time to live before it ends, by key.

At most ``max_entries`` keys are kept: the ones read longest ago go first (a client cycling
through horizons cannot fill the memory).
"""

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = ["FreshCache"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)

_DEVIATIONS: Final = 4.0
"""A value is computed again as long before its bound as recent computations took on
average and this many times their mean deviation: time for the new one to be ready, also
when many are computed at once and queue for the store..."""
_AHEAD_SHARE: Final = (0.1, 0.5)
"""...but at least this share of its time to live before its bound (so that clients asking
now and then find it ready too; and up to as much again, by key), and at most this one."""
_STALE_SPREAD: Final = 0.1
"""What is served past its time to live is computed again up to this share of it before,
by key: not every key at once (learnt profiles, all learnt together at the start)."""
_OLDEST_HALF_LIFE_S: Final = 10.0
"""How fast an old value computed again is forgotten (its age halves in this long)."""


_Refresh = tuple[Hashable, Callable[[], Awaitable[_T]], Callable[[_T], float] | None]
"""A key, how to compute its value, and when a value's data was read (None: when its
computation began)."""


@dataclass(slots=True, eq=False)
class _Entry(Generic[_T]):
    value: "asyncio.Future[_T]"
    born: float = 0.0
    """When the value's data was read (the clock's time)."""
    next: "_Entry[_T] | None" = None
    """The computation under way that will replace this value."""


class FreshCache(Generic[_T]):
    """Values of one kind by key, kept ``ttl_s`` on ``clock`` (see the module docstring)."""

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
        self._ahead = (
            (0.0, _STALE_SPREAD * ttl_s)
            if serve_stale
            else (
                _AHEAD_SHARE[0] * ttl_s,
                _AHEAD_SHARE[1] * ttl_s,
            )
        )
        """At least and at most how long before its bound a value is computed again."""
        self._entries: OrderedDict[Hashable, _Entry[_T]] = OrderedDict()
        self._refreshing: set[asyncio.Task[None]] = set()
        self._first = _Durations()
        """How long first computations of a key take (what tells how long before its
        bound a value is computed again, until a value has been computed again: a cold
        start's queue is no refresh's)."""
        self._again = _Durations()
        """The same, of values computed again."""
        self._oldest_again = (0.0, 0.0)
        """The oldest recent value computed again, when it came (from its birth: what
        tells whether it would be due again as soon as it comes)."""
        self.counts = {"hit": 0, "miss": 0, "expired": 0, "refresh": 0, "refresh_failed": 0}
        """Lookups answered from the cache, computed (new, or too old to serve: waited
        for), and background computations started and failed."""

    def peek(self, key: Hashable) -> tuple[_T, float] | None:
        """The value of ``key`` and when it was born, if it can be served at once (counted
        as a hit); else None, nothing counted: :meth:`get` waits for it then."""
        entry = self._entries.get(key)  # kept done, it holds a value: failures are dropped
        if entry is None or not entry.value.done() or not self._servable(entry):
            return None
        self.counts["hit"] += 1
        self._entries.move_to_end(key)  # now the most recently read
        return entry.value.result(), entry.born

    def due(
        self, key: Hashable, born: float, *, within_s: float = 0.0, spread: bool = False
    ) -> bool:
        """Whether the value of ``key``, born then, is to be computed again now, or will be
        within ``within_s`` (see the module docstring), and is not being computed already;
        with ``spread``, up to as much earlier again, by key, so that values born together
        are not all computed again together."""
        least, most = self._ahead
        now, bound = self._clock(), born + self.ttl_s
        if now < bound - max(most, within_s):
            return False  # the most common answer, found without more ado
        entry = self._entries.get(key)
        if entry is not None and entry.next is not None:
            return False
        share = _spread(key) if spread else 0.0
        if self.serve_stale:  # by key over the last share of its life: not all at once
            return now >= bound - max(most * share, within_s)
        if self._decayed(self._oldest_again) > most:  # ahead, it would be computed again
            return False  # and again: callers wait at the bound instead
        took = self._again if self._again.count else self._first
        ahead = max(least, took.most()) + least * share
        return now >= bound - max(min(most, ahead), within_s)

    def ready(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[_T]],
        born: Callable[[_T], float] | None = None,
    ) -> _T | None:
        """:meth:`peek`, the value computed again in the background if it is due. ``born``
        tells when a computed value's data was read (default: when its computation began)."""
        found = self._served(key, compute, born)
        return None if found is None else found[0]

    def _served(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[_T]],
        born: Callable[[_T], float] | None,
    ) -> tuple[_T, float] | None:
        found = self.peek(key)
        if found is not None and self.due(key, found[1], spread=True):
            self.refresh([(key, compute, born)])
        return found

    async def get(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[_T]],
        born: Callable[[_T], float] | None = None,
    ) -> _T:
        """The value of ``key``: served at once if it can be (:meth:`ready`), else computed
        (or the computation under way waited for). A computation waited for whose data
        turns out too old when it is done (its data was read long before, and it took the
        rest of their life) is not served: its value is computed again, from this caller's
        ``compute``, once."""
        return (await self.fetch(key, compute, born))[0]

    async def fetch(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[_T]],
        born: Callable[[_T], float] | None = None,
    ) -> tuple[_T, float]:
        """:meth:`get`, and when the value was born."""
        found = self._served(key, compute, born)
        if found is not None:
            return found
        entry = self._entries.get(key)
        again = entry is not None
        if entry is not None and entry.value.done():  # past its bound
            entry = entry.next
            self.counts["expired"] += 1
        elif entry is not None:
            self.counts["hit"] += 1  # its first computation is under way: shared
        else:
            self.counts["miss"] += 1
        if entry is None:
            entry = await self._computed(key, compute, born, again=again)
        value = await asyncio.shield(entry.value)
        if self._servable(entry):
            return value, entry.born
        newer = self._entries.get(key)  # another waiter's computation, if one began
        if newer is None or newer is entry or (newer.value.done() and not self._servable(newer)):
            newer = await self._computed(key, compute, born, again=True)
        return await asyncio.shield(newer.value), newer.born

    def refresh(self, items: Sequence[_Refresh[_T]]) -> None:
        """Compute the values of these keys again in the background, together: the new ones
        replace the old at once, when all are done (so that an answer made of them changes
        once), and whoever finds an old one at its bound waits for its new one. A key
        whose value is being computed already, or is not kept, is left out; a failure is
        counted, and the old value served to its bound."""
        batch = []
        for key, compute, born in items:
            entry = self._entries.get(key)
            if entry is not None and entry.value.done() and entry.next is None:
                entry.next = _Entry(asyncio.get_running_loop().create_future())
                batch.append((key, entry, entry.next, compute, born))
        if not batch:
            return
        self.counts["refresh"] += len(batch)

        async def run() -> None:
            done = await asyncio.gather(
                *(
                    self._fill(key, new, compute, born, again=True)
                    for key, _, new, compute, born in batch
                ),
                return_exceptions=True,
            )
            for (key, old, new, *_), result in zip(batch, done, strict=True):
                if isinstance(result, BaseException):
                    log.warning("computing %r again failed", key, exc_info=result)
                    self.counts["refresh_failed"] += 1
                    old.next = None
                elif self._entries.get(key) is old:
                    self._entries[key] = new

        task = asyncio.create_task(run())
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def close(self) -> None:
        """Stop the computations running in the background (the service stops)."""
        for task in self._refreshing:
            task.cancel()
        await asyncio.gather(*self._refreshing, return_exceptions=True)

    def forget(self, match: Callable[[Hashable], bool]) -> None:
        """Drop the entries whose key matches (their data changed)."""
        for key in [k for k in self._entries if match(k)]:
            del self._entries[key]

    def fresh(self, born: float) -> bool:
        """Whether a value born then may still be served (is within its bound)."""
        return self.serve_stale or self._clock() < born + self.ttl_s

    def _servable(self, entry: _Entry[_T]) -> bool:
        return self.fresh(entry.born)

    async def _computed(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[_T]],
        born: Callable[[_T], float] | None,
        *,
        again: bool,
    ) -> _Entry[_T]:
        """A new computation of ``key``'s value, kept (shared with later callers), done."""
        entry: _Entry[_T] = _Entry(asyncio.get_running_loop().create_future())
        self._store(key, entry)
        await self._fill(key, entry, compute, born, again=again)
        return entry

    def _decayed(self, oldest: tuple[float, float]) -> float:
        """An oldest recent age (seconds, and when it was measured), as it decays: old
        values are forgotten as time passes."""
        age, at = oldest
        return float(age * 0.5 ** (max(0.0, self._clock() - at) / _OLDEST_HALF_LIFE_S))

    def _store(self, key: Hashable, entry: _Entry[_T]) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def _fill(
        self,
        key: Hashable,
        entry: _Entry[_T],
        compute: Callable[[], Awaitable[_T]],
        born: Callable[[_T], float] | None,
        *,
        again: bool,
    ) -> None:
        """Compute ``entry``'s value (how long it took counts towards :meth:`due`;
        ``again``: a value computed before is computed again)."""
        started = self._clock()
        try:
            value = await compute()
        except BaseException as exc:
            if self._entries.get(key) is entry:
                del self._entries[key]
            entry.value.set_exception(exc)
            entry.value.exception()  # retrieved: waiters re-raise it
            raise
        entry.born = started if born is None else born(value)
        now = self._clock()
        if again:
            self._again.add(now - started)
            # How old it is when it comes, not how long it waited for its data to be read.
            self._oldest_again = (max(now - entry.born, self._decayed(self._oldest_again)), now)
        else:
            self._first.add(now - started)
        entry.value.set_result(value)


@dataclass(slots=True)
class _Durations:
    """How long computations take: a smoothed mean and mean deviation (RFC 6298's
    estimator of round-trip times, with its gains)."""

    mean: float = 0.0
    deviation: float = 0.0
    count: int = 0

    def add(self, took: float) -> None:
        """Count one more computation, of ``took`` seconds."""
        if self.count == 0:
            self.mean, self.deviation = took, took / 2
        else:
            self.deviation += (abs(took - self.mean) - self.deviation) / 4
            self.mean += (took - self.mean) / 8
        self.count += 1

    def most(self) -> float:
        """How long a computation takes at most, as far as they tell."""
        return self.mean + _DEVIATIONS * self.deviation


def _spread(key: Hashable) -> float:
    """Where between 0 and 1 the key falls, to spread the keys' computations in time."""
    return (hash(key) & 0xFFFF) / 0x10000
