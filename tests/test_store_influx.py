"""The shared store contract on :class:`InfluxStore` against a real InfluxDB 1.6.7, plus
what only this store has: server-side proration of samples straddling bucket edges, the
status point's time, refusals by InfluxDB, its credentials, and one request per database
for concurrent writes."""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from services import InfluxDB
from store_suite import GW, SCENARIO, SESSION, Run, StoreContract, at, make_sample

from kyoso.contract import GatewayStatus, MachineDescription, MachineState, Sample
from kyoso.influx.client import InfluxConfig, InfluxWriter, WriteResult
from kyoso.influx.lineprotocol import timestamp_ns
from kyoso.store import (
    InfluxStore,
    LatestSample,
    Refusal,
    SampleGroup,
    Store,
    StoreAuthError,
)

pytestmark = pytest.mark.integration

S = MachineState


def _config(url: str, prefix: str, **overrides: Any) -> InfluxConfig:
    settings: dict[str, Any] = {
        "url": url,
        "database_prefix": prefix,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.2,
        "max_retry_time_s": 2.0,
    }
    return InfluxConfig(**(settings | overrides))


@pytest.fixture
def prefix(influxdb: InfluxDB) -> Iterator[str]:
    """A database prefix no other test uses; its databases are dropped afterwards."""
    name = f"kyoso_t{uuid.uuid4().hex[:16]}_"
    yield name
    if influxdb.running:
        answer = influxdb.query("SHOW DATABASES")
        for [database] in answer["results"][0].get("series", [{}])[0].get("values", []):
            if database.startswith(name):
                influxdb.drop_database(database)


@pytest.fixture
def run() -> Iterator[Run]:
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture
def store(run: Run, influxdb: InfluxDB, prefix: str) -> Iterator[InfluxStore]:
    store = run(InfluxStore(_config(influxdb.url, prefix)).open())
    yield store
    run(store.close())


class TestInfluxStore(StoreContract):
    @pytest.fixture
    def store(self, store: InfluxStore) -> Store:
        return store  # mypy checks here that an InfluxStore is a Store


def _reference(samples: Sequence[Sample], start: datetime, end: datetime) -> dict[str, float]:
    """State seconds, covered seconds and counter deltas over [start, end), prorated."""
    result: dict[str, float] = {}
    for s in samples:
        first = s.ts - timedelta(seconds=s.interval_s)
        share = max(0.0, (min(s.ts, end) - max(first, start)).total_seconds()) / s.interval_s
        values = {state.value: d for state, d in s.durations_s.items()}
        values |= {"covered": s.interval_s} | {n: c.delta for n, c in s.counters.items()}
        for key, value in values.items():
            if share > 0:
                result[key] = result.get(key, 0.0) + value * share
    return result


# --- proration on the server ------------------------------------------------------------


def test_long_samples_straddling_several_buckets(store: InfluxStore, run: Run) -> None:
    # 250-s samples ending at 137 + 250 k, against 60-s buckets from 0: each sample spans
    # four or five buckets, and no sample edge falls on a bucket edge. "reject" is only in
    # every third sample, so a straddler often lacks a counter a later sample carries.
    samples = [
        make_sample(
            "m1",
            137 + 250 * k,
            250,
            {S.RUNNING: 200, S.DOWN: 50} if k % 2 else {S.IDLE: 250},
            seq=k,
            counters={"good": 10 * k + 1, "reject": 7} if k % 3 == 0 else {"good": 10 * k + 1},
        )
        for k in range(8)
    ]
    run(store.write_samples("a", GW, SESSION, samples))
    windows = run(store.state_seconds("a", None, at(-30), at(1700), bucket_s=60))
    counters = run(store.counter_totals("a", None, at(-30), at(1700), bucket_s=60))
    assert len(windows) == len(counters) == 29  # 28 full buckets and a shorter last one
    for window, counts in zip(windows, counters, strict=True):
        expected = _reference(samples, window.start, window.end)
        seconds = {state.value: window.seconds[state] for state in S if window.seconds[state]}
        assert seconds == pytest.approx(
            {k: v for k, v in expected.items() if k in {"running", "down", "idle"}}, abs=1e-6
        )
        assert window.no_data_s == pytest.approx(
            window.length_s - expected.get("covered", 0.0), abs=1e-6
        )
        assert dict(counts.totals) == pytest.approx(
            {k: v for k, v in expected.items() if k in {"good", "reject"}}, abs=1e-6
        )
    [whole] = run(store.counter_totals("a", "m1", at(-113), at(1887)))  # all of them
    assert whole.totals == pytest.approx({"good": sum(10 * k + 1 for k in range(8)), "reject": 21})


def test_a_sample_longer_than_the_window_is_prorated(store: InfluxStore, run: Run) -> None:
    sample = make_sample("m1", 3600, 3600, {S.RUNNING: 1800, S.SETUP: 1800}, counters={"g": 36})
    run(store.write_samples("a", GW, SESSION, [sample]))
    [window] = run(store.state_seconds("a", None, at(1000), at(1100)))
    assert dict(window.seconds) == pytest.approx(
        {s: 50.0 if s in (S.RUNNING, S.SETUP) else 0.0 for s in S}
    )
    assert window.no_data_s == pytest.approx(0)
    buckets = run(store.counter_totals("a", "m1", at(3500), at(3700), bucket_s=50))
    assert [dict(w.totals) for w in buckets] == [
        pytest.approx({"g": 0.5}),
        pytest.approx({"g": 0.5}),
        {},
        {},
    ]


# --- writes -------------------------------------------------------------------------------


def test_a_status_point_is_stamped_with_the_write_time(
    store: InfluxStore, run: Run, influxdb: InfluxDB, prefix: str
) -> None:
    online = GatewayStatus.model_validate(
        {
            "factory": "a",
            "gateway": GW,
            "session": SESSION,
            "status": "online",
            "reason": "connected",
            "ts": at(10),
        }
    )
    will = online.model_copy(update={"status": "offline", "reason": "connection_lost"})
    before = time.time_ns()
    for status in (online, will, online, will):
        run(store.write_status(status))
    after = time.time_ns()
    answer = influxdb.query("SELECT * FROM gateway_status", f"{prefix}a", epoch="ns")
    series = answer["results"][0]["series"][0]
    rows = [dict(zip(series["columns"], v, strict=True)) for v in series["values"]]
    times = [row["time"] for row in rows]
    assert len(rows) == 4  # four writes, four points: none overwrote another
    assert times == sorted(set(times))
    assert before <= times[0]
    assert times[-1] <= after + 4  # + 1 ns per write at most
    assert {row["ts_ns"] for row in rows} == {timestamp_ns(at(10))}
    assert [row["status"] for row in rows] == ["online", "offline", "online", "offline"]
    assert run(store.gateway_status("a")) == [will]


def test_a_description_at_the_same_time_replaces_every_field(store: InfluxStore, run: Run) -> None:
    first = _description_with_cycle_time(24.0)
    run(store.write_description(first))
    assert run(store.machines("a")) == [first]
    again = first.model_copy(update={"ideal_cycle_time_s": None})  # same updated_at
    run(store.write_description(again))
    assert run(store.machines("a")) == [again]


def _description_with_cycle_time(seconds: float | None) -> MachineDescription:
    return MachineDescription.model_validate(
        {
            "factory": "a",
            "gateway": GW,
            "machine": "m1",
            "name": "press",
            "updated_at": at(0),
            "ideal_cycle_time_s": seconds,
            "calendar": {"timezone": "Asia/Tokyo"},
        }
    )


def test_a_sample_refused_by_influxdb_comes_back_alone(
    store: InfluxStore, run: Run, influxdb: InfluxDB, prefix: str
) -> None:
    # A float "scrap_delta" in the same shard first: the middle sample's integer one is
    # then a field type conflict, which InfluxDB reports without naming the line.
    influxdb.create_database(f"{prefix}a")
    seed = f"samples,gateway=gw-00,machine=m0 scrap_delta=1.5 {timestamp_ns(at(0))}"
    influxdb.write(f"{prefix}a", seed)
    samples = [
        make_sample("m1", 60, 60, seq=1, counters={"good": 1}),
        make_sample("m2", 60, 60, seq=2, counters={"scrap": 1}),
        make_sample("m3", 60, 60, seq=3, counters={"good": 3}),
    ]
    [refusal] = run(store.write_samples("a", GW, SESSION, samples))
    assert refusal.index == 1
    assert "field type conflict" in refusal.reason
    answer = influxdb.query('SELECT "seq" FROM samples GROUP BY machine', f"{prefix}a")
    assert [s["tags"]["machine"] for s in answer["results"][0]["series"]] == ["m1", "m3"]


def test_a_line_that_cannot_be_built_is_refused(store: InfluxStore, run: Run) -> None:
    too_early = make_sample("m1", 60, 60).model_copy(
        update={"ts": datetime(1677, 9, 21, 0, 13, tzinfo=UTC)}  # start_ns below int64
    )
    refusals = run(store.write_samples("a", GW, SESSION, [make_sample("m2", 60, 60), too_early]))
    assert [r.index for r in refusals] == [1]
    assert isinstance(refusals[0], Refusal)
    assert list(run(store.latest_samples("a"))) == ["m2"]


def test_a_batch_is_one_request_per_database(
    store: InfluxStore, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[tuple[str, int]] = []
    write = InfluxWriter.write

    async def counted(self: InfluxWriter, database: str, lines: Sequence[str]) -> WriteResult:
        result = await write(self, database, lines)
        requests.append((database.rsplit("_", 1)[-1], result.requests))
        return result

    monkeypatch.setattr(InfluxWriter, "write", counted)
    groups = [
        SampleGroup(factory, gateway, SESSION, [make_sample(f"m{i}", 60, 60)])
        for i, (factory, gateway) in enumerate(
            [("a", "gw-01"), ("b", "gw-01"), ("a", "gw-02"), ("a", "gw-03"), ("b", "gw-04")]
        )
    ]
    assert run(store.write_batch(groups)) == []
    # One request per database; 'a' and 'b' are new, so each request found no database,
    # which the writer created before sending the same lines again.
    assert sorted(requests) == [("a", 2), ("b", 2)]
    requests.clear()
    assert run(store.write_batch(groups)) == []
    assert sorted(requests) == [("a", 1), ("b", 1)]
    assert sorted(run(store.latest_samples("a"))) == ["m0", "m2", "m3"]


def test_wrong_credentials_raise_the_auth_error(
    run: Run, influxdb_factory: Callable[..., InfluxDB]
) -> None:
    server = influxdb_factory(auth_enabled=True)
    config = _config(server.url, "kyoso_", username="admin", password="wrong")  # noqa: S106

    async def scenario() -> None:
        async with InfluxStore(config) as store:
            with pytest.raises(StoreAuthError, match="401"):
                await store.write_samples("a", GW, SESSION, SCENARIO)
            with pytest.raises(StoreAuthError):
                await store.state_seconds("a", None, at(0), at(240))

    run(scenario())


# --- reads --------------------------------------------------------------------------------


def test_a_factory_without_a_database_reads_empty(store: InfluxStore, run: Run) -> None:
    run(store.remove_description("z", "m1"))  # nothing to remove: no error
    assert run(store.machines("z")) == []
    assert run(store.latest_samples("z")) == {}
    windows = run(store.state_seconds("z", "m1", at(0), at(120), bucket_s=60))
    assert [(w.start, w.no_data_s) for w in windows] == [(at(0), 60.0), (at(60), 60.0)]
    assert [w.totals for w in run(store.counter_totals("z", "m1", at(0), at(120)))] == [{}]
    assert run(store.factories()) == []  # reading created no database


def test_the_reserved_factory_id_is_neither_written_nor_read(
    store: InfluxStore, run: Run, influxdb: InfluxDB, prefix: str
) -> None:
    influxdb.create_database(f"{prefix}capacity")  # the shared capacity database
    influxdb.write(f"{prefix}capacity", "samples,gateway=g,machine=m seq=1i 0")
    refusals = run(store.write_samples("capacity", GW, SESSION, SCENARIO))
    assert [r.index for r in refusals] == list(range(len(SCENARIO)))
    assert all("reserved" in r.reason for r in refusals)
    assert run(store.latest_samples("capacity")) == {}
    assert run(store.factories()) == []


def test_latest_samples_show_a_newer_one_and_reuse_the_unchanged(
    store: InfluxStore, run: Run
) -> None:
    # A newer sample, or the same one stored again (a new received_ns), is what the next
    # read shows; a machine whose row is unchanged gets the object parsed before (ParseMemo).
    first = [make_sample(m, 60, 60, seq=1) for m in ("m1", "m2")]
    run(store.write_samples("a", GW, SESSION, first, received_at=at(1000)))
    before = run(store.latest_samples("a"))
    newer = make_sample("m1", 120, 60, seq=2)
    run(store.write_samples("a", GW, SESSION, [newer], received_at=at(2000)))
    after = run(store.latest_samples("a"))
    assert (after["m1"].sample, after["m1"].received_at) == (newer, at(2000))
    assert after["m2"] is before["m2"]
    run(store.write_samples("a", GW, SESSION, first[1:], received_at=at(3000)))
    again = run(store.latest_samples("a"))
    assert (again["m2"].sample, again["m2"].received_at) == (first[1], at(3000))
    assert again["m1"] is after["m1"]


def test_a_partly_written_latest_point_reads_as_no_sample(
    store: InfluxStore, run: Run, influxdb: InfluxDB, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A point InfluxDB holds only part of (fields of a write still to come, or lost): the
    # newest point of m2 has nothing but its seq, m3's lacks its durations and received_ns.
    # The latest point is read per machine (LIMIT 1): such a machine has no latest sample,
    # not its previous one, and the others are answered.
    complete = [make_sample(m, 60, 60, seq=1) for m in ("m1", "m2", "m3")]
    run(store.write_samples("a", GW, SESSION, complete))
    ns = timestamp_ns(at(120))
    influxdb.write(
        f"{prefix}a",
        [
            f"samples,gateway={GW},machine=m2 seq=2i {ns}",
            f'samples,gateway={GW},machine=m3 seq=2i,session="{SESSION}",interval_s=60.0,'
            f'start_ns={ns - 60 * 10**9}i,state="running" {ns}',
        ],
    )
    with caplog.at_level(logging.WARNING, logger="kyoso.store.influx"):
        latest = run(store.latest_samples("a"))
    assert list(latest) == ["m1"]
    assert latest["m1"].sample == complete[0]
    warned = sorted(r.getMessage() for r in caplog.records)
    assert len(warned) == 2
    assert "'m2'" in warned[0]
    assert "session, interval_s, state, received_ns, running_s" in warned[0]
    assert "'m3'" in warned[1]
    assert "lacks received_ns, running_s" in warned[1]
    caplog.clear()
    # The live view reads fewer fields of the latest points, and the same machines.
    with caplog.at_level(logging.WARNING, logger="kyoso.store.influx"):
        heard = run(store.live("a")).latest
    assert heard == {"m1": LatestSample.of(latest["m1"])}
    warned = sorted(r.getMessage() for r in caplog.records)
    assert len(warned) == 2
    assert "'m2'" in warned[0]
    assert "lacks state, received_ns" in warned[0]
    assert "'m3'" in warned[1]
    assert "lacks received_ns" in warned[1]
