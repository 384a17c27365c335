"""The shared store contract on :class:`SqliteStore`, plus what only the SQLite store has:
a file that outlives the process, and its lifecycle."""

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_suite import GW, SCENARIO, SESSION, Run, StoreContract, at, make_sample

from kyoso.store import SqliteStore, Store, StoreError


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, run: Run, tmp_path: Path) -> Iterator[Store]:
        store = run(SqliteStore(tmp_path / "store.sqlite3").open())
        yield store
        run(store.close())


def test_data_survives_a_reopen(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "store.sqlite3"

    async def write() -> None:
        async with SqliteStore(path) as store:
            await store.write_samples("a", GW, SESSION, SCENARIO, received_at=at(500))

    async def read() -> None:
        async with SqliteStore(path, synchronous="normal") as store:
            assert (await store.latest_samples("a"))["m1"].sample == SCENARIO[-1]
            [window] = await store.state_seconds("a", "m1", at(0), at(240))
            assert window.no_data_s == pytest.approx(60)

    run(write())
    run(read())
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_rewrite_replaces_the_whole_sample(tmp_path: Path, run: Run) -> None:
    """Stricter than the shared contract (which lets a field-union store such as InfluxDB
    keep a counter name only the earlier write carried): here the row is replaced."""
    first = make_sample("m1", 60, 60, counters={"good": 5, "reject": 1})
    again = make_sample("m1", 60, 60, counters={"good": 7})

    async def rewrite() -> dict[str, float]:
        async with SqliteStore(tmp_path / "store.sqlite3") as store:
            await store.write_samples("a", GW, SESSION, [first])
            await store.write_samples("a", GW, SESSION, [again])
            [window] = await store.counter_totals("a", "m1", at(0), at(60))
            return dict(window.totals)

    assert run(rewrite()) == {"good": 7}


def test_a_closed_store_refuses_calls(tmp_path: Path, run: Run) -> None:
    store = run(SqliteStore(tmp_path / "store.sqlite3").open())
    run(store.close())
    run(store.close())  # idempotent
    with pytest.raises(StoreError, match="not open"):
        run(store.factories())


def test_a_newer_schema_is_refused(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "store.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema 99"):
        run(SqliteStore(path).open())


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run
