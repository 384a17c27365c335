"""The behaviour every :class:`kyoso.store.Store` must show, as one reusable test class.

Reuse it verbatim for another implementation::

    class TestInfluxStore(StoreContract):
        @pytest.fixture
        def store(self, run: Run, influxdb: InfluxDB, ...) -> Iterator[Store]:
            store = run(InfluxStore(...).open())   # open, use and close on the `run` loop
            yield store
            run(store.close())

``run`` (provided here) runs a coroutine on one event loop kept for the whole test, so a
store holding a loop-bound client (an HTTP session) can be opened in the fixture and used
by the test. The property test writes each example under a fresh factory id, so it needs
nothing but a store that keeps factories apart (which is also tested).

Hand-computed scenario used by several tests (machine ``m1``, times in seconds after T0,
each sample covering ``(end - interval, end]``)::

    s1  (0, 60]     running 45, idle 15           good 6, reject 1
    s2  (60, 120]   running 30, down 20, unknown 10   good 4
        (120, 180]  no sample: a gap
    s3  (180, 240]  setup 60                      good 0
"""

import asyncio
from collections.abc import Coroutine, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kyoso.contract import (
    Capability,
    Counter,
    GatewayStatus,
    MachineDescription,
    MachineState,
    Maintenance,
    Process,
    Sample,
    Shift,
    ShiftCalendar,
    SignalStats,
)
from kyoso.store import (
    CounterWindow,
    GapReport,
    LatestSample,
    LiveRead,
    SampleGroup,
    StateRun,
    StateWindow,
    Store,
)
from kyoso.store.base import chain_runs

__all__ = ["T0", "Run", "StoreContract", "at", "make_sample"]

_T = TypeVar("_T")
T0 = datetime(2026, 1, 12, tzinfo=UTC)
JST = timezone(timedelta(hours=9))
S = MachineState
GW = "gw-01"
SESSION = "0f8e6c1a-4b7d-4e2a-9c35-7a1d2b3c4d5e"


class Run(Protocol):
    """Run a coroutine to completion on the test's event loop."""

    def __call__(self, coro: Coroutine[Any, Any, _T], /) -> _T: ...


def at(seconds: float) -> datetime:
    """T0 plus ``seconds``, in UTC."""
    return T0 + timedelta(seconds=seconds)


def make_sample(
    machine: str,
    end_s: float,
    interval_s: float,
    durations: Mapping[MachineState, float] | None = None,
    *,
    seq: int = 0,
    counters: Mapping[str, int] | None = None,
    **extra: Any,
) -> Sample:
    """A sample covering ``(T0 + end_s - interval_s, T0 + end_s]``."""
    durations = dict(durations or {S.RUNNING: interval_s})
    return Sample(
        machine=machine,
        seq=seq,
        ts=at(end_s),
        interval_s=interval_s,
        state=max(durations, key=lambda s: durations[s]),
        durations_s=durations,
        counters={n: Counter(delta=d) for n, d in (counters or {}).items()},
        **extra,
    )


def _description(
    factory: str, machine: str, updated_s: float, name: str = "a"
) -> MachineDescription:
    return MachineDescription(
        factory=factory,
        gateway=GW,
        machine=machine,
        name=name,
        updated_at=at(updated_s),
        capabilities=[Capability(process=Process.CNC_TURNING)],
        calendar=ShiftCalendar(
            timezone="Asia/Tokyo",
            shifts=[Shift.model_validate({"days": ["mon"], "start": "06:00", "end": "14:00"})],
            maintenance=[Maintenance(start=at(0).astimezone(JST), end=at(3600).astimezone(JST))],
        ),
    )


def _status(factory: str, gateway: str, status: str, reason: str, ts_s: float) -> GatewayStatus:
    return GatewayStatus.model_validate(
        {
            "factory": factory,
            "gateway": gateway,
            "session": SESSION,
            "status": status,
            "reason": reason,
            "ts": at(ts_s),
        }
    )


SCENARIO = [
    make_sample(
        "m1", 60, 60, {S.RUNNING: 45, S.IDLE: 15}, seq=1, counters={"good": 6, "reject": 1}
    ),
    make_sample(
        "m1", 120, 60, {S.RUNNING: 30, S.DOWN: 20, S.UNKNOWN: 10}, seq=2, counters={"good": 4}
    ),
    make_sample("m1", 240, 60, {S.SETUP: 60}, seq=3, counters={"good": 0}),
]


def seconds(**by_state: float) -> dict[MachineState, float]:
    """All six states, those not named at zero."""
    return {state: float(by_state.get(state.value, 0.0)) for state in MachineState}


def assert_window(
    got: StateWindow,
    machine: str,
    start_s: float,
    end_s: float,
    no_data_s: float,
    **by_state: float,
) -> None:
    assert (got.machine, got.start, got.end) == (machine, at(start_s), at(end_s))
    assert got.start.utcoffset() == timedelta(0)
    assert got.end.utcoffset() == timedelta(0)
    assert dict(got.seconds) == pytest.approx(seconds(**by_state), abs=1e-6)
    assert got.no_data_s == pytest.approx(no_data_s, abs=1e-6)


def ending_in(state: MachineState, sample: Sample) -> Sample:
    """The sample with its ``state`` field (the state at its ``ts``) set to ``state``."""
    return sample.model_copy(update={"state": state})


def runs(found: list[StateRun]) -> list[tuple[str, datetime, datetime, object, bool]]:
    """The runs as tuples, their datetimes checked to be in UTC."""
    for run in found:
        assert run.start.utcoffset() == run.end.utcoffset() == timedelta(0)
    return [(r.machine, r.start, r.end, pytest.approx(r.seconds), r.ongoing) for r in found]


def totals(windows: list[CounterWindow]) -> list[tuple[str, datetime, datetime, dict[str, float]]]:
    return [(w.machine, w.start, w.end, dict(w.totals)) for w in windows]


class StoreContract:
    """Subclass as ``Test<Kind>Store`` and provide a ``store`` fixture (opened on ``run``)."""

    @pytest.fixture
    def run(self) -> Iterator[Run]:
        with asyncio.Runner() as runner:
            yield runner.run

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a StoreContract subclass must provide a `store` fixture")

    # --- writes are idempotent ---------------------------------------------------------

    def test_rewriting_the_same_samples_counts_them_once(self, store: Store, run: Run) -> None:
        for received in (at(1000), at(2000)):
            run(store.write_samples("a", GW, SESSION, SCENARIO, received_at=received))
        run(store.write_samples("a", GW, SESSION, SCENARIO[1:2], received_at=at(3000)))
        [window] = run(store.state_seconds("a", "m1", at(0), at(240)))
        assert_window(window, "m1", 0, 240, 60, running=75, idle=15, down=20, unknown=10, setup=60)
        [counts] = run(store.counter_totals("a", "m1", at(0), at(240)))
        assert counts.totals == pytest.approx({"good": 10, "reject": 1})
        latest = run(store.latest_samples("a"))["m1"]
        assert (latest.sample, latest.received_at) == (SCENARIO[2], at(2000))

    def test_a_batch_writes_every_group_with_its_session_and_receive_time(
        self, store: Store, run: Run
    ) -> None:
        groups = [
            SampleGroup("a", GW, "s-1", SCENARIO[:2], received_at=at(1000)),
            SampleGroup("b", "gw-02", "s-2", [make_sample("m9", 60, 60)], received_at=at(2000)),
            SampleGroup("a", GW, "s-3", SCENARIO[2:], received_at=at(3000)),
            SampleGroup("b", "gw-02", "s-2", []),
        ]
        assert run(store.write_batch(groups)) == []
        latest = run(store.latest_samples("a"))["m1"]
        assert (latest.sample, latest.session, latest.received_at) == (SCENARIO[2], "s-3", at(3000))
        [other] = run(store.latest_samples("b")).values()
        assert (other.gateway, other.session, other.received_at) == ("gw-02", "s-2", at(2000))
        [window] = run(store.state_seconds("a", "m1", at(0), at(240)))
        assert_window(window, "m1", 0, 240, 60, running=75, idle=15, down=20, unknown=10, setup=60)

    def test_a_rewrite_replaces_every_state_duration(self, store: Store, run: Run) -> None:
        first = make_sample("m1", 60, 60, {S.RUNNING: 60}, counters={"good": 5})
        again = make_sample("m1", 60, 60, {S.IDLE: 50, S.DOWN: 10}, counters={"good": 7})
        run(store.write_samples("a", GW, SESSION, [first]))
        run(store.write_samples("a", GW, SESSION, [again]))
        [window] = run(store.state_seconds("a", "m1", at(0), at(60)))
        assert_window(window, "m1", 0, 60, 0, idle=50, down=10)
        [counts] = run(store.counter_totals("a", "m1", at(0), at(60)))
        assert counts.totals == pytest.approx({"good": 7})
        assert run(store.latest_samples("a"))["m1"].sample == again

    # --- latest description, status, sample ---------------------------------------------

    def test_machines_keep_the_latest_description(self, store: Store, run: Run) -> None:
        newer, older = _description("a", "m1", 200, "newer"), _description("a", "m1", 100, "old")
        run(store.write_description(_description("a", "m2", 50)))
        run(store.write_description(newer))
        run(store.write_description(older))  # a late redelivery of an older description
        assert run(store.machines("a")) == [newer, _description("a", "m2", 50)]
        same_time = _description("a", "m1", 200, "renamed")
        run(store.write_description(same_time))
        assert [d.name for d in run(store.machines("a"))] == ["renamed", "a"]

    def test_a_removed_description_is_no_longer_listed(self, store: Store, run: Run) -> None:
        run(store.write_description(_description("a", "m1", 100)))
        run(store.write_description(_description("a", "m2", 100)))
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        run(store.remove_description("a", "m2"))
        assert [d.machine for d in run(store.machines("a"))] == ["m1"]
        run(store.remove_description("a", "m1"))
        assert run(store.machines("a")) == []
        assert "m1" in run(store.latest_samples("a"))  # samples stay
        run(store.write_description(_description("a", "m2", 50)))
        assert [d.machine for d in run(store.machines("a"))] == ["m2"]

    def test_gateway_status_is_the_last_written(self, store: Store, run: Run) -> None:
        online = _status("a", GW, "online", "connected", 10)
        will = _status("a", GW, "offline", "connection_lost", 9)  # ts of its CONNECT: earlier
        other = _status("a", "gw-02", "online", "connected", 5)
        for status in (online, other, will):
            run(store.write_status(status))
        assert run(store.gateway_status("a")) == [will, other]
        back = _status("a", GW, "online", "connected", 20)
        run(store.write_status(back))
        assert run(store.gateway_status("a")) == [back, other]

    def test_the_gap_report_last_written_wins(self, store: Store, run: Run) -> None:
        run(store.write_gaps("a", GW, 10, 30.0, at(100)))
        run(store.write_gaps("a", "gw-02", 3, 5.5, at(90)))
        # Another worker's report, computed earlier by its clock, written last: it wins.
        run(store.write_gaps("a", GW, 4, 12.25, at(50)))
        assert run(store.gateway_gaps("a")) == {
            GW: GapReport(4, 12.25, at(50)),
            "gw-02": GapReport(3, 5.5, at(90)),
        }
        run(store.write_gaps("a", GW, 0, 0.0, at(200).astimezone(JST)))  # its gaps closed
        closed = run(store.gateway_gaps("a"))[GW]
        assert closed == GapReport(0, 0.0, at(200))
        assert closed.at.utcoffset() == timedelta(0)

    def test_a_live_read_is_the_three_reads_it_stands_for(self, store: Store, run: Run) -> None:
        assert run(store.live("a")) == LiveRead([], {}, {})  # nothing of it stored yet
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        for machine, updated_s in (("m2", 5), ("m1", 7)):
            run(store.write_description(_description("a", machine, updated_s)))
        run(store.write_status(_status("a", GW, "online", "connected", 3)))
        run(store.write_gaps("a", GW, 4, 12.25, at(50)))
        run(store.write_samples("b", GW, SESSION, [make_sample("m9", 60, 60)]))  # not of "a"
        live = run(store.live("a"))
        assert live == LiveRead(
            run(store.gateway_status("a")),
            {m: LatestSample.of(s) for m, s in run(store.latest_samples("a")).items()},
            run(store.gateway_gaps("a")),
        )
        assert len(live.statuses) == 1
        assert set(live.latest) == {sample.machine for sample in SCENARIO}
        assert set(live.gaps) == {GW}

    def test_latest_sample_per_machine_round_trips(self, store: Store, run: Run) -> None:
        rich = make_sample(
            "m1",
            120,
            60,
            {S.RUNNING: 52.5, S.DOWN: 7.5, S.IDLE: 0.0},
            seq=9,
            alarm=240,
            signals={"power_kw": SignalStats(last=3.1, mean=12.4, min=3.1, max=15.2, count=60)},
            missing=["current_a"],
        ).model_copy(update={"counters": {"good": Counter(delta=2, total=2**64 - 1)}})
        late = make_sample("m2", 30, 30, seq=3)
        run(store.write_samples("a", GW, SESSION, [rich], received_at=at(121).astimezone(JST)))
        run(store.write_samples("a", GW, "s-older", [SCENARIO[0], late], received_at=at(500)))
        latest = run(store.latest_samples("a"))
        assert sorted(latest) == ["m1", "m2"]
        # Zero durations are not kept: IDLE 0.0 reads back as absent.
        assert latest["m1"].sample == rich.model_copy(
            update={"durations_s": {S.RUNNING: 52.5, S.DOWN: 7.5}}
        )
        assert (latest["m1"].gateway, latest["m1"].session) == (GW, SESSION)
        assert latest["m1"].received_at == at(121)
        assert latest["m1"].received_at.utcoffset() == timedelta(0)
        assert latest["m1"].sample.ts.utcoffset() == timedelta(0)
        assert (latest["m2"].sample, latest["m2"].session) == (late, "s-older")

    # --- state seconds ------------------------------------------------------------------

    def test_state_seconds_sum_the_durations_and_show_gaps(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        [window] = run(store.state_seconds("a", "m1", at(0), at(240)))
        assert_window(window, "m1", 0, 240, 60, running=75, idle=15, down=20, unknown=10, setup=60)
        [before] = run(store.state_seconds("a", "m1", at(-100), at(0)))
        assert_window(before, "m1", -100, 0, 100)

    def test_samples_straddling_the_window_are_prorated(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        [window] = run(store.state_seconds("a", "m1", at(40), at(200)))
        # s1 (0, 60] overlaps 20 of 60 s, s2 lies inside, s3 (180, 240] overlaps 20 of 60 s.
        assert_window(window, "m1", 40, 200, 60, running=45, idle=5, down=20, unknown=10, setup=20)
        [inside] = run(store.state_seconds("a", "m1", at(70), at(100)))
        assert_window(inside, "m1", 70, 100, 0, running=15, down=10, unknown=5)

    def test_samples_touching_the_window_edges_do_not_count(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        [window] = run(store.state_seconds("a", "m1", at(60), at(120)))  # only s2
        assert_window(window, "m1", 60, 120, 0, running=30, down=20, unknown=10)
        [gap] = run(store.state_seconds("a", "m1", at(120), at(180)))
        assert_window(gap, "m1", 120, 180, 60)

    def test_buckets_split_samples_and_align_to_the_start(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        b0, b1, b2 = run(store.state_seconds("a", "m1", at(0), at(240), bucket_s=90))
        assert_window(b0, "m1", 0, 90, 0, running=60, idle=15, down=10, unknown=5)
        assert_window(b1, "m1", 90, 180, 60, running=15, down=10, unknown=5)
        assert_window(b2, "m1", 180, 240, 0, setup=60)  # the last bucket is shorter
        whole = run(store.state_seconds("a", "m1", at(0), at(240), bucket_s=1000))
        assert [(w.start, w.end) for w in whole] == [(at(0), at(240))]

    def test_every_machine_of_the_factory_is_reported(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        run(store.write_samples("a", GW, SESSION, [make_sample("m2", 100, 50, seq=5)]))
        run(store.write_samples("a", GW, SESSION, [make_sample("m4", 1000, 10, seq=6)]))
        run(store.write_description(_description("a", "m3", 0)))  # described, never sampled
        windows = run(store.state_seconds("a", None, at(0), at(240), bucket_s=120))
        assert [(w.machine, w.start) for w in windows] == [
            (m, at(t)) for m in ("m1", "m2", "m3") for t in (0, 120)
        ]
        assert_window(windows[2], "m2", 0, 120, 70, running=50)
        assert_window(windows[3], "m2", 120, 240, 120)
        assert_window(windows[4], "m3", 0, 120, 120)
        [m4] = run(store.state_seconds("a", "m4", at(0), at(240)))  # asked for by name
        assert_window(m4, "m4", 0, 240, 240)

    # --- counters -----------------------------------------------------------------------

    def test_counter_totals_are_prorated_and_bucketed(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        [whole] = run(store.counter_totals("a", "m1", at(40), at(200)))
        assert whole.totals == pytest.approx({"good": 6 / 3 + 4 + 0, "reject": 1 / 3})
        buckets = run(store.counter_totals("a", None, at(0), at(240), bucket_s=90))
        assert [(w.machine, w.start, w.end) for w in buckets] == [
            ("m1", at(0), at(90)),
            ("m1", at(90), at(180)),
            ("m1", at(180), at(240)),
        ]
        assert [dict(w.totals) for w in buckets] == [
            pytest.approx({"good": 8, "reject": 1}),
            pytest.approx({"good": 2}),
            {"good": 0},
        ]
        [gap] = run(store.counter_totals("a", "m1", at(125), at(175)))
        assert gap.totals == {}

    # --- runs of a state ----------------------------------------------------------------

    def test_a_run_spans_adjoining_samples(self, store: Store, run: Run) -> None:
        samples = [
            ending_in(S.DOWN, make_sample("m1", 60, 60, {S.RUNNING: 40, S.DOWN: 20}, seq=1)),
            make_sample("m1", 120, 60, {S.DOWN: 60}, seq=2),
            make_sample("m1", 180, 60, {S.DOWN: 50, S.IDLE: 10}, seq=3),  # ends down
            make_sample("m2", 150, 30, {S.RUNNING: 20, S.DOWN: 10}, seq=4),  # ends running
        ]
        run(store.write_samples("a", GW, SESSION, samples))
        # m1 went down 20 s before its first sample ended and is still down at its last.
        found = run(store.state_runs("a", S.DOWN, at(0).astimezone(JST), at(180)))
        assert runs(found) == [
            ("m1", at(40), at(180), 130, True),
            ("m2", at(120), at(130), 10, False),  # down first, then running
        ]
        assert isinstance(found[0], StateRun)

    def test_a_sample_ending_in_another_state_closes_the_run(self, store: Store, run: Run) -> None:
        samples = [
            make_sample("m1", 60, 60, {S.DOWN: 60}, seq=1),
            make_sample("m1", 120, 60, {S.DOWN: 20, S.RUNNING: 40}, seq=2),  # ends running
            ending_in(S.DOWN, make_sample("m1", 180, 60, {S.RUNNING: 30, S.DOWN: 30}, seq=3)),
            make_sample("m1", 240, 60, {S.RUNNING: 60}, seq=4),
            ending_in(S.DOWN, make_sample("m1", 300, 60, {S.RUNNING: 55, S.DOWN: 5}, seq=5)),
        ]
        run(store.write_samples("a", GW, SESSION, samples))
        assert runs(run(store.state_runs("a", S.DOWN, at(0), at(300)))) == [
            ("m1", at(0), at(80), 80, False),
            ("m1", at(150), at(180), 30, True),  # ended down; the next sample has no down
            ("m1", at(295), at(300), 5, True),
        ]

    def test_a_gap_of_no_data_ends_a_run(self, store: Store, run: Run) -> None:
        samples = [
            make_sample("m1", 60, 60, {S.DOWN: 60}, seq=1),
            make_sample("m1", 180, 60, {S.DOWN: 60}, seq=2),  # after 60 s without data
            make_sample("m1", 240.5, 60, {S.DOWN: 60}, seq=3),  # 0.5 s apart: adjoins
            make_sample("m1", 302.5, 60, {S.DOWN: 60}, seq=4),  # 2 s apart: a gap
        ]
        run(store.write_samples("a", GW, SESSION, samples))
        assert runs(run(store.state_runs("a", S.DOWN, at(0), at(400)))) == [
            ("m1", at(0), at(60), 60, True),
            ("m1", at(120), at(240.5), 120, True),
            ("m1", at(242.5), at(302.5), 60, True),
        ]

    def test_runs_are_of_the_state_asked_for_only(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, [make_sample("m1", 60, 60, {S.RUNNING: 60})]))
        for state in S:
            expected = [("m1", at(0), at(60), 60, True)] if state is S.RUNNING else []
            assert runs(run(store.state_runs("a", state, at(0), at(60)))) == expected
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        assert runs(run(store.state_runs("a", S.PLANNED_STOP, at(0), at(240)))) == []
        assert runs(run(store.state_runs("a", S.IDLE, at(0), at(240)))) == [
            ("m1", at(0), at(15), 15, False)  # s1 ended running: idle placed at its start
        ]
        assert runs(run(store.state_runs("a", S.SETUP, at(0), at(240)))) == [
            ("m1", at(180), at(240), 60, True)
        ]

    def test_runs_take_the_samples_ending_in_the_window(self, store: Store, run: Run) -> None:
        samples = [make_sample("m1", t, 60, {S.DOWN: 60}, seq=t) for t in (60, 120, 180)]
        run(store.write_samples("a", GW, SESSION, samples))
        one = [("m1", at(60), at(120), 60, True)]
        assert runs(run(store.state_runs("a", S.DOWN, at(60), at(120)))) == one
        assert runs(run(store.state_runs("a", S.DOWN, at(61), at(150)))) == one
        assert runs(run(store.state_runs("a", S.DOWN, at(59), at(180)))) == [
            ("m1", at(0), at(180), 180, True)
        ]
        assert run(store.state_runs("a", S.DOWN, at(120), at(120))) == []
        assert run(store.state_runs("a", S.DOWN, at(180), at(1000))) == []

    def test_runs_are_confined_to_the_factory(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, [make_sample("m1", 60, 60, {S.DOWN: 60})]))
        b_samples = [
            make_sample("m2", 60, 60, {S.DOWN: 60}, seq=1),
            ending_in(S.IDLE, make_sample("m1", 120, 60, {S.DOWN: 30, S.IDLE: 30}, seq=2)),
        ]
        run(store.write_samples("b", GW, SESSION, b_samples))
        assert runs(run(store.state_runs("b", S.DOWN, at(0), at(240)))) == [
            ("m1", at(60), at(90), 30, False),
            ("m2", at(0), at(60), 60, True),
        ]
        assert runs(run(store.state_runs("a", S.DOWN, at(0), at(240)))) == [
            ("m1", at(0), at(60), 60, True)
        ]
        assert run(store.state_runs("z", S.DOWN, at(0), at(240))) == []

    def test_run_rows_are_the_samples_runs_are_made_of(self, store: Store, run: Run) -> None:
        """state_run_rows gives the samples state_runs chains: chained, they are its runs,
        whatever the window and the samples' order."""
        samples = [
            ending_in(S.DOWN, make_sample("m1", 60, 60, {S.RUNNING: 40, S.DOWN: 20}, seq=1)),
            make_sample("m1", 120, 60, {S.DOWN: 60}, seq=2),
            make_sample("m1", 180, 60, {S.DOWN: 20, S.RUNNING: 40}, seq=3),  # ends running
            ending_in(S.DOWN, make_sample("m1", 300, 60, {S.RUNNING: 55, S.DOWN: 5}, seq=4)),
            make_sample("m2", 150, 30, {S.RUNNING: 20, S.DOWN: 10}, seq=5),
        ]
        run(store.write_samples("a", GW, SESSION, samples))
        for start, end in [(at(0), at(300)), (at(61), at(180)), (at(180), at(300))]:
            rows = run(store.state_run_rows("a", S.DOWN, start, end))
            assert chain_runs(reversed(rows)) == run(store.state_runs("a", S.DOWN, start, end))
        rows = run(store.state_run_rows("a", S.DOWN, at(0), at(300)))
        assert sorted(rows) == [
            ("m1", at(0), at(60), 20.0, True),
            ("m1", at(60), at(120), 60.0, True),
            ("m1", at(120), at(180), 20.0, False),
            ("m1", at(240), at(300), 5.0, True),
            ("m2", at(120), at(150), 10.0, False),
        ]
        assert run(store.state_run_rows("z", S.DOWN, at(0), at(300))) == []

    @pytest.mark.parametrize(
        ("start", "end"),
        [
            (datetime(2026, 1, 12), at(60)),  # naive
            (at(0), datetime(2026, 1, 12, 0, 1)),
            (at(60), at(0)),  # end before start
        ],
    )
    def test_bad_run_windows_are_refused(
        self, store: Store, run: Run, start: datetime, end: datetime
    ) -> None:
        with pytest.raises(ValueError, match=r"aware|before"):
            run(store.state_runs("a", S.DOWN, start, end))
        with pytest.raises(ValueError, match=r"aware|before"):
            run(store.state_run_rows("a", S.DOWN, start, end))

    # --- isolation, empty results, time zones ---------------------------------------------

    def test_factories_are_isolated(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        run(store.write_description(_description("a", "m1", 0)))
        run(store.write_status(_status("a", GW, "online", "connected", 0)))
        b_sample = make_sample("m1", 60, 60, {S.IDLE: 60}, counters={"good": 100})
        run(store.write_samples("b", GW, SESSION, [b_sample]))
        run(store.write_description(_description("b", "m9", 0)))
        assert run(store.factories()) == ["a", "b"]
        assert [d.machine for d in run(store.machines("b"))] == ["m9"]
        assert run(store.gateway_status("b")) == []
        assert {k: v.sample for k, v in run(store.latest_samples("b")).items()} == {"m1": b_sample}
        windows = run(store.state_seconds("b", None, at(0), at(240)))
        assert [w.machine for w in windows] == ["m1", "m9"]
        assert_window(windows[0], "m1", 0, 240, 180, idle=60)
        counts = run(store.counter_totals("b", None, at(0), at(240)))
        assert totals(counts) == [("m1", at(0), at(240), {"good": 100}), ("m9", at(0), at(240), {})]

    def test_gap_reports_are_confined_to_their_factory(self, store: Store, run: Run) -> None:
        run(store.write_gaps("a", GW, 10, 30.0, at(100)))
        run(store.write_gaps("b", GW, 2, 1.0, at(110)))
        assert run(store.gateway_gaps("a")) == {GW: GapReport(10, 30.0, at(100))}
        assert run(store.gateway_gaps("b")) == {GW: GapReport(2, 1.0, at(110))}
        assert run(store.factories()) == ["a", "b"]  # a gap report is enough to know one

    def test_an_unknown_factory_has_empty_results(self, store: Store, run: Run) -> None:
        assert run(store.factories()) == []
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        assert run(store.machines("z")) == []
        assert run(store.gateway_status("z")) == []
        assert run(store.latest_samples("z")) == {}
        assert run(store.gateway_gaps("z")) == {}
        assert run(store.live("z")) == LiveRead([], {}, {})
        assert run(store.state_seconds("z", None, at(0), at(240), 60)) == []
        assert run(store.counter_totals("z", None, at(0), at(240), 60)) == []
        assert run(store.state_seconds("a", "m1", at(10), at(10))) == []  # an empty window

    def test_offsets_in_utc_out(self, store: Store, run: Run) -> None:
        run(store.write_samples("a", GW, SESSION, SCENARIO))
        jst = run(store.state_seconds("a", "m1", at(40).astimezone(JST), at(200).astimezone(JST)))
        utc = run(store.state_seconds("a", "m1", at(40), at(200)))
        assert jst == utc
        assert jst[0].start.utcoffset() == timedelta(0)
        counts = run(store.counter_totals("a", "m1", at(0).astimezone(JST), at(240), 120))
        assert [w.start.utcoffset() for w in counts] == [timedelta(0)] * 2

    @pytest.mark.parametrize(
        ("start", "end", "bucket_s"),
        [
            (datetime(2026, 1, 12), at(60), None),  # naive
            (at(0), datetime(2026, 1, 12, 0, 1), None),
            (at(60), at(0), None),  # end before start
            (at(0), at(60), 0.0),
            (at(0), at(60), -5.0),
        ],
    )
    def test_bad_windows_are_refused(
        self, store: Store, run: Run, start: datetime, end: datetime, bucket_s: float | None
    ) -> None:
        with pytest.raises(ValueError, match=r"aware|before|bucket_s"):
            run(store.state_seconds("a", "m1", start, end, bucket_s))
        with pytest.raises(ValueError, match=r"aware|before|bucket_s"):
            run(store.counter_totals("a", None, start, end, bucket_s))

    def test_a_naive_receive_time_is_refused(self, store: Store, run: Run) -> None:
        naive = datetime(2026, 1, 12)
        with pytest.raises(ValueError, match="aware"):
            run(store.write_samples("a", GW, SESSION, SCENARIO, received_at=naive))

    def test_a_naive_gap_report_time_is_refused(self, store: Store, run: Run) -> None:
        with pytest.raises(ValueError, match="aware"):
            run(store.write_gaps("a", GW, 1, 0.0, datetime(2026, 1, 12)))
        assert run(store.gateway_gaps("a")) == {}

    # --- property: no double counting ----------------------------------------------------

    # One store per test, a fresh factory per example. differing_executors: each subclass
    # (one per store kind) runs this same test, which is what the suite is for.
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(data=st.data())
    def test_totals_equal_the_durations_whatever_the_replays(
        self, store: Store, run: Run, data: st.DataObject
    ) -> None:
        factory = f"prop-{uuid4().hex[:12]}"  # one store, a fresh factory per example
        samples = data.draw(_timelines())
        # Every sample at least once, some again, in random batches in random order.
        again = data.draw(st.lists(st.sampled_from(range(len(samples))), max_size=len(samples)))
        order = data.draw(st.permutations([*range(len(samples)), *again]))
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
        for batch in (order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)):
            chosen = sorted({samples[i].seq: samples[i] for i in batch}.items())
            run(store.write_samples(factory, GW, SESSION, [s for _, s in chosen]))

        first = min(s.ts - timedelta(seconds=s.interval_s) for s in samples)
        last = max(s.ts for s in samples)
        for w in run(store.state_seconds(factory, None, first, last)):
            mine = [s for s in samples if s.machine == w.machine]
            expected = {state: sum(s.durations_s.get(state, 0.0) for s in mine) for state in S}
            assert dict(w.seconds) == pytest.approx(expected, abs=1e-6)
            covered = sum(s.interval_s for s in mine)
            assert w.no_data_s == pytest.approx(w.length_s - covered, abs=1e-6)

        start = first + timedelta(seconds=data.draw(st.integers(-20, 200)) / 2)
        end = start + timedelta(seconds=data.draw(st.integers(1, 800)) / 2)
        bucket_s = data.draw(st.none() | st.integers(1, 200).map(lambda n: n / 2))
        got = run(store.state_seconds(factory, None, start, end, bucket_s))
        assert sorted({w.machine for w in got}) == sorted(
            {s.machine for s in samples if s.ts > start and s.ts - _iv(s) < end}
        )
        for w in got:
            model = _prorated([s for s in samples if s.machine == w.machine], w.start, w.end)
            assert dict(w.seconds) == pytest.approx(model, abs=1e-6)


def _iv(sample: Sample) -> timedelta:
    return timedelta(seconds=sample.interval_s)


def _prorated(samples: list[Sample], start: datetime, end: datetime) -> dict[MachineState, float]:
    """The reference proration: each sample's durations times its overlapping share."""
    result = dict.fromkeys(S, 0.0)
    for s in samples:
        overlap = (min(s.ts, end) - max(s.ts - _iv(s), start)).total_seconds()
        for state, value in s.durations_s.items():
            result[state] += value * max(0.0, overlap) / s.interval_s
    return result


@st.composite
def _timelines(draw: st.DrawFn) -> list[Sample]:
    """Tiling samples of one to three machines, with gaps; durations in half seconds, so
    that they sum to interval_s exactly. Sequence numbers follow time across machines."""
    pieces: list[tuple[datetime, str, float, dict[MachineState, float]]] = []
    for machine in draw(st.sets(st.sampled_from(["m1", "m2", "m3"]), min_size=1)):
        t = draw(st.integers(0, 40))
        for _ in range(draw(st.integers(1, 8))):
            t += draw(st.sampled_from([0, 0, 0, 7, 30]))  # gap, half seconds
            length = draw(st.integers(1, 240))
            marks = sorted(draw(st.lists(st.integers(0, length), max_size=3)))
            durations: dict[MachineState, float] = {}
            for a, b in zip([0, *marks], [*marks, length], strict=True):
                state = draw(st.sampled_from(list(S)))
                durations[state] = durations.get(state, 0.0) + (b - a) / 2
            t += length
            pieces.append((at(t / 2), machine, length / 2, durations))
    pieces.sort(key=lambda p: (p[0], p[1]))
    return [
        Sample(machine=m, seq=i, ts=ts, interval_s=iv, state=next(iter(d)), durations_s=d)
        for i, (ts, m, iv, d) in enumerate(pieces)
    ]
