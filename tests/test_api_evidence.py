"""The capacity API never lies (issue 14): no capacity without evidence, stops told apart
from breakdowns and repairs learnt per machine, bookings that reduce availability, cover
for the work a machine will miss, and figures whose age is measured when they are served."""

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apikit import (
    GATEWAY,
    Api,
    Clocks,
    Region,
    build_region,
    copy_region,
    get_json,
    online,
    running_api,
)

from kyoso.api.bookings import BookingStore
from kyoso.api.service import CapacityService
from kyoso.capacity.confidence import confidence
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MachineState, Sample
from kyoso.store import SqliteStore

DAYS = 9
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", DAYS)


@pytest.fixture
def api(region: Region, tmp_path: Path) -> Iterator[Api]:
    with running_api(region, tmp_path) as running:
        yield running


def _ending_with(
    region: Region,
    tmp_path: Path,
    state: MachineState,
    durations: list[dict[MachineState, float]],
) -> Region:
    """A copy of the region whose cnc-02 (okada-machining) ends with samples of ``state``
    and these durations (5 min each, oldest first) in place of its last ones."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    copied = copy_region(region, tmp_path)

    async def write() -> None:
        async with SqliteStore(copied.path) as store:
            latest = (await store.latest_samples("okada-machining"))["cnc-02"].sample
            last = len(durations) - 1
            samples = [
                latest.model_copy(
                    update={
                        "ts": latest.ts - timedelta(seconds=300 * (last - k)),
                        "seq": latest.seq - (last - k),
                        "state": state,
                        "durations_s": spent,
                        "alarm": 1021 if state is MachineState.DOWN else None,
                    }
                )
                for k, spent in enumerate(durations)
            ]
            await store.write_samples("okada-machining", GATEWAY, "history", samples)

    asyncio.run(write())
    return copied


def test_a_machine_whose_device_does_not_answer_is_withdrawn_as_unreadable(
    region: Region, tmp_path: Path
) -> None:
    """The gateway keeps publishing, but every read of cnc-02 failed for the last 10 min:
    its state is unknown, and its capacity is withdrawn (reason unreadable), not offered."""
    unknown = {MachineState.UNKNOWN: 300.0}
    copied = _ending_with(region, tmp_path / "region", MachineState.UNKNOWN, [unknown] * 2)
    with running_api(copied, tmp_path) as api:
        body = get_json(api, "/v1/factories/okada-machining/capacity", horizon_h=168)
        rows = {r["machine"]: r for r in body["machines"]}
        assert rows["cnc-02"]["available"] == 0
        assert rows["cnc-02"]["confidence"] == 0
        assert "unreadable" in rows["cnc-02"]["reasons"]
        assert rows["cnc-03"]["available"] > 0  # its neighbour is read as before
        assert "unreadable" not in rows["cnc-03"]["reasons"]


def test_a_machine_without_enough_history_offers_nothing(region: Region, tmp_path: Path) -> None:
    """Commissioned an hour ago: an hour of history shows nothing of its load, so it offers
    nothing (insufficient_history), and a search never says it covers."""
    copied = copy_region(region, tmp_path)

    async def commission() -> None:
        async with SqliteStore(copied.path) as store:
            [described] = [
                d for d in await store.machines("okada-machining") if d.machine == "cnc-02"
            ]
            await store.write_description(described.model_copy(update={"machine": "new-01"}))
            hour = [
                Sample(
                    machine="new-01",
                    seq=k,
                    ts=region.end - timedelta(seconds=300 * k),
                    interval_s=300.0,
                    state=MachineState.IDLE,
                    durations_s={MachineState.IDLE: 300.0},
                )
                for k in range(12)
            ]
            await store.write_samples("okada-machining", GATEWAY, "new", hour)

    asyncio.run(commission())
    with running_api(copied, tmp_path) as api:
        body = get_json(api, "/v1/factories/okada-machining/capacity", horizon_h=168)
        rows = {r["machine"]: r for r in body["machines"]}
        assert rows["new-01"]["total"] > 0
        assert rows["new-01"]["available"] == 0
        assert rows["new-01"]["confidence"] == 0
        assert "insufficient_history" in rows["new-01"]["reasons"]
        assert rows["cnc-02"]["available"] > 0


def test_stale_data_withdraws_capacity_with_reason_offline(region: Region, tmp_path: Path) -> None:
    later = region.end + timedelta(minutes=10)  # the last sample is 10 minutes old
    with running_api(region, tmp_path, now=later) as api:
        body = get_json(api, "/v1/factories/mori-plastics/capacity")
        assert body["offline"] is True
        assert body["data_age_s"] == pytest.approx(600, abs=1)
        assert all(r["available"] == 0 and "offline" in r["reasons"] for r in body["machines"])
        factories = get_json(api, "/v1/factories", "platform")
        assert all(f["offline"] for f in factories)


def test_bookings_consume_the_expected_load_and_are_checked(api: Api) -> None:
    path = "/v1/factories/sato-sheetmetal/machines/laser-01/bookings"
    capacity_path = "/v1/factories/sato-sheetmetal/capacity"
    scope = "factory:sato-sheetmetal"
    headers = api.headers(scope)

    def laser() -> dict[str, Any]:
        capacity = get_json(api, capacity_path, scope, horizon_h=48)
        return dict(next(r for r in capacity["machines"] if r["machine"] == "laser-01"))

    before = laser()
    as_of = api.service.now()
    window = {"start": as_of.isoformat(), "end": (as_of + timedelta(days=2)).isoformat()}
    six = {"bookings": [{**window, "hours": 6}]}
    # Two writers never overwrite each other unseen: If-Match with the current ETag.
    assert api.client.put(path, json=six, headers=headers).status_code == 428
    stale = {**headers, "If-Match": '"0000"'}
    assert api.client.put(path, json=six, headers=stale).status_code == 412
    etag = api.client.get(path, headers=headers).headers["etag"]
    put = api.client.put(path, json=six, headers={**headers, "If-Match": etag})
    assert put.status_code == 200, put.text
    after = laser()
    # Six booked hours are work the history expects anyway (more than six hours of it in
    # two days): they consume the expected load, and never lower it.
    assert before["committed"] > 6
    assert after["reasons"][:2] == ["booked", "forecast:hour_of_week"]
    assert after["committed"] == pytest.approx(before["committed"], abs=1e-3)
    assert get_json(api, path, scope)["declared"] is True
    # Hours booked beyond the expected load (half of what was available) are committed,
    # and taken from what was available.
    extra = round(before["available"] / 2, 2)
    assert extra > 1
    more = {"bookings": [{**window, "hours": round(before["committed"] + extra, 2)}]}
    assert api.client.put(path, json=more, headers={**headers, "If-Match": "*"}).status_code == 200
    kept = laser()
    assert kept["committed"] == pytest.approx(before["committed"] + extra, abs=0.05)
    assert kept["available"] == pytest.approx(before["available"] - extra, abs=0.05)
    # The old ETag is spent: the bookings changed.
    assert api.client.put(path, json=six, headers={**headers, "If-Match": etag}).status_code == 412
    anyway = {**headers, "If-Match": "*"}
    saturday = as_of + timedelta(days=(5 - as_of.weekday()) % 7 or 7)
    weekend = {"start": saturday.isoformat(), "end": (saturday + timedelta(hours=40)).isoformat()}
    past = {
        "start": (as_of - timedelta(days=3)).isoformat(),
        "end": (as_of - timedelta(days=2)).isoformat(),
    }
    for refused, code in [
        ({"bookings": [{**past, "hours": 1}]}, 422),  # over before it is booked
        ({"bookings": [{**weekend, "hours": 5}]}, 422),  # no planned time (a day shift)
        ({"bookings": [{**window, "hours": 500}]}, 409),  # more than two days can give
    ]:
        answer = api.client.put(path, json=refused, headers=anyway)
        assert answer.status_code == code, answer.text
    conflict = api.client.put(path, json={"bookings": [{**window, "hours": 500}]}, headers=anyway)
    assert "h planned and" in conflict.json()["detail"]
    assert laser()["committed"] == kept["committed"]  # nothing refused was kept
    assert api.client.delete(path, headers=headers).status_code == 204
    assert laser()["reasons"][0] == "forecast:hour_of_week"


def test_a_machine_down_now_is_unattainable_until_its_expected_repair(
    api: Api, region: Region
) -> None:
    for factory, sim in region.simulations.items():
        for machine, model in sim.models.items():
            segment = model.segment_at(region.end.timestamp() - 1)
            if segment.state is MachineState.DOWN:
                body = get_json(api, f"/v1/factories/{factory}/capacity", horizon_h=24)
                row = next(r for r in body["machines"] if r["machine"] == machine)
                # Down for 5 min or more by the end: a breakdown; less: a minor stop.
                lasted = region.end.timestamp() - segment.start
                assert ("down" if lasted >= 300 else "minor_stop") in row["reasons"], lasted
                return
    pytest.fail("no machine of the region is down at the end of its history")


def _stopped(region: Region, tmp_path: Path, down_s: list[float]) -> dict[str, Any]:
    """cnc-02's capacity over 24 h after its last samples (5 min each, oldest first) ended
    with these down seconds (the rest of each running)."""
    spans = [{MachineState.RUNNING: 300.0 - d, MachineState.DOWN: d} for d in down_s]
    copied = _ending_with(region, tmp_path, MachineState.DOWN, spans)
    with running_api(copied, tmp_path / "api") as api:
        body = get_json(api, "/v1/factories/okada-machining/capacity", horizon_h=24)
    return dict(next(r for r in body["machines"] if r["machine"] == "cnc-02"))


def test_a_minor_stop_is_not_a_breakdown(region: Region, tmp_path: Path) -> None:
    """Down for the last 90 s: a minor stop, unattainable only for the rest of the 5 min
    allowance. Down for the last 10 min: a breakdown, unattainable until the repair."""
    minor = _stopped(region, tmp_path / "minor", [90.0])
    broken = _stopped(region, tmp_path / "broken", [300.0, 300.0])
    assert "minor_stop" in minor["reasons"]
    assert "down" not in minor["reasons"]
    assert "down" in broken["reasons"]
    # The breakdown loses up to the 2 h repair more than the minor stop's few minutes.
    assert broken["unattainable"] - minor["unattainable"] > 1.0
    assert minor["available"] > broken["available"]


def test_cover_asks_for_the_work_a_machine_will_miss(region: Region, tmp_path: Path) -> None:
    """Only for a machine that cannot work: broken down, its expected work until the
    repair; a working one, 409 unless the caller names how long it will be out."""
    broken = tmp_path / "broken"
    down = {MachineState.DOWN: 300.0}
    copied = _ending_with(region, broken, MachineState.DOWN, [down] * 2)
    with running_api(copied, broken) as api:
        path = "/v1/search/cover"
        working = {"factory": "okada-machining", "machine": "cnc-03"}
        refused = api.client.get(path, params=working, headers=api.headers("platform"))
        assert refused.status_code == 409
        week = get_json(api, path, "platform", **working, for_h=168)
        day = get_json(api, path, "platform", **working, for_h=24)
        assert day[0]["hours"] < week[0]["hours"]
        [lost] = get_json(api, path, "platform", factory="okada-machining", machine="cnc-02")
        # Its expected work over the 2 h repair: at most the two hours themselves.
        assert 0 < lost["hours"] <= 2.0
        assert lost["process"] == "cnc_milling_3axis"
        assert all(c["factory"] != "okada-machining" for c in lost["candidates"])


def test_ages_are_measured_when_the_answer_is_served(region: Region, tmp_path: Path) -> None:
    """A cached answer served 4 s after it was computed says its data is 4 s older, with
    HTTP Age 4 (a client cache keeps it 4 s less), and the same figures (same ETag)."""
    clocks = Clocks(region.end + timedelta(seconds=30))
    rules = CapacityRules(cache_ttl_s=5, view_ttl_s=5)
    with running_api(region, tmp_path, rules=rules, clocks=clocks) as api:
        paths = ["/v1/factories/okada-machining/capacity", "/v1/capacity", "/v1/factories"]
        first = {p: api.client.get(p, headers=api.headers("admin")) for p in paths}
        clocks.advance(4)
        later = {p: api.client.get(p, headers=api.headers("admin")) for p in paths}
        for path in paths:
            a, b = first[path], later[path]
            assert (a.headers["age"], b.headers["age"]) == ("0", "4"), path
            assert a.headers["etag"] == b.headers["etag"], path
            assert _ages(b.json()) == [age + 4 for age in _ages(a.json())], path
            assert _ages(a.json()), path
            assert min(_ages(a.json())) >= 30, path
        clocks.advance(2)  # 6 s: older than the bound, computed again
        again = api.client.get(paths[0], headers=api.headers("admin"))
        assert again.headers["age"] == "0"
        assert again.json()["as_of"] != first[paths[0]].json()["as_of"]


def _ages(node: Any) -> list[float]:
    """Every data_age_s of a JSON answer, depth first."""
    if isinstance(node, dict):
        own = [node["data_age_s"]] if node.get("data_age_s") is not None else []
        return own + [a for k, v in node.items() if k != "data_age_s" for a in _ages(v)]
    if isinstance(node, list):
        return [a for v in node for a in _ages(v)]
    return []


def _with_breakdowns(region: Region, workdir: Path, breakdowns: int) -> Region:
    """A copy of the region with a machine ``new-01`` (described as okada's cnc-02): 9 days
    of 5-min samples running, ``breakdowns`` 20-min breakdowns spread over them, and down
    for the last 10 minutes."""
    workdir.mkdir(parents=True, exist_ok=True)
    copied = copy_region(region, workdir)
    count = int((region.end - region.origin).total_seconds() // 300)
    broken = {count // (breakdowns + 1) * (k + 1) + j for k in range(breakdowns) for j in range(4)}
    broken |= {count - 2, count - 1}

    def sample(k: int) -> Sample:
        state = MachineState.DOWN if k in broken else MachineState.RUNNING
        return Sample(
            machine="new-01",
            seq=k,
            ts=region.origin + timedelta(seconds=300 * (k + 1)),
            interval_s=300.0,
            state=state,
            durations_s={state: 300.0},
        )

    async def write() -> None:
        async with SqliteStore(copied.path) as store:
            machines = await store.machines("okada-machining")
            [described] = [d for d in machines if d.machine == "cnc-02"]
            await store.write_description(described.model_copy(update={"machine": "new-01"}))
            samples = [sample(k) for k in range(count)]
            await store.write_samples("okada-machining", GATEWAY, "new", samples)

    asyncio.run(write())
    return copied


def test_the_repair_time_is_learnt_from_the_machines_own_breakdowns(
    region: Region, tmp_path: Path
) -> None:
    """Down for 10 min: a machine whose 20 breakdowns took 20 min each is expected back in
    (20 x 10 min + the 2 h prior) / 21, about 15 min; one without breakdowns on record in
    the 2 h prior. The cover asks for that much work, no more."""
    rows, covers = {}, {}
    for count in (0, 20):
        workdir = tmp_path / str(count)
        copied = _with_breakdowns(region, workdir / "region", count)
        with running_api(copied, workdir) as api:
            body = get_json(api, "/v1/factories/okada-machining/capacity", horizon_h=24)
            rows[count] = next(r for r in body["machines"] if r["machine"] == "new-01")
            params = {"factory": "okada-machining", "machine": "new-01"}
            covers[count] = get_json(api, "/v1/search/cover", "platform", **params)[0]["hours"]
    assert all("down" in row["reasons"] for row in rows.values())
    expected_h = (20 * 600 + 7200) / 21 / 3600
    assert covers[20] <= expected_h + 1e-3
    assert covers[0] > expected_h + 1  # the 2 h prior
    # The planned part of a 2 h repair lost without a record (1.5 h here), a quarter hour
    # with one, plus its expected losses (its breakdowns took 3 % of its time) in the rest.
    assert rows[0]["unattainable"] - rows[20]["unattainable"] > 0.5


def test_a_lost_gateway_is_shown_since_it_was_last_heard(region: Region, tmp_path: Path) -> None:
    """Its last will carries its connect time (the region's start); the gateway list says
    when it was last heard of: its newest sample's arrival."""
    copied = copy_region(region, tmp_path)

    async def lose() -> datetime:
        async with SqliteStore(copied.path) as store:
            await store.write_status(online("okada-machining", region.origin, "offline"))
            latest = await store.latest_samples("okada-machining")
            return max(s.received_at for s in latest.values())

    heard = asyncio.run(lose())
    with running_api(copied, tmp_path) as api:
        [gateway] = get_json(api, "/v1/factories/okada-machining/gateways")
    assert gateway["status"] == "offline"
    assert datetime.fromisoformat(gateway["since"]) == heard > region.origin


def test_the_gateway_view_shows_the_gaps_the_ingest_reported(
    region: Region, tmp_path: Path
) -> None:
    """Samples no ingest worker has taken are seen where the gateway is: how many, and how
    long the oldest hole has been open, aged to when the answer is sent (a report is
    written only when the gaps change)."""
    copied = copy_region(region, tmp_path)
    reported = region.end - timedelta(seconds=60)  # the API's clock: 30 s after the end

    async def report() -> None:
        async with SqliteStore(copied.path) as store:
            await store.write_gaps("okada-machining", GATEWAY, 12, 45.0, reported)
            await store.write_gaps("mori-plastics", GATEWAY, 0, 0.0, reported)  # closed

    asyncio.run(report())
    clocks = Clocks(region.end + timedelta(seconds=30))
    path = "/v1/factories/okada-machining/gateways"
    with running_api(copied, tmp_path, clocks=clocks) as api:
        first = api.client.get(path, headers=api.headers("admin"))
        [gapped] = first.json()
        [closed] = get_json(api, "/v1/factories/mori-plastics/gateways")
        [unreported] = get_json(api, "/v1/factories/sato-sheetmetal/gateways")
        schema = api.client.get("/openapi.json").json()["components"]["schemas"]["GatewayOut"]
        clocks.advance(60)  # the view is computed again: the hole has aged, nothing changed
        tagged = api.headers("admin") | {"If-None-Match": first.headers["ETag"]}
        assert api.client.get(path, headers=tagged).status_code == 304
        [aged] = get_json(api, path)
    assert (gapped["gap_samples"], gapped["gap_oldest_s"]) == (12, pytest.approx(45 + 90))
    assert aged["gap_oldest_s"] == pytest.approx(45 + 90 + 60)
    assert (closed["gap_samples"], closed["gap_oldest_s"]) == (0, None)
    assert (unreported["gap_samples"], unreported["gap_oldest_s"]) == (0, None)
    for field in ("gap_samples", "gap_oldest_s"):
        assert "ingest" in schema["properties"][field]["description"]


def test_confidence_is_the_calibrated_accuracy_and_coverage_is_apart(
    api: Api, region: Region
) -> None:
    body = get_json(api, "/v1/factories/okada-machining/capacity", horizon_h=24)
    for row in [*body["machines"], *body["by_process"]]:
        assert 0 < row["confidence"] < 1
        assert 0 < row["history_coverage"] <= 1
    # The backtest's accuracy for as much history as the machine has shown.
    end = region.end  # the service's clock is 30 s later: history to the whole hour
    start = end - CapacityRules().lookback

    async def observed() -> float:
        async with SqliteStore(region.path) as store:
            [window] = await store.state_seconds("okada-machining", "cnc-01", start, end)
        working = (MachineState.RUNNING, MachineState.SETUP, MachineState.DOWN, MachineState.IDLE)
        return sum(window.seconds[state] for state in working)

    [row] = [r for r in body["machines"] if r["machine"] == "cnc-01"]
    assert row["confidence"] == pytest.approx(confidence(asyncio.run(observed())), abs=1e-4)


@pytest.mark.parametrize("hours", [0.5, 3.0, 30.0])
def test_a_stop_is_timed_from_its_start_as_a_day_of_runs_tells(
    region: Region, tmp_path: Path, hours: float
) -> None:
    """The live view reads the last hours of down runs first and a day only for a stop that
    may have begun before them: the time down is what one read of the day tells, a stop of
    hours counted whole and one longer than a day counted as a day (as ever)."""
    down = {MachineState.DOWN: 300.0}
    copied = _ending_with(region, tmp_path / "region", MachineState.DOWN, [down] * int(hours * 12))

    async def observed() -> tuple[float | None, float]:
        async with SqliteStore(copied.path) as store:
            service = CapacityService(
                store, BookingStore(tmp_path / "bookings.sqlite3"), CapacityRules(),
                clock=(region.end + timedelta(seconds=30)).timestamp,
            )  # fmt: skip
            view = await service.view("okada-machining")
            end = max(view.as_of, region.end)
            runs = await store.state_runs("okada-machining", MachineState.DOWN, end - DAY, end)
            [run] = [r for r in runs if r.machine == "cnc-02" and r.ongoing and r.end == region.end]
            service.bookings.close()
            return view.machines["cnc-02"].down_for_s, (run.end - run.start).total_seconds()

    down_for_s, whole_day_s = asyncio.run(observed())
    assert down_for_s == whole_day_s
    assert down_for_s == min(hours * 3600, DAY.total_seconds())
