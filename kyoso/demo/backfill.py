"""The demo's history, filled in the background while the demo already runs.

A demo must answer at once, yet capacity and KPIs need weeks of history
(:mod:`kyoso.simulators.history` makes it). Generating 28 days of the shipped region takes
tens of seconds of CPU, so it is made in a **worker process** (the other core; Ctrl-C never
reaches it: it runs in its own session and is killed when the demo stops) and written into
the store day by day, **newest day first**, because today's and yesterday's figures matter
most. What is filled is kept in a **ledger** in the data directory (``history.json``):

- ``covered``: the windows whose history is wholly in the store, backfilled or live;
- ``live_since``: when the last run's live data began. The next run closes that window at
  the newest sample stored, so a run stopped half-way through its backfill leaves a hole
  that the next run finds and fills, and live data is never overwritten by history.

A data directory from before the ledger counts as covered up to its newest sample.
Each day is written as its own gateway session (``backfill-<epoch day>``), numbered from 0,
so sequence numbers stay increasing within a session whatever the order of the days.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import math
import pickle
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kyoso.contract import Sample
from kyoso.simulators.config import load_factory
from kyoso.simulators.history import history_samples
from kyoso.simulators.runner import FactorySimulation
from kyoso.store import Store

__all__ = ["Backfill", "BackfillProgress", "gaps"]

log = logging.getLogger(__name__)

INTERVAL_S: Final = 300.0
"""Backfilled samples are 5 minutes apart, as a slow gateway would send them."""
_DAY_S: Final = 86_400.0
_FRAME = struct.Struct(">Q")
Window = tuple[float, float]


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """How far the backfill is: seconds of history to fill and filled, samples written."""

    todo_s: float
    done_s: float
    samples: int
    running: bool

    @property
    def complete(self) -> bool:
        """Every gap is filled (also true when there was none)."""
        return self.done_s >= self.todo_s


def gaps(want: Window, covered: Sequence[Window], smallest_s: float = INTERVAL_S) -> list[Window]:
    """The parts of ``want`` outside every ``covered`` window, each at least ``smallest_s``
    long, oldest first."""
    start, end = want
    found: list[Window] = []
    for a, b in sorted(covered):
        if b <= start:
            continue
        if a >= end:
            break
        if a > start:
            found.append((start, a))
        start = max(start, b)
    if start < end:
        found.append((start, end))
    return [(a, b) for a, b in found if b - a >= smallest_s]


def _days(window: Window) -> list[Window]:
    """``window`` cut at the UTC day boundaries, newest day first."""
    start, end = window
    inner = range(math.floor(start / _DAY_S) + 1, math.ceil(end / _DAY_S))
    cuts = [start, *(day * _DAY_S for day in inner), end]
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a][::-1]


def _merged(windows: Sequence[Window]) -> list[Window]:
    merged: list[Window] = []
    for a, b in sorted(windows):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


class Backfill:
    """Fills the history of ``[start, end)`` for the demo factories at ``factories`` (whose
    simulation starts at ``start``), as gateway ``gateway`` would have published it.

    :meth:`plan` reads the ledger and the store (call it before live data flows),
    :meth:`run` fills the gaps; cancelling :meth:`run` kills the worker at once.
    :attr:`written`, if set, is called with a factory's id each time some of its history
    was written.
    """

    def __init__(
        self,
        store: Store,
        factories: Sequence[Path],
        window: Window,
        *,
        ledger: Path,
        gateway: str,
    ) -> None:
        self._store = store
        self.written: Callable[[str], None] = lambda _: None
        self._factories = [str(p) for p in factories]
        self._window = window
        self._ledger = ledger
        self._gateway = gateway
        self._covered: list[Window] = []
        self._todo: list[Window] = []
        self._done_s = 0.0
        self._samples = 0
        self._running = False
        self._filled: set[str] = set()

    @property
    def progress(self) -> BackfillProgress:
        """Where the backfill is now."""
        todo = sum(b - a for a, b in self._todo)
        return BackfillProgress(todo, min(self._done_s, todo), self._samples, self._running)

    async def plan(self, names: Sequence[str]) -> BackfillProgress:
        """Find what is missing of the window for the factories ``names``, and note in the
        ledger that this run's live data begins at the window's end."""
        newest = await self._newest_sample(names)
        covered: list[Window] = []
        if self._ledger.exists():
            saved = json.loads(self._ledger.read_text())
            covered = [(float(a), float(b)) for a, b in saved.get("covered", [])]
            live_since = saved.get("live_since")
            if live_since is not None and newest is not None and newest > live_since:
                covered.append((float(live_since), newest))
        elif newest is not None:  # a data directory from before the ledger
            covered.append((min(self._window[0], newest), newest))
        self._covered = _merged(covered)
        self._todo = gaps(self._window, self._covered)
        self._save(live_since=self._window[1])
        return self.progress

    async def run(self) -> None:
        """Fill the gaps found by :meth:`plan`, newest day first."""
        days = [day for gap in reversed(self._todo) for day in _days(gap)]
        if not days:
            return
        self._running = True
        started = time.monotonic()
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C on the terminal is the demo's to handle
        )
        try:
            assert worker.stdin is not None
            assert worker.stdout is not None
            job = {"factories": self._factories, "origin": self._window[0], "days": days}
            worker.stdin.write(json.dumps(job).encode())
            worker.stdin.close()
            for day in days:
                for _ in self._factories:
                    size = _FRAME.unpack(await worker.stdout.readexactly(_FRAME.size))[0]
                    factory, samples = pickle.loads(await worker.stdout.readexactly(size))  # noqa: S301 (our child)
                    await self._write(factory, day, samples)
                self._covered = _merged([*self._covered, day])
                self._done_s += day[1] - day[0]
                self._save(live_since=self._window[1])
            await worker.wait()
            self._finish()  # before saying so: figures no longer marked from here on
            log.info(
                "history: %d samples backfilled in %.1f s",
                self._samples,
                time.monotonic() - started,
            )
        except asyncio.IncompleteReadError:
            log.error(
                "history: the backfill worker ended early (exit code %s)", await worker.wait()
            )
        finally:
            if self._running:
                self._finish()
            if worker.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.kill()
                # Read to the end: a paused pipe would never see the end, nor wait() return.
                await worker.communicate()

    async def _write(self, factory: str, day: Window, samples: list[Sample]) -> None:
        session = f"backfill-{int(day[0] // _DAY_S)}"
        await self._store.write_samples(factory, self._gateway, session, samples)
        self._samples += len(samples)
        self._filled.add(factory)
        self.written(factory)

    def _finish(self) -> None:
        """Not running any more; told to whoever keeps figures of the factories written (they
        were computed while it ran, and carry its mark)."""
        self._running = False
        for factory in sorted(self._filled):
            self.written(factory)

    async def _newest_sample(self, names: Sequence[str]) -> float | None:
        newest = [
            stored.sample.ts.timestamp()
            for name in names
            for stored in (await self._store.latest_samples(name)).values()
        ]
        return max(newest, default=None)

    def _save(self, *, live_since: float) -> None:
        body = {"covered": self._covered, "live_since": live_since}
        self._ledger.write_text(json.dumps(body))


def _work() -> None:
    """The worker: read the job from standard input, write one frame per factory and day."""
    job = json.loads(sys.stdin.read())
    sims = [FactorySimulation(load_factory(Path(p)), job["origin"]) for p in job["factories"]]
    out = sys.stdout.buffer
    for start, end in job["days"]:
        for sim in sims:
            history = history_samples(sim, start, end, interval_s=INTERVAL_S)
            samples = [s for machine in history.values() for s in machine]
            frame = pickle.dumps((sim.config.factory, samples), pickle.HIGHEST_PROTOCOL)
            out.write(_FRAME.pack(len(frame)) + frame)
            out.flush()


if __name__ == "__main__":
    _work()
