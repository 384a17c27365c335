"""How long each machine down now has been down, for the live views: from the start of the
down run going on at its latest sample to that sample's end, read from the store's runs of
the state (kyoso/store/base.py).

A live view is read every ``view_ttl_s``, a stop's start changes only when samples come: a
machine's answer is kept while its latest sample is the same one, for at most ``keep_s``
(history a gateway sends late, from its buffer, can lengthen a run: it shows within that).
Reading the runs for every view of a factory with a machine down cost more than the rest of
its view on InfluxDB.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from kyoso.contract import MAX_INTERVAL_S, MachineState
from kyoso.store import LatestSample, StoreReader
from kyoso.store.base import ADJOIN

__all__ = ["DownTimes"]

_DOWN_RUN_SPAN: Final = timedelta(days=1)
_RECENT_RUN_SPAN: Final = timedelta(hours=2)
"""Down runs are first looked for this far back: most stops began within it."""
_WHOLE_AFTER: Final = timedelta(seconds=MAX_INTERVAL_S) + ADJOIN
"""A run found in a window of runs that starts this long after the window does is whole: no
earlier sample can chain to its first one (kyoso/store/base.py)."""

_Known = tuple[datetime, float, float]
"""A machine's latest sample's end, when its answer was read (monotonic), the answer."""


class DownTimes:
    """How long machines down now have been down (see the module docstring)."""

    def __init__(self, store: StoreReader, keep_s: float, monotonic: Callable[[], float]) -> None:
        self._store = store
        self._keep_s = keep_s
        self._monotonic = monotonic
        self._known: dict[str, dict[str, _Known]] = {}
        """By factory, its machines down at its last view."""

    def forget(self, factory: str) -> None:
        """Read the factory's runs again (history was written into its past)."""
        self._known.pop(factory, None)

    async def down_for(
        self, factory: str, as_of: datetime, latest: dict[str, LatestSample]
    ) -> dict[str, float]:
        """Seconds each machine down at its latest sample has been down (asked of the store
        only when some machine is down and its answer is not kept)."""
        down = {m: s.ts for m, s in latest.items() if s.state is MachineState.DOWN}
        now = self._monotonic()
        known = self._known.get(factory, {})
        kept = {
            m: entry
            for m, ts in down.items()
            if (entry := known.get(m)) is not None
            and entry[0] == ts
            and now - entry[1] < self._keep_s
        }
        read = await self._read(factory, as_of, {m: ts for m, ts in down.items() if m not in kept})
        self._known[factory] = kept | {m: (down[m], now, s) for m, s in read.items()}
        if not self._known[factory]:
            del self._known[factory]
        return {m: entry[2] for m, entry in kept.items()} | read

    async def _read(
        self, factory: str, as_of: datetime, down: dict[str, datetime]
    ) -> dict[str, float]:
        """Runs are looked for over the last ``_DOWN_RUN_SPAN`` (a longer stop counts as that
        long). The ``_RECENT_RUN_SPAN`` before the samples is read first: a run that began
        well within it is the same in the longer window, which is read only for the others
        (a factory's day of samples, every second, cost more than the rest of its view)."""
        if not down:
            return {}
        end = max(as_of, *down.values())
        whole = end - _DOWN_RUN_SPAN
        found: dict[str, float] = {}
        for start in dict.fromkeys((max(whole, min(down.values()) - _RECENT_RUN_SPAN), whole)):
            runs = await self._store.state_runs(factory, MachineState.DOWN, start, end)
            going = {r.machine: r for r in runs if r.ongoing}  # sorted by start: last wins
            for machine, ts in down.items():
                run = going.get(machine)
                if run is not None and run.end == ts:
                    if start == whole or run.start > start + _WHOLE_AFTER:
                        found[machine] = (ts - run.start).total_seconds()
                elif start == whole:
                    found[machine] = 0.0  # no run of its latest sample: down since it ended
            down = {m: ts for m, ts in down.items() if m not in found}
            if not down:
                break
        return found
