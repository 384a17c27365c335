"""A factory's pictures (issue 18): each machine's states through one local day, and
utilization shift by shift, from samples written into a real store, at a fixed clock.

The factory works in Tokyo: an early shift 06:00-14:00 with a break 10:00-10:15, a late one
14:00-22:00, every day. The clock stands at 2026-12-06 17:12 in Tokyo (08:12Z), in the late
shift; that day began at 2026-12-05T15:00Z. cnc-01 and cnc-02 are described; their samples
are written by hand, so every band and every second is known.
"""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from apikit import GATEWAY, Api, Region, build_region, get_json, running_api
from simfactory import machine

from kyoso.api.timeline_schemas import TimelineState
from kyoso.contract import MachineState, Sample
from kyoso.simulators.config import FactoryConfig
from kyoso.store import SqliteStore

FACTORY = "kanto-press"
NOW = datetime(2026, 12, 6, 8, 12, tzinfo=UTC)
TEN_MIN = timedelta(minutes=10)
S = MachineState


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _samples(name: str, state: S, first_ts: str, last_ts: str) -> list[Sample]:
    """Ten-minute samples of one state, ending at ``first_ts`` to ``last_ts``."""
    found, ts = [], _at(first_ts)
    while ts <= _at(last_ts):
        found.append(Sample(machine=name, seq=0, ts=ts, interval_s=600.0, state=state,
                            durations_s={state: 600.0}))  # fmt: skip
        ts += TEN_MIN
    return found


# cnc-01: running across the day's start, a gap, idle, down, one sample that went from down
# to running, then running until after the clock (a gateway's clock ahead).
CNC_01 = [
    *_samples("cnc-01", S.RUNNING, "2026-12-05T14:45Z", "2026-12-05T15:15Z"),
    *_samples("cnc-01", S.IDLE, "2026-12-05T16:10Z", "2026-12-05T17:00Z"),
    *_samples("cnc-01", S.DOWN, "2026-12-05T17:10Z", "2026-12-05T17:30Z"),
    Sample(
        machine="cnc-01",
        seq=0,
        ts=_at("2026-12-05T17:40Z"),
        interval_s=600.0,
        state=S.RUNNING,
        durations_s={S.DOWN: 120.0, S.RUNNING: 480.0},
    ),
    *_samples("cnc-01", S.RUNNING, "2026-12-05T17:50Z", "2026-12-06T08:20Z"),
]
# cnc-02: an hour running and an hour idle in today's late shift, then one sample of idle,
# running and down (where in it it ran, nobody knows), nothing else.
CNC_02 = [
    *_samples("cnc-02", S.RUNNING, "2026-12-06T05:10Z", "2026-12-06T06:00Z"),
    *_samples("cnc-02", S.IDLE, "2026-12-06T06:10Z", "2026-12-06T07:00Z"),
    Sample(
        machine="cnc-02",
        seq=0,
        ts=_at("2026-12-06T07:10Z"),
        interval_s=600.0,
        state=S.DOWN,
        durations_s={S.IDLE: 200.0, S.RUNNING: 200.0, S.DOWN: 200.0},
    ),
]


def _config() -> FactoryConfig:
    machines = [machine(m, "plc", unit, "ABCD") for unit, m in enumerate(("cnc-01", "cnc-02"), 1)]
    shifts = [
        {"name": "early", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
         "start": "06:00", "end": "14:00", "breaks": [{"start": "10:00", "end": "10:15"}]},
        {"name": "late", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
         "start": "14:00", "end": "22:00"},
    ]  # fmt: skip
    return FactoryConfig.model_validate(
        {
            "factory": FACTORY,
            "name": "Kanto Press",
            "seed": 1,
            "calendars": {"days": {"timezone": "Asia/Tokyo", "shifts": shifts}},
            "modbus_servers": {"plc": {"port": 0}},
            "machines": machines,
        }
    )


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    origin = datetime(2026, 11, 1, tzinfo=UTC)
    built = build_region(
        tmp_path_factory.mktemp("region") / "store.sqlite3", 0, configs=[_config()], origin=origin
    )

    async def write() -> None:
        async with SqliteStore(built.path) as store:
            samples = [s.model_copy(update={"seq": k}) for k, s in enumerate(CNC_01 + CNC_02)]
            assert await store.write_samples(FACTORY, GATEWAY, "hand", samples) == []

    asyncio.run(write())
    return built


@pytest.fixture(scope="module")
def api(region: Region, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(region, tmp_path_factory.mktemp("api"), now=NOW) as running:
        yield running


def _runs(body: dict[str, Any], name: str) -> list[tuple[TimelineState, str, str]]:
    [found] = [m for m in body["machines"] if m["machine"] == name]
    return [(r["state"], r["start"], r["end"]) for r in found["runs"]]


def test_today_is_the_factorys_local_day_and_its_runs_are_what_was_written(api: Api) -> None:
    body = get_json(api, f"/v1/factories/{FACTORY}/timeline", f"factory:{FACTORY}")
    assert (body["day"], body["timezone"]) == ("2026-12-06", "Asia/Tokyo")
    assert (body["start"], body["end"]) == ("2026-12-05T15:00:00Z", "2026-12-06T15:00:00Z")
    assert body["as_of"] == "2026-12-06T08:12:00Z"
    assert [m["machine"] for m in body["machines"]] == ["cnc-01", "cnc-02"]
    assert body["machines"][0]["name"] == "cnc-01"
    # Cut at the day's start and at the clock; the gap is no_data; the sample that went from
    # down to running is split where its durations say; of the one with three states, the
    # first and the last are placed at its edges, the middle goes to the run before.
    assert _runs(body, "cnc-01") == [
        ("running", "2026-12-05T15:00:00Z", "2026-12-05T15:15:00Z"),
        ("no_data", "2026-12-05T15:15:00Z", "2026-12-05T16:00:00Z"),
        ("idle", "2026-12-05T16:00:00Z", "2026-12-05T17:00:00Z"),
        ("down", "2026-12-05T17:00:00Z", "2026-12-05T17:32:00Z"),
        ("running", "2026-12-05T17:32:00Z", "2026-12-06T08:12:00Z"),
    ]
    assert _runs(body, "cnc-02") == [
        ("no_data", "2026-12-05T15:00:00Z", "2026-12-06T05:00:00Z"),
        ("running", "2026-12-06T05:00:00Z", "2026-12-06T06:00:00Z"),
        ("idle", "2026-12-06T06:00:00Z", "2026-12-06T07:06:40Z"),
        ("down", "2026-12-06T07:06:40Z", "2026-12-06T07:10:00Z"),
        ("no_data", "2026-12-06T07:10:00Z", "2026-12-06T08:12:00Z"),
    ]
    # 06:00-10:00 and 10:15-22:00 in Tokyo: the early shift's break is not planned.
    planned = [("2026-12-05T21:00:00Z", "2026-12-06T01:00:00Z"),
               ("2026-12-06T01:15:00Z", "2026-12-06T13:00:00Z")]  # fmt: skip
    for row in body["machines"]:
        assert [(p["start"], p["end"]) for p in row["planned"]] == planned


def test_a_past_day_ends_at_its_midnight_with_the_sample_across_it(api: Api) -> None:
    """The sample ending at 15:05Z covers 14:55Z-15:05Z: its first ten minutes are the
    day's last."""
    body = get_json(api, f"/v1/factories/{FACTORY}/timeline", day="2026-12-05")
    assert (body["start"], body["end"]) == ("2026-12-04T15:00:00Z", "2026-12-05T15:00:00Z")
    assert _runs(body, "cnc-01") == [
        ("no_data", "2026-12-04T15:00:00Z", "2026-12-05T14:35:00Z"),
        ("running", "2026-12-05T14:35:00Z", "2026-12-05T15:00:00Z"),
    ]
    assert _runs(body, "cnc-02") == [
        ("no_data", "2026-12-04T15:00:00Z", "2026-12-05T15:00:00Z"),
    ]


def test_days_ahead_or_too_far_back_are_refused(api: Api) -> None:
    path = f"/v1/factories/{FACTORY}/timeline"
    headers = api.headers("admin")
    ahead = api.client.get(path, params={"day": "2026-12-07"}, headers=headers)
    assert ahead.status_code == 422
    assert ahead.headers["content-type"] == "application/problem+json"
    assert ahead.json()["errors"] == [
        {
            "loc": ["query", "day"],
            "msg": "2026-12-07 is ahead of the factory's today, 2026-12-06 (Asia/Tokyo)",
            "type": "value_error",
        }
    ]
    old = api.client.get(path, params={"day": "2026-11-04"}, headers=headers)
    assert old.status_code == 422
    assert old.json()["errors"][0]["msg"] == (
        "2026-11-04 is more than 31 days before the factory's today, 2026-12-06 (Asia/Tokyo)"
    )
    oldest = api.client.get(path, params={"day": "2026-11-05"}, headers=headers)
    assert oldest.status_code == 200
    assert {r["state"] for m in oldest.json()["machines"] for r in m["runs"]} == {"no_data"}
    malformed = api.client.get(path, params={"day": "06.12.2026"}, headers=headers)
    assert malformed.status_code == 422


def test_utilization_per_shift_is_running_over_planned_time(api: Api) -> None:
    """Two machines per shift. Today's early shift: cnc-01 ran all 8 h, cnc-02 sent nothing,
    7.75 h planned each. Today's late shift, up to 08:12Z: cnc-01 ran 3.2 h (its last sample
    ends after the clock: the part before it), cnc-02 1 h and 200 s, 3.2 h planned each. Yesterday's
    shifts: planned, nothing sent."""
    body = get_json(api, f"/v1/factories/{FACTORY}/kpis/shifts", f"factory:{FACTORY}", days=2)
    assert (body["days"], body["timezone"], body["as_of"]) == (
        2,
        "Asia/Tokyo",
        "2026-12-06T08:12:00Z",
    )
    rows = [
        (s["day"], s["shift"], s["start"], s["end"], s["ongoing"], s["machines"],
         s["planned_s"], s["running_s"], s["no_data_s"], s["availability"])
        for s in body["shifts"]
    ]  # fmt: skip
    early, late, late_so_far = 27_900, 28_800, 11_520  # planned seconds per machine
    assert rows == [
        # Nothing heard of a shift: no figure, never 0 %.
        ("2026-12-05", "early", "2026-12-04T21:00:00Z", "2026-12-05T05:00:00Z", False, 2,
         2 * early, 0.0, 2 * 28_800, None),
        ("2026-12-05", "late", "2026-12-05T05:00:00Z", "2026-12-05T13:00:00Z", False, 2,
         2 * late, 0.0, 2 * 28_800, None),
        ("2026-12-06", "early", "2026-12-05T21:00:00Z", "2026-12-06T05:00:00Z", False, 2,
         2 * early, 28_800, 28_800, round(28_800 / (2 * early), 6)),
        ("2026-12-06", "late", "2026-12-06T05:00:00Z", "2026-12-06T13:00:00Z", True, 2,
         2 * late_so_far, 11_520 + 3_800, 11_520 - 7_800, round(15_320 / 23_040, 6)),
    ]  # fmt: skip
    week = get_json(api, f"/v1/factories/{FACTORY}/kpis/shifts")
    days = ["2026-11-30", *(f"2026-12-0{d}" for d in range(1, 7))]
    assert week["days"] == 7
    assert [(s["day"], s["shift"]) for s in week["shifts"]] == [
        (day, shift) for day in days for shift in ("early", "late")
    ]


def test_the_platform_sees_neither_and_answers_are_cached(api: Api) -> None:
    for path in (f"/v1/factories/{FACTORY}/timeline", f"/v1/factories/{FACTORY}/kpis/shifts"):
        refused = api.client.get(path, headers=api.headers("platform"))
        assert refused.status_code == 403, path
        first = api.client.get(path, headers=api.headers("admin"))
        assert first.status_code == 200
        again = api.client.get(
            path, headers={**api.headers("admin"), "If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304, path


def test_the_states_are_the_contracts_and_no_data() -> None:
    assert set(get_args(TimelineState)) == {s.value for s in MachineState} | {"no_data"}


def test_an_empty_factory_day_is_no_data_through(region: Region, tmp_path: Path) -> None:
    """Just after Tokyo's midnight, today is a minute old and all of it no_data."""
    moment = datetime(2026, 12, 6, 15, 1, tzinfo=UTC)  # 00:01 on 12-07 in Tokyo
    with running_api(region, tmp_path, now=moment) as api:
        body = get_json(api, f"/v1/factories/{FACTORY}/timeline")
        assert body["day"] == "2026-12-07"
        assert _runs(body, "cnc-02") == [
            ("no_data", "2026-12-06T15:00:00Z", "2026-12-06T15:01:00Z")
        ]
