"""How long machines down now have been down (kyoso/api/downtime.py): read from the store's
runs when a machine's latest sample is new, kept while it is the same one for at most the
time given, on the test's clock."""

import asyncio
from pathlib import Path

from store_suite import GW, SESSION, at, make_sample

from kyoso.api.downtime import DownTimes
from kyoso.contract import MachineState as S
from kyoso.store import SqliteStore

KEEP_S = 5.0


class _CountingStore:
    """A store that counts the runs it is asked for."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.asked = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)

    async def state_runs(self, *args: object) -> object:
        self.asked += 1
        return await self.store.state_runs(*args)  # type: ignore[arg-type]


async def _write(store: SqliteStore, end_s: float, state: S) -> None:
    """Machine m1 of factory a in ``state`` for the minute to ``end_s``."""
    await store.write_samples("a", GW, SESSION, [make_sample("m1", end_s, 60, {state: 60.0})])


def test_a_stop_is_read_when_its_latest_sample_is_new_or_its_answer_old(tmp_path: Path) -> None:
    clock = [0.0]

    async def scenario() -> None:
        async with SqliteStore(tmp_path / "store.sqlite3") as sqlite:
            store = _CountingStore(sqlite)
            times = DownTimes(store, KEEP_S, lambda: clock[0])  # type: ignore[arg-type]

            async def down_for(end_s: float) -> dict[str, float]:
                live = await sqlite.live("a")
                return await times.down_for("a", at(end_s), live.latest)

            for end_s, state in ((60, S.RUNNING), (120, S.DOWN), (180, S.DOWN)):
                await _write(sqlite, end_s, state)
            assert await down_for(180) == {"m1": 120.0}
            assert store.asked == 1
            clock[0] = KEEP_S - 0.5  # the same latest sample: kept
            assert await down_for(185) == {"m1": 120.0}
            assert store.asked == 1
            clock[0] = KEEP_S + 0.5  # kept long enough: read again
            assert await down_for(190) == {"m1": 120.0}
            assert store.asked == 2
            await _write(sqlite, 240, S.DOWN)
            assert await down_for(240) == {"m1": 180.0}  # a new sample: read at once
            assert store.asked == 3
            await _write(sqlite, 300, S.RUNNING)
            assert await down_for(300) == {}  # running: nothing asked
            assert store.asked == 3

    asyncio.run(scenario())


def test_history_written_late_is_read_when_told(tmp_path: Path) -> None:
    """A stop lengthened by samples written into its past (a gateway's buffer) shows when
    the factory is forgotten, not only after the time kept."""

    async def scenario() -> tuple[dict[str, float], dict[str, float]]:
        async with SqliteStore(tmp_path / "store.sqlite3") as sqlite:
            times = DownTimes(sqlite, KEEP_S, lambda: 0.0)
            await _write(sqlite, 180, S.DOWN)
            live = await sqlite.live("a")
            before = await times.down_for("a", at(180), live.latest)
            await _write(sqlite, 120, S.DOWN)
            times.forget("a")
            return before, await times.down_for("a", at(180), live.latest)

    before, after = asyncio.run(scenario())
    assert before == {"m1": 60.0}
    assert after == {"m1": 120.0}
