"""What each factory's history teaches the capacity service — every machine's load profile
and breakdowns — learnt hour by hour, and kept between restarts.

A load profile is learnt from the lookback (28 days) of hourly state sums, a repair record
from the down runs of the lookback; reading them all again for every update (every
``profile_ttl_s``) was most of what the API's first answer waited for, and kept the store
busy while other requests waited behind it. So each factory's history is kept
(:class:`~kyoso.capacity.history.FactoryHistory`: each machine's hourly sums, and its
samples with down time, of which runs are made) and brought up to date:

- an **update** reads the hours and down samples since the last one, and those of the last
  ``profile_reread_h`` again (history written late, such as a gateway's outbox replayed
  after an outage, counts from the next update), and drops those that left the lookback.
  What it keeps equals what one read of the whole lookback gives, and so do the profiles
  and repair records learnt from it (tests/test_api_learning.py checks it bit for bit);
- the whole lookback is **relearnt** every ``profile_relearn_h`` (history written later
  than that into the past counts from then on), and whenever nothing usable is kept. Its
  hours are read from the first day with data (found by one query of daily sums): the days
  before hold nothing, and a new region has weeks of them.

With a :class:`~kyoso.api.profile_file.ProfileFile`, each factory's history is written there
after every update and read back after a restart, so that the first answer need not read
the lookback. What is read back is refused (and the lookback read again) if it is damaged,
older than ``profile_relearn_h``, of another lookback, or if the store disagrees with it:
the first update after a restart reads ``profile_reread_h`` more and compares those hours,
which are settled, with what was kept. A history read back that reaches the last whole hour
but one is served at once (:meth:`HistoryLearner.early`), as a history learnt here is
served while its update runs, and checked in the background; should the store disagree,
the factory is learnt again and its figures follow within ``cache_ttl_s``.

``counts`` (for ``/metrics``, cache ``history``): ``updated`` and ``relearnt`` factories,
histories ``kept`` (read back and used) and ``refused``.
"""

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from itertools import groupby
from typing import TypeVar

from kyoso.capacity.forecast import hour_load
from kyoso.capacity.history import FactoryHistory, LoadHistory, hour_index
from kyoso.capacity.repair import DownSamples, us_of
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MachineState
from kyoso.store import StateWindow, StoreReader
from kyoso.store.base import RunRow

from .profile_file import KeptHistoryError, ProfileFile

__all__ = ["HistoryLearner"]

_T = TypeVar("_T")
log = logging.getLogger(__name__)

_DAY_S = 86_400.0
_HOUR_S = 3_600.0


class HistoryLearner:
    """Each factory's :class:`FactoryHistory` from ``store``, kept in ``kept`` if given."""

    def __init__(
        self, store: StoreReader, rules: CapacityRules, kept: ProfileFile | None = None
    ) -> None:
        self.store = store
        self.rules = rules
        self._kept = kept
        self._known: dict[str, FactoryHistory] = {}
        self._forgotten: dict[str, int] = {}
        """How often each factory's history was forgotten: an update begun before does not
        keep what it learnt."""
        self._unchecked: dict[str, FactoryHistory] = {}
        """Histories read back and served before the store confirmed them (:meth:`early`):
        the next :meth:`learn` checks them."""
        self._asked_early: set[str] = set()
        self._saving: dict[str, asyncio.Task[None]] = {}
        """Each factory's history being written to the file, in the background."""
        self.counts = {"updated": 0, "relearnt": 0, "kept": 0, "refused": 0}

    async def close(self) -> None:
        """Let the histories being written to the file be written."""
        await asyncio.gather(*self._saving.values(), return_exceptions=True)

    def forget(self, factory: str) -> None:
        """Learn ``factory`` from the store again (history was written into its past)."""
        self._forgotten[factory] = self._forgotten.get(factory, 0) + 1
        self._known.pop(factory, None)
        self._unchecked.pop(factory, None)
        if self._kept is not None:
            self._kept.drop(factory)

    async def learn(self, factory: str, now: datetime) -> FactoryHistory:
        """The factory's history over the lookback up to the last whole hour before
        ``now``, brought up to date (see the module docstring)."""
        forgotten = self._forgotten.get(factory, 0)
        end = now.replace(minute=0, second=0, microsecond=0)
        start = end - self.rules.lookback
        known, kept = self._known.get(factory), False
        if known is None and self._kept is not None:
            known = self._unchecked.pop(factory, None) or await self._read_back(self._kept, factory)
            kept = True
        history = None
        if known is not None and self._usable(known, start, end, now):
            history = await self._update(known, start, end, verify=kept)
            if history is None:
                log.warning("the kept history of %r disagrees with the store", factory)
        if kept and known is not None:
            self.counts["kept" if history is not None else "refused"] += 1
        if history is None:
            history = await self._relearn(factory, start, end, now)
        if self._forgotten.get(factory, 0) == forgotten:
            self._known[factory] = history
            if self._kept is not None:  # in the background: no answer waits for the disk
                before = self._saving.get(factory)
                saving = self._keep(self._kept, history, forgotten, before)
                self._saving[factory] = asyncio.create_task(saving)
        return history

    async def early(self, factory: str, now: datetime) -> FactoryHistory | None:
        """The history kept for ``factory`` before a restart, to be served before the store
        confirms it, while :meth:`learn` checks it: the first time the factory is asked
        for, if it is usable and reaches the last whole hour but one (as far as a history
        learnt in this process may lag while its update runs). None otherwise, or if the
        file cannot give it (:meth:`learn` reads it again, and says why it refuses it)."""
        if self._kept is None or factory in self._known or factory in self._asked_early:
            return None
        self._asked_early.add(factory)
        forgotten = self._forgotten.get(factory, 0)
        end = now.replace(minute=0, second=0, microsecond=0)
        try:
            known = await asyncio.to_thread(self._kept.load, factory)
        except (KeptHistoryError, sqlite3.Error):
            return None
        if (
            known is None
            or self._forgotten.get(factory, 0) != forgotten
            or not self._usable(known, end - self.rules.lookback, end, now)
            or known.end < end - timedelta(hours=1)
        ):
            return None
        self._unchecked[factory] = known
        return known

    def checked(self, history: FactoryHistory) -> bool:
        """Whether ``history`` is the one the store confirmed last for its factory (not one
        served early, nor one of a factory forgotten since)."""
        return self._known.get(history.factory) is history

    def _usable(self, known: FactoryHistory, start: datetime, end: datetime, now: datetime) -> bool:
        relearn = timedelta(hours=self.rules.profile_relearn_h)
        return (
            known.end - known.start == self.rules.lookback
            and start <= known.end <= end
            and known.relearnt_at <= now < known.relearnt_at + relearn
        )

    async def _update(
        self, known: FactoryHistory, start: datetime, end: datetime, *, verify: bool
    ) -> FactoryHistory | None:
        """``known`` brought up to ``end``: what it has from ``profile_reread_h`` before its
        end on read again (twice that with ``verify``, the first half compared with what
        it has: None if they differ)."""
        reread = timedelta(hours=self.rules.profile_reread_h)
        since = max(start, known.end - reread)
        read_from = max(start, since - reread) if verify else since
        factory = known.factory
        windows, rows = await asyncio.gather(
            self.store.state_seconds(factory, None, read_from, end, _HOUR_S),
            self.store.state_run_rows(factory, MachineState.DOWN, read_from, end),
        )
        loads = await asyncio.to_thread(_loads, windows)
        down = await asyncio.to_thread(_down, rows)
        if verify and not _confirmed(known, loads, down, read_from, since):
            return None
        first, settled, last = hour_index(start), hour_index(since), hour_index(end)
        merged_loads = {}
        for machine in known.loads.keys() | loads.keys():
            kept = known.loads.get(machine, LoadHistory()).within(first, last)
            hours = kept.then(loads.get(machine, LoadHistory(settled)), settled)
            if any(hours.observed):
                merged_loads[machine] = hours
        window, since_us = (us_of(start), us_of(end)), us_of(since)
        merged_down = {}
        for machine in known.down.keys() | down.keys():
            kept_down = known.down.get(machine, DownSamples()).between(*window)
            samples = kept_down.then(down.get(machine, DownSamples()), since_us)
            if len(samples.ts):
                merged_down[machine] = samples
        self.counts["updated"] += 1
        return await self._history(
            factory, start, end, known.relearnt_at, loads=merged_loads, down=merged_down
        )

    async def _relearn(
        self, factory: str, start: datetime, end: datetime, now: datetime
    ) -> FactoryHistory:
        """The whole lookback read again, hours from its first day with data."""
        days, rows = await asyncio.gather(
            self.store.state_seconds(factory, None, start, end, _DAY_S),
            self.store.state_run_rows(factory, MachineState.DOWN, start, end),
        )
        first = min((w.start for w in days if hour_load(w)[3] > 0), default=end)
        windows = await self.store.state_seconds(factory, None, first, end, _HOUR_S)
        loads = await asyncio.to_thread(_loads, windows)
        down = await asyncio.to_thread(_down, rows)
        self.counts["relearnt"] += 1
        observed = {m: hours for m, hours in loads.items() if any(hours.observed)}
        return await self._history(factory, start, end, now, loads=observed, down=down)

    async def _history(
        self,
        factory: str,
        start: datetime,
        end: datetime,
        relearnt_at: datetime,
        *,
        loads: dict[str, LoadHistory],
        down: dict[str, DownSamples],
    ) -> FactoryHistory:
        """The history of these hours and down samples, with the breakdowns they tell."""
        repairs = await asyncio.to_thread(
            lambda: {m: samples.record(self.rules, end) for m, samples in _each(down.items())}
        )
        return FactoryHistory(
            factory, start, end, relearnt_at, loads=loads, down=down, repairs=repairs
        )

    async def _read_back(self, kept: ProfileFile, factory: str) -> FactoryHistory | None:
        """The history kept for ``factory``, if it can be read (a refusal is counted)."""
        try:
            return await asyncio.to_thread(kept.load, factory)
        except (KeptHistoryError, sqlite3.Error) as exc:
            log.warning("%s: %s; learning %r from the store", kept.path, exc, factory)
            self.counts["refused"] += 1
            return None

    async def _keep(
        self,
        kept: ProfileFile,
        history: FactoryHistory,
        forgotten: int,
        before: "asyncio.Task[None] | None",
    ) -> None:
        """Write ``history`` to the file once ``before`` (an older one's writing) is done,
        unless its factory was forgotten since it was learnt; a failure only costs the
        next start its time."""
        if before is not None:
            await asyncio.gather(before, return_exceptions=True)

        def current() -> bool:
            return self._forgotten.get(history.factory, 0) == forgotten

        try:
            await asyncio.to_thread(kept.save, history, current)
        except (OSError, sqlite3.Error):
            log.warning("keeping the history of %r failed", history.factory, exc_info=True)


def _loads(windows: Iterable[StateWindow]) -> dict[str, LoadHistory]:
    """Each machine's hours of hourly ``windows`` sorted by machine and start."""
    return {
        machine: LoadHistory.of(list(found))
        for machine, found in _each(groupby(windows, key=lambda w: w.machine))
    }


def _down(rows: Iterable[RunRow]) -> dict[str, DownSamples]:
    """Each machine's samples with down time among ``rows`` (in any order)."""
    ordered = sorted(rows, key=lambda row: row[0])
    return {m: DownSamples.of(found) for m, found in _each(groupby(ordered, key=lambda r: r[0]))}


def _each(items: Iterable[_T]) -> Iterator[_T]:
    """``items``, in a thread, letting the event loop have the interpreter between them: it
    need not wait for the switch interval (5 ms) each time it wants it back."""
    for item in items:
        yield item
        time.sleep(0)


def _confirmed(
    known: FactoryHistory,
    loads: dict[str, LoadHistory],
    down: dict[str, DownSamples],
    start: datetime,
    end: datetime,
) -> bool:
    """Whether what is ``known`` of ``[start, end)`` is what the store answers now."""
    first, last, window = hour_index(start), hour_index(end), (us_of(start), us_of(end))
    return all(
        known.loads.get(m, LoadHistory()).same_as(loads.get(m, LoadHistory()), first, last)
        for m in known.loads.keys() | loads.keys()
    ) and all(
        known.down.get(m, DownSamples()).between(*window)
        == down.get(m, DownSamples()).between(*window)
        for m in known.down.keys() | down.keys()
    )
