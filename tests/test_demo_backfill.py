"""The demo's background backfill: what it fills, in which order, and what a stop leaves."""

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kyoso.contract import MachineState, Sample
from kyoso.demo.backfill import Backfill, gaps
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.store import SqliteStore

DAY = 86_400.0
END = datetime(2026, 12, 6, 13, 7, 30, tzinfo=UTC).timestamp()  # a Sunday, mid-interval
WINDOW = (END - 2 * DAY, END)
FACTORIES = shipped_factories()
NAMES = [load_factory(p).factory for p in FACTORIES]


def test_gaps_are_what_the_covered_windows_leave_out() -> None:
    assert gaps((0, 1000), [], smallest_s=1) == [(0, 1000)]
    assert gaps((0, 1000), [(100, 200), (600, 2000)], smallest_s=1) == [(0, 100), (200, 600)]
    assert gaps((0, 1000), [(-50, 400), (350, 700)], smallest_s=1) == [(700, 1000)]
    assert gaps((0, 1000), [(0, 1000)], smallest_s=1) == []
    # Shorter than one backfilled sample (5 minutes): left alone.
    assert gaps((0, 1000), [(100, 800)]) == []
    assert gaps((0, 1000), [(500, 800)]) == [(0, 500)]


async def _covered(store: SqliteStore, start: float, end: float) -> tuple[float, float]:
    """Seconds of the window with samples and without, over every machine of the region."""
    begin, until = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    covered = missing = 0.0
    for name in NAMES:
        for window in await store.state_seconds(name, None, begin, until, None):
            missing += window.no_data_s
            covered += (until - begin).total_seconds() - window.no_data_s
    return covered, missing


def test_the_whole_window_is_filled_newest_day_first_and_noted_in_the_ledger(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with SqliteStore(tmp_path / "store.sqlite3") as store:
            ledger = tmp_path / "history.json"
            days: list[int] = []
            backfill = Backfill(store, FACTORIES, WINDOW, ledger=ledger, gateway="gw-01")
            backfill.written = lambda _: days.append(len(json.loads(ledger.read_text())["covered"]))
            planned = await backfill.plan(NAMES)
            assert planned.todo_s == 2 * DAY
            assert not planned.complete
            assert not planned.running
            await backfill.run()
            assert backfill.progress.complete
            assert backfill.progress.samples == 2 * 288 * 20 + 20  # two partial intervals
            covered, missing = await _covered(store, *WINDOW)
            assert missing == pytest.approx(0, abs=1e-3)
            assert covered == pytest.approx(20 * 2 * DAY)
            saved = json.loads(ledger.read_text())
            assert saved == {"covered": [list(WINDOW)], "live_since": END}
            # Each day is a session of its own; the last sample ends the window.
            newest = (await store.latest_samples("okada-machining"))["cnc-01"]
            assert newest.sample.ts.timestamp() == END
            assert newest.session.startswith("backfill-")
            # Done: another run with the same ledger, and no live data since, has nothing to do.
            again = Backfill(store, FACTORIES, WINDOW, ledger=ledger, gateway="gw-01")
            assert (await again.plan(NAMES)).complete

    asyncio.run(main())


def test_a_stopped_backfill_leaves_a_hole_the_next_run_fills(tmp_path: Path) -> None:
    async def main() -> None:
        async with SqliteStore(tmp_path / "store.sqlite3") as store:
            ledger = tmp_path / "history.json"
            first = Backfill(store, FACTORIES, WINDOW, ledger=ledger, gateway="gw-01")
            await first.plan(NAMES)
            some_written = asyncio.Event()
            first.written = lambda _: some_written.set()
            task = asyncio.create_task(first.run())
            await some_written.wait()
            task.cancel()  # the demo stopped: the worker is killed at once
            await asyncio.gather(task, return_exceptions=True)
            assert not first.progress.running
            assert not first.progress.complete
            saved = json.loads(ledger.read_text())
            assert all(a >= WINDOW[0] and b <= WINDOW[1] for a, b in saved["covered"])
            # The next run (later, with live data from the first one's end on) fills the hole.
            live_end = END + 600
            later = (WINDOW[0] + 600, live_end + 60)
            second = Backfill(store, FACTORIES, later, ledger=ledger, gateway="gw-01")
            live = Sample(
                machine="cnc-01",
                seq=0,
                ts=datetime.fromtimestamp(live_end, UTC),
                interval_s=600.0,
                state=MachineState.IDLE,
                durations_s={MachineState.IDLE: 600.0},
            )
            await store.write_samples("okada-machining", "gw-01", "live", [live])
            plan = await second.plan(NAMES)
            assert 0 < plan.todo_s < later[1] - later[0]
            await second.run()
            assert second.progress.complete
            covered, missing = await _covered(store, WINDOW[0] + 600, END)
            assert missing == pytest.approx(0, abs=1e-3)
            assert covered == pytest.approx(20 * (END - WINDOW[0] - 600))

    asyncio.run(main())
