"""Load profiles and repair records learnt hour by hour, and kept between restarts
(kyoso/api/learning.py, kyoso/api/profile_file.py): the same figures as reading the whole
lookback at once, bit for bit; what is kept is used after a restart, and what is kept but
stale, foreign, damaged or contradicted by the store is refused and learnt again."""

import asyncio
import json
import random
import tempfile
from array import array
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kyoso.api.learning import HistoryLearner
from kyoso.api.profile_file import FORMAT, KeptHistoryError, ProfileFile, decode, encode
from kyoso.capacity.forecast import LoadProfile
from kyoso.capacity.history import FactoryHistory, Learnt, LoadHistory, hour_index
from kyoso.capacity.repair import DownSamples, RepairRecord
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MachineDescription, MachineState, Sample
from kyoso.store import SqliteStore, StateRun, StateWindow
from kyoso.store.base import RunRow, chain_runs

EXAMPLES = Path(__file__).parent / "contract_examples"
FACTORY = "factory-a"
ORIGIN = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday, 09:00 in Tokyo
RULES = CapacityRules(lookback_days=2, profile_reread_h=6, profile_relearn_h=24 * 30)
"""A short lookback, so that the window slides within a test's days of history."""
STATES = (MachineState.RUNNING, MachineState.SETUP, MachineState.IDLE, MachineState.DOWN)


def describe(machine: str, timezone: str = "Asia/Tokyo") -> MachineDescription:
    """The example description, as machine ``machine`` of the factory, in ``timezone``."""
    example = MachineDescription.model_validate_json(
        (EXAMPLES / "machine_description.json").read_text()
    )
    calendar = example.calendar.model_copy(update={"timezone": timezone})
    return example.model_copy(update={"factory": FACTORY, "machine": machine, "calendar": calendar})


def history(rng: random.Random, machine: str, end: datetime) -> list[Sample]:
    """Samples of ``machine`` from ORIGIN to ``end``: an interval of its own (some not a
    divisor of an hour, so that samples straddle hours), states in runs, some gaps, and
    samples that adjoin within a second, or overlap by less."""
    interval = rng.choice([600.0, 900.0, 2700.0, 3600.0])
    samples, ts, state, seq = [], ORIGIN, rng.choice(STATES), 0
    while ts < end:
        jitter = rng.choice([0.0, 0.0, 0.0, 0.4, -0.3, 2.5])  # clocks, and a gap now and then
        ts += timedelta(seconds=interval + jitter)
        if rng.random() < 0.05:
            continue  # no data
        if rng.random() < 0.2:
            state = rng.choice(STATES)
        other = rng.choice([s for s in STATES if s is not state])
        split = rng.choice([interval, interval / 3])
        durations = {state: split} if split == interval else {other: interval - split, state: split}
        samples.append(
            Sample(
                machine=machine,
                seq=seq,
                ts=ts,
                interval_s=interval,
                state=state,
                durations_s=durations,
            )
        )
        seq += 1
    return samples


async def reference(store: SqliteStore, machine: MachineDescription, now: datetime) -> Learnt:
    """What one read of the whole lookback teaches (the service's way before issue 16)."""
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - RULES.lookback
    windows = await store.state_seconds(FACTORY, None, start, end, 3600.0)
    runs = await store.state_runs(FACTORY, MachineState.DOWN, start, end)
    return Learnt(
        LoadProfile.build(
            [w for w in windows if w.machine == machine.machine], machine.calendar, start, end
        ),
        RepairRecord.learn([r for r in runs if r.machine == machine.machine], RULES, end),
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32))
def test_learning_hour_by_hour_teaches_what_one_read_of_the_lookback_does(seed: int) -> None:
    """Updates at random moments (several in an hour, or a day apart), with each sample
    stored up to four hours after it ended (within profile_reread_h): every update gives
    the profiles and repair records of reading the whole lookback at that moment."""
    rng = random.Random(seed)
    machines = [describe(f"m{i}", rng.choice(["Asia/Tokyo", "Asia/Kolkata"])) for i in range(3)]
    finish = ORIGIN + timedelta(days=6)
    samples = {m.machine: history(rng, m.machine, finish) for m in machines}

    async def scenario(path: Path) -> None:
        async with SqliteStore(path, synchronous="normal") as store:
            learner = HistoryLearner(store, RULES)
            written = dict.fromkeys(samples, 0)
            now = ORIGIN + timedelta(hours=rng.uniform(1, 30))
            while now < finish:
                lag = timedelta(hours=rng.uniform(0, 4))
                for name, found in samples.items():
                    new = [s for s in found[written[name] :] if s.ts <= now - lag]
                    if new:
                        await store.write_samples(FACTORY, "gw", "s", new)
                        written[name] += len(new)
                learnt = await learner.learn(FACTORY, now)
                again = await HistoryLearner(store, RULES).learn(FACTORY, now)
                for machine in machines:
                    expected = await reference(store, machine, now)
                    assert learnt.learnt(machine) == expected
                    assert again.learnt(machine) == expected
                now += timedelta(hours=rng.choice([0.3, 1, 2, 7, 13, 30]))
            assert learner.counts["updated"] > 0

    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(scenario(Path(workdir) / "store.sqlite3"))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(1, 7200),  # tenths of seconds after the previous it ends
            st.floats(0.5, 3600),  # its interval
            st.floats(0.01, 3600),  # its down seconds
            st.booleans(),  # it ended down
        ),
        max_size=40,
    ),
    until_s=st.integers(0, 200_000),
)
def test_down_samples_tell_the_breakdowns_their_runs_tell(
    rows: list[tuple[int, float, float, bool]], until_s: int
) -> None:
    """Chaining kept down samples into a repair record (on microseconds) gives the record
    of the store's runs of them (kyoso/store/base.py, chain_runs), whatever the samples:
    adjoining or not, overlapping, ending down or not."""
    ts, found = ORIGIN, []
    for after_s, interval_s, down_s, ended in rows:
        ts += timedelta(seconds=after_s / 10)
        found.append(("m", ts - timedelta(seconds=interval_s), ts, min(down_s, interval_s), ended))
    until = ORIGIN + timedelta(seconds=until_s)
    expected = RepairRecord.learn(chain_runs(found), RULES, until)
    assert DownSamples.of(reversed(found)).record(RULES, until) == expected


class _CountingStore:
    """A store reader that records the window queries asked of it."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.windows: list[tuple[datetime, datetime, float | None]] = []
        self.runs: list[tuple[datetime, datetime]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    async def state_seconds(
        self,
        factory: str,
        machine: str | None,
        start: datetime,
        end: datetime,
        bucket_s: float | None = None,
    ) -> list[StateWindow]:
        self.windows.append((start, end, bucket_s))
        return await self._store.state_seconds(factory, machine, start, end, bucket_s)

    async def state_runs(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[StateRun]:
        self.runs.append((start, end))
        return await self._store.state_runs(factory, state, start, end)

    async def state_run_rows(
        self, factory: str, state: MachineState, start: datetime, end: datetime
    ) -> list[RunRow]:
        self.runs.append((start, end))
        return await self._store.state_run_rows(factory, state, start, end)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four days of three machines' samples."""
    path = tmp_path_factory.mktemp("learning") / "store.sqlite3"
    rng = random.Random(16)

    async def write() -> None:
        async with SqliteStore(path, synchronous="normal") as store:
            for i in range(3):
                found = history(rng, f"m{i}", ORIGIN + timedelta(days=4))
                await store.write_samples(FACTORY, "gw", "s", found)

    asyncio.run(write())
    return path


NOW = ORIGIN + timedelta(days=4, minutes=10)
MACHINES = [describe(f"m{i}") for i in range(3)]


def _learn(
    store_path: Path,
    kept: Path,
    now: datetime = NOW,
    rules: CapacityRules = RULES,
    source: str = "a",
) -> tuple[FactoryHistory, HistoryLearner, _CountingStore]:
    """A new learner (a restart) over the store, keeping in ``kept``, asked once."""

    async def run() -> tuple[FactoryHistory, HistoryLearner, _CountingStore]:
        async with SqliteStore(store_path) as store:
            counting = _CountingStore(store)
            profiles = ProfileFile(kept, source)
            try:
                learner = HistoryLearner(counting, rules, profiles)  # type: ignore[arg-type]
                found = await learner.learn(FACTORY, now)
                await learner.close()  # what it learnt is kept once written
                return found, learner, counting
            finally:
                profiles.close()

    return asyncio.run(run())


def _same(found: FactoryHistory, store_path: Path, now: datetime = NOW) -> bool:
    async def expected() -> list[Learnt]:
        async with SqliteStore(store_path) as store:
            return [await reference(store, m, now) for m in MACHINES]

    return [found.learnt(m) for m in MACHINES] == asyncio.run(expected())


def test_kept_profiles_are_used_after_a_restart(store_path: Path, tmp_path: Path) -> None:
    """The first start learns the whole lookback (from its first day with data); the next
    reads only the history since the kept one ended, profile_reread_h again and as much
    before to compare with what was kept, and answers the same."""
    kept = tmp_path / "profiles.sqlite3"
    first, learner, reads = _learn(store_path, kept)
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 0}
    assert _same(first, store_path)
    later = NOW + timedelta(hours=3)
    again, learner, reads = _learn(store_path, kept, later)
    assert learner.counts == {"updated": 1, "relearnt": 0, "kept": 1, "refused": 0}
    [(start, end, bucket)] = reads.windows  # one read of hours, none of days
    assert bucket == 3600.0
    assert end == later.replace(minute=0)
    assert start == first.end - 2 * timedelta(hours=RULES.profile_reread_h)
    assert reads.runs == [(start, end)]
    assert _same(again, store_path, later)


def _early(
    store_path: Path, kept: Path, now: datetime
) -> tuple[
    FactoryHistory | None, FactoryHistory | None, FactoryHistory, HistoryLearner, _CountingStore
]:
    """A restart: what is served at once (:meth:`HistoryLearner.early`), asked twice, what
    the store had been asked by then, and the history learnt next."""

    async def run() -> tuple[
        FactoryHistory | None, FactoryHistory | None, FactoryHistory, HistoryLearner, _CountingStore
    ]:
        async with SqliteStore(store_path) as store:
            counting = _CountingStore(store)
            profiles = ProfileFile(kept, "a")
            try:
                learner = HistoryLearner(counting, RULES, profiles)  # type: ignore[arg-type]
                early, again = await learner.early(FACTORY, now), await learner.early(FACTORY, now)
                assert counting.windows == []  # served without the store
                assert counting.runs == []
                if early is not None:
                    assert not learner.checked(early)
                checked = await learner.learn(FACTORY, now)
                assert learner.checked(checked)
                await learner.close()
                return early, again, checked, learner, counting
            finally:
                profiles.close()

    return asyncio.run(run())


def test_a_recent_kept_history_is_served_at_once_and_checked_next(
    store_path: Path, tmp_path: Path
) -> None:
    """After a restart within the hour after the kept history's last, that history is
    served before the store is asked (once), and checked by the next update as above;
    one kept longer ago is not served unchecked."""
    kept = tmp_path / "profiles.sqlite3"
    first, _, _ = _learn(store_path, kept)
    soon = NOW + timedelta(minutes=40)
    early, again, checked, learner, _ = _early(store_path, kept, soon)
    assert early is not None
    assert encode(early) == encode(first)
    assert again is None  # served early once: afterwards, what learn() confirms
    assert learner.counts == {"updated": 1, "relearnt": 0, "kept": 1, "refused": 0}
    assert _same(checked, store_path, soon)
    later = NOW + timedelta(hours=3)
    early, _, _, learner, _ = _early(store_path, kept, later)
    assert early is None
    assert learner.counts == {"updated": 1, "relearnt": 0, "kept": 1, "refused": 0}


def test_a_history_served_early_that_the_store_contradicts_is_learnt_again(
    store_path: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "profiles.sqlite3"
    first, _, _ = _learn(store_path, kept)
    changed = tmp_path / "store.sqlite3"
    changed.write_bytes(store_path.read_bytes())
    _write_late_down(changed, first.end - timedelta(hours=RULES.profile_reread_h + 2))
    early, _, checked, learner, _ = _early(changed, kept, NOW)
    assert early is not None
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 1}
    assert _same(checked, changed)


def test_kept_profiles_of_another_store_are_not_used(store_path: Path, tmp_path: Path) -> None:
    kept = tmp_path / "profiles.sqlite3"
    _learn(store_path, kept, source="store A")
    found, learner, _ = _learn(store_path, kept, source="store B")
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 0}
    assert _same(found, store_path)


def test_kept_profiles_too_old_or_of_another_lookback_are_refused(
    store_path: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "profiles.sqlite3"
    _learn(store_path, kept, ORIGIN + timedelta(days=2))
    late = NOW + timedelta(hours=RULES.profile_relearn_h)  # the whole lookback is due again
    found, learner, _ = _learn(store_path, kept, late)
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 1}
    assert _same(found, store_path, late)
    longer = RULES.model_copy(update={"lookback_days": 3})
    _, learner, _ = _learn(store_path, kept, late, longer)
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 1}


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: body[: len(body) // 2],  # cut short
        lambda body: body + b"\0" * 8,  # longer than it says
        lambda body: b"not json\n" + body,
        lambda body: body.replace(b'"factory-a"', b'"factory-b"', 1),  # another factory's
        lambda body: _first_value(body, b"\x00\x00\x00\x00\x00\x00\xf8\x7f"),  # NaN
        lambda body: _first_value(body, b"\x00\x00\x00\x00\x00\x00\xf0\xbf"),  # -1 s
        lambda body: body[:-1] + b"\x02",  # a sample neither ending down nor not
    ],
    ids=["cut", "longer", "not-json", "other-factory", "nan", "negative", "state"],
)
def test_damaged_kept_profiles_are_refused_and_learnt_again(
    store_path: Path, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    kept = tmp_path / "profiles.sqlite3"
    first, _, _ = _learn(store_path, kept)
    body = encode(first)
    assert decode(FACTORY, body).loads.keys() == first.loads.keys()
    broken = damage(body)
    with pytest.raises(KeptHistoryError):
        decode(FACTORY, broken)
    profiles = ProfileFile(kept, "a")
    profiles._db.execute("UPDATE histories SET body = ?", (broken,))
    profiles.close()
    found, learner, _ = _learn(store_path, kept)
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 1}
    assert _same(found, store_path)


def test_kept_profiles_the_store_contradicts_are_refused(store_path: Path, tmp_path: Path) -> None:
    """Kept hours that the store, read again, does not confirm (another store at the same
    address, or history written into the past since) are not trusted: all is read again."""
    kept = tmp_path / "profiles.sqlite3"
    first, _, _ = _learn(store_path, kept)
    changed = tmp_path / "store.sqlite3"
    changed.write_bytes(store_path.read_bytes())
    _write_late_down(changed, first.end - timedelta(hours=RULES.profile_reread_h + 2))
    found, learner, _ = _learn(changed, kept)
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 1}
    assert _same(found, changed)


def _write_late_down(store_path: Path, at: datetime) -> None:
    """A minute of m0 down at ``at``, written late (hours compared, not read again)."""

    async def rewrite() -> None:
        async with SqliteStore(store_path) as store:
            down = {MachineState.DOWN: 60.0}
            sample = Sample(machine="m0", seq=10**6, ts=at, interval_s=60.0,
                            state=MachineState.DOWN, durations_s=down)  # fmt: skip
            await store.write_samples(FACTORY, "gw", "late", [sample])

    asyncio.run(rewrite())


def test_a_kept_history_reads_back_bit_for_bit(store_path: Path, tmp_path: Path) -> None:
    first, _, _ = _learn(store_path, tmp_path / "profiles.sqlite3")
    again = decode(FACTORY, encode(first))
    assert (again.start, again.end, again.relearnt_at) == (
        first.start,
        first.end,
        first.relearnt_at,
    )
    assert again.loads == first.loads
    header = json.loads(encode(first).partition(b"\n")[0])
    assert header["format"] == FORMAT


def test_hours_kept_then_read_again_are_replaced_from_there() -> None:
    base = hour_index(ORIGIN)
    older = LoadHistory(base, *(_arrays([1.0, 2.0, 3.0, 4.0])))
    newer = LoadHistory(base + 2, *(_arrays([9.0, 8.0, 7.0])))
    merged = older.then(newer, base + 2)
    assert (merged.first, list(merged.observed)) == (base, [1.0, 2.0, 9.0, 8.0, 7.0])
    assert list(older.then(LoadHistory(base + 3), base + 3).observed) == [1.0, 2.0, 3.0]
    assert list(older.within(base + 1, base + 3).observed) == [2.0, 3.0]
    gap = older.within(base, base + 1).then(LoadHistory(base + 3, *_arrays([5.0])), base + 3)
    assert list(gap.observed) == [1.0, 0.0, 0.0, 5.0]
    assert older.same_as(merged, base, base + 2)
    assert not older.same_as(merged, base, base + 3)
    assert LoadHistory().same_as(LoadHistory(base, *_arrays([0.0])), base, base + 1)


def _first_value(body: bytes, value: bytes) -> bytes:
    """``body`` with the first machine's busy seconds of its first hour ``value``."""
    at = body.index(b"\n") + 1
    return body[:at] + value + body[at + 8 :]


def _arrays(observed: list[float]) -> tuple["array[float]", "array[float]", "array[float]"]:
    """Busy and observed seconds ``observed``, none lost, per hour."""
    return array("d", observed), array("d", [0.0] * len(observed)), array("d", observed)


def test_a_kept_file_that_is_no_database_is_started_afresh(
    store_path: Path, tmp_path: Path
) -> None:
    kept = tmp_path / "profiles.sqlite3"
    kept.write_bytes(b"not a database, whatever it was" * 100)
    found, learner, _ = _learn(store_path, kept)
    assert learner.counts == {"updated": 0, "relearnt": 1, "kept": 0, "refused": 0}
    assert _same(found, store_path)
    _, learner, _ = _learn(store_path, kept)  # and it is kept there from then on
    assert learner.counts == {"updated": 1, "relearnt": 0, "kept": 1, "refused": 0}


def test_a_forgotten_history_is_learnt_again_and_not_kept(store_path: Path, tmp_path: Path) -> None:
    """History written into a factory's past (the demo's backfill) makes its learnt history
    forgotten, in the file too, even while it is being written there."""
    kept = tmp_path / "profiles.sqlite3"

    async def run() -> dict[str, int]:
        async with SqliteStore(store_path) as store:
            profiles = ProfileFile(kept, "a")
            learner = HistoryLearner(store, RULES, profiles)
            await learner.learn(FACTORY, NOW)
            learner.forget(FACTORY)  # before its writing ran
            await learner.close()
            assert profiles.load(FACTORY) is None
            await learner.learn(FACTORY, NOW)
            await learner.close()
            assert profiles.load(FACTORY) is not None
            profiles.close()
            return learner.counts

    assert asyncio.run(run()) == {"updated": 0, "relearnt": 2, "kept": 0, "refused": 0}
