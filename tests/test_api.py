"""The capacity API against simulated factories of known ground truth: time elements, KPIs,
capacity, staleness, bookings, caching and the push channel."""

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Iterator
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
from kyoso.api.deps import figures_tag
from kyoso.api.service import CapacityService
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MachineState
from kyoso.simulators.behaviour import MachineModel
from kyoso.store import SqliteStore

DAYS = 9


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", DAYS)


@pytest.fixture
def api(region: Region, tmp_path: Path) -> Iterator[Api]:
    with running_api(region, tmp_path) as running:
        yield running


def _truth(model: MachineModel, start: datetime, end: datetime) -> dict[MachineState, float]:
    """Seconds per state in ``[start, end)`` from the model's own segments."""
    a, b = start.timestamp(), end.timestamp()
    seconds = dict.fromkeys(MachineState, 0.0)
    for segment in model.segments:
        overlap = min(b, segment.end) - max(a, segment.start)
        if overlap > 0:
            seconds[segment.state] += overlap
    return seconds


def _window(region: Region, days: float) -> tuple[datetime, datetime]:
    return region.end - timedelta(days=days), region.end


def test_time_elements_match_the_ground_truth(api: Api, region: Region) -> None:
    start, end = _window(region, 7)
    window_h = (end - start).total_seconds() / 3600
    names = {
        "apt": MachineState.RUNNING,
        "aust": MachineState.SETUP,
        "adet": MachineState.DOWN,
        "adot": MachineState.IDLE,
        "pdot": MachineState.PLANNED_STOP,
    }
    checked = 0
    for factory, sim in region.simulations.items():
        report = get_json(api, f"/v1/factories/{factory}/kpis", start=start, end=end)
        assert {m["machine"] for m in report["machines"]} == set(sim.models)
        for row in report["machines"]:
            truth = _truth(sim.models[row["machine"]], start, end)
            for element, state in names.items():
                assert abs(row["time"][element] - truth[state] / 3600) <= 0.01 * window_h
                assert row["time"][element] == pytest.approx(truth[state] / 3600, abs=1e-3)
            assert row["time"]["no_data"] == pytest.approx(0.0, abs=1e-3)
            calendar = sim.config.calendars[
                next(m.calendar for m in sim.config.machines if m.id == row["machine"])
            ]
            assert row["time"]["pbt"] == pytest.approx(
                calendar.planned_seconds(start, end) / 3600, abs=1e-4
            )
            checked += 1
    assert checked == sum(len(sim.models) for sim in region.simulations.values()) >= 18


def test_availability_and_oee_match_an_independent_computation(api: Api, region: Region) -> None:
    start, end = _window(region, 5)
    for factory, sim in region.simulations.items():
        report = get_json(api, f"/v1/factories/{factory}/kpis", start=start, end=end)
        sums = {"apt": 0.0, "pbt": 0.0, "ideal": 0.0, "good": 0.0, "produced": 0.0}
        for row in report["machines"]:
            machine = next(m for m in sim.config.machines if m.id == row["machine"])
            model = sim.models[machine.id]
            truth = _truth(model, start, end)
            pbt = sim.config.calendars[machine.calendar].planned_seconds(start, end)
            good0, reject0 = model.totals_at(start.timestamp())
            good1, reject1 = model.totals_at(end.timestamp())
            good, produced = good1 - good0, (good1 - good0) + (reject1 - reject0)
            apt = truth[MachineState.RUNNING]
            availability = apt / pbt
            effectiveness = machine.ideal_cycle_time_s * produced / apt
            oee = availability * effectiveness * (good / produced)
            kpis = row["kpis"]
            assert kpis["availability"] == pytest.approx(availability, abs=1e-4)
            # Parts are counted per sample interval; the window edges may split one part.
            assert kpis["oee"] == pytest.approx(oee, rel=0.02)
            assert kpis["quality_ratio"] == pytest.approx(good / produced, abs=0.01)
            sums["apt"] += apt
            sums["pbt"] += pbt
        total = report["total"]["kpis"]
        assert total["availability"] == pytest.approx(sums["apt"] / sums["pbt"], abs=1e-4)


def test_total_capacity_is_the_calendars_planned_time_exactly(api: Api, region: Region) -> None:
    as_of = api.service.now()
    for horizon_h in (24, 168):
        for factory, sim in region.simulations.items():
            body = get_json(api, f"/v1/factories/{factory}/capacity", horizon_h=horizon_h)
            for row in body["machines"]:
                machine = next(m for m in sim.config.machines if m.id == row["machine"])
                planned = sim.config.calendars[machine.calendar].planned_seconds(
                    as_of, as_of + timedelta(hours=horizon_h)
                )
                assert row["total"] == round(planned / 3600, 4)
                parts = row["committed"] + row["unattainable"] + row["available"]
                assert parts == pytest.approx(row["total"], abs=1e-3)
                assert row["available"] >= 0
                assert 0 < row["confidence"] <= 1
                assert row["reasons"][0] == "forecast:hour_of_week"


def test_regional_capacity_sums_the_factories_by_capability(api: Api) -> None:
    body = get_json(api, "/v1/capacity", "platform", horizon_h=48)
    by_process: dict[str, float] = {}
    for factory in body["factories"]:
        assert factory["machines"] is None  # the platform never sees machines
        for row in factory["by_process"]:
            by_process[row["process"]] = by_process.get(row["process"], 0.0) + row["available"]
    assert {r["process"]: r["available"] for r in body["by_process"]} == pytest.approx(
        by_process, abs=1e-3
    )


def test_an_offline_gateway_withdraws_its_factorys_capacity(region: Region, tmp_path: Path) -> None:
    copy = tmp_path / "store.sqlite3"
    copy.write_bytes(region.path.read_bytes())
    offline = Region(copy, region.origin, region.end, region.simulations)

    async def gateway_lost() -> None:
        async with SqliteStore(copy) as store:
            await store.write_status(online("okada-machining", region.end, "offline"))

    asyncio.run(gateway_lost())
    with running_api(offline, tmp_path) as api:
        body = get_json(api, "/v1/factories/okada-machining/capacity", horizon_h=24)
        assert body["offline"] is True
        assert all(r["available"] == 0 and "offline" in r["reasons"] for r in body["machines"])
        assert all(r["confidence"] == 0 for r in body["machines"])
        region_body = get_json(api, "/v1/capacity", "platform")
        okada = next(f for f in region_body["factories"] if f["factory"] == "okada-machining")
        assert okada["offline"] is True
        assert all(r["available"] == 0 for r in okada["by_process"])
        others = [f for f in region_body["factories"] if f["factory"] != "okada-machining"]
        assert all(
            not f["offline"] and any(r["available"] > 0 for r in f["by_process"]) for f in others
        )
        search = get_json(
            api, "/v1/search", "platform", process="cnc_turning", hours=1, within_days=2
        )
        assert all(c["available"] == 0 for c in search["candidates"])


@contextlib.asynccontextmanager
async def _service(
    region: Region, tmp_path: Path, cache_ttl_s: float, view_ttl_s: float | None = None
) -> AsyncIterator[tuple[CapacityService, SqliteStore, Clocks]]:
    """A capacity service over a copy of the region, 30 s after its end, on clocks the test
    moves."""
    clocks = Clocks(region.end + timedelta(seconds=30))
    async with SqliteStore(copy_region(region, tmp_path).path) as store:
        bookings = BookingStore(tmp_path / "bookings.sqlite3")
        try:
            yield (
                CapacityService(
                    store,
                    bookings,
                    CapacityRules(
                        cache_ttl_s=cache_ttl_s,
                        view_ttl_s=cache_ttl_s if view_ttl_s is None else view_ttl_s,
                    ),
                    clock=clocks.now,
                    monotonic=clocks.monotonic,
                ),
                store,
                clocks,
            )
        finally:
            bookings.close()


def test_figures_older_than_the_time_to_live_are_computed_again_before_they_are_served(
    region: Region, tmp_path: Path
) -> None:
    """No answer carries figures older than cache_ttl_s: the request that finds them older
    waits for them to be computed again (the store changed meanwhile: the gateway went
    offline), rather than getting the old ones while a refresh runs behind it."""
    horizon = timedelta(hours=24)

    async def scenario() -> None:
        async with _service(region, tmp_path, cache_ttl_s=5) as (service, store, clocks):
            first = await service.capacity("okada-machining", horizon)
            assert not first.offline
            await store.write_status(online("okada-machining", clocks.wall, "offline"))
            clocks.ticks = 4.9
            assert await service.capacity("okada-machining", horizon) is first  # 4.9 s old
            clocks.ticks, clocks.wall = 5.0, clocks.wall + timedelta(seconds=5)
            second = await service.capacity("okada-machining", horizon)
            assert second is not first
            assert second.offline
            assert second.as_of == clocks.wall
            assert service.cache_counts()["views"]["expired"] == 1

    asyncio.run(scenario())


def test_a_state_change_reaches_the_capacity_within_the_views_time_to_live(
    region: Region, tmp_path: Path
) -> None:
    """The live view is read again after view_ttl_s (1 s); capacity figures are computed
    again as soon as its evidence changes (here a machine broken down), not only when
    cache_ttl_s (5 s) is over, and are kept while nothing but time has changed."""
    horizon = timedelta(hours=24)

    async def scenario() -> None:
        async with _service(region, tmp_path, cache_ttl_s=5, view_ttl_s=1) as (
            service,
            store,
            clocks,
        ):
            first = await service.capacity("okada-machining", horizon)
            clocks.ticks = 1.5  # a new view, the same evidence
            assert await service.capacity("okada-machining", horizon) is first
            latest = (await store.latest_samples("okada-machining"))["cnc-02"].sample
            down = latest.model_copy(
                update={
                    "seq": latest.seq + 1,
                    "ts": latest.ts + timedelta(seconds=300),
                    "state": MachineState.DOWN,
                    "durations_s": {MachineState.DOWN: 300.0},
                }
            )
            await store.write_samples("okada-machining", GATEWAY, "history", [down])
            clocks.ticks = 3.0  # within cache_ttl_s of the first figures
            second = await service.capacity("okada-machining", horizon)
            assert second is not first
            [row] = [m for m in second.machines if m.machine == "cnc-02"]
            assert "down" in row.figures.reasons

    asyncio.run(scenario())


def test_capacity_and_the_factory_list_tell_of_the_same_moment(
    region: Region, tmp_path: Path
) -> None:
    """The factory list said offline while the capacity still offered hours computed from
    an older view: capacity is now computed from the view the factory list shows."""
    horizon = timedelta(hours=24)

    async def scenario() -> None:
        async with _service(region, tmp_path, cache_ttl_s=5) as (service, store, clocks):
            first_view = await service.view("okada-machining")  # t = 0
            clocks.ticks = 3.0
            first = await service.capacity("okada-machining", horizon)  # from that view
            await store.write_status(online("okada-machining", clocks.wall, "offline"))
            clocks.ticks, clocks.wall = 5.5, clocks.wall + timedelta(seconds=5.5)
            view = await service.view("okada-machining")  # the list's view: offline now
            assert view.offline
            assert view is not first_view
            now = await service.capacity("okada-machining", horizon)  # its entry is 2.5 s old
            assert now is not first
            assert now.offline
            assert now.as_of == view.as_of

    asyncio.run(scenario())


def test_search_can_require_one_machine_and_filters_by_process(api: Api) -> None:
    summed = get_json(api, "/v1/search", "platform", process="cnc_turning", hours=1, within_days=7)
    single = get_json(api, "/v1/search", "platform", process="cnc_turning", hours=1, within_days=7,
                  one_machine="true")  # fmt: skip
    okada = next(c for c in summed["candidates"] if c["factory"] == "okada-machining")
    alone = next(c for c in single["candidates"] if c["factory"] == "okada-machining")
    assert okada["machines"] == 3
    assert alone["machines"] == 1
    assert alone["available"] < okada["available"]
    region = get_json(api, "/v1/capacity", "platform", process="cnc_turning")
    assert [p["process"] for p in region["by_process"]] == ["cnc_turning"]
    for factory in region["factories"]:
        assert {p["process"] for p in factory["by_process"]} <= {"cnc_turning"}


def test_answers_carry_etags_and_a_matching_one_gets_304(api: Api) -> None:
    headers = api.headers("platform")
    first = api.client.get("/v1/capacity", headers=headers)
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("private, max-age=")
    again = api.client.get("/v1/capacity", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    other = api.client.get("/v1/capacity", headers={**headers, "If-None-Match": '"nope"'})
    assert other.status_code == 200
    assert other.json() == first.json()


def test_search_ranks_factories_that_cover_the_hours_first(api: Api) -> None:
    body = get_json(api, "/v1/search", "platform", process="cnc_turning", hours=5, within_days=7)
    candidates = body["candidates"]
    assert candidates
    assert candidates[0]["covers"] is True
    covering = [c["covers"] for c in candidates]
    assert covering == sorted(covering, reverse=True)
    cover = get_json(
        api,
        "/v1/search/cover",
        "factory:okada-machining",
        factory="okada-machining",
        machine="cnc-01",
        for_h=48,  # a planned outage: cnc-01 is working
    )
    assert cover[0]["process"] == "cnc_milling_5axis"
    assert all(c["factory"] != "okada-machining" for c in cover[0]["candidates"])
    assert cover[0]["hours"] > 0


def _first_event(api: Api, **params: Any) -> tuple[str, dict[str, Any]]:
    """The id and body of the stream's first event."""
    headers = api.headers("platform")
    if "last_event_id" in params:
        headers["Last-Event-ID"] = params.pop("last_event_id")
    with api.client.stream("GET", "/v1/events", params=params, headers=headers) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "event: capacity"
        event_id = next(lines)
        data = next(lines)
    assert event_id.startswith("id: ")
    assert data.startswith("data: ")
    return event_id.removeprefix("id: "), json.loads(data.removeprefix("data: "))


def test_events_push_the_regional_capacity_tagged_and_filtered(api: Api) -> None:
    tag, body = _first_event(api)
    assert body["by_process"]
    assert body["factories"]
    assert all(math.isfinite(r["available"]) for r in body["by_process"])
    # The id tags the figures, as the ETag of the same answer does (weak when compressed).
    response = api.client.get("/v1/capacity", headers=api.headers("platform"))
    assert response.headers["etag"] == f'W/"{tag}"'
    plain = {**api.headers("platform"), "Accept-Encoding": "identity"}
    assert api.client.get("/v1/capacity", headers=plain).headers["etag"] == f'"{tag}"'
    _, only = _first_event(api, process="cnc_turning", factory="okada-machining")
    assert [f["factory"] for f in only["factories"]] == ["okada-machining"]
    assert [p["process"] for p in only["by_process"]] == ["cnc_turning"]


def test_events_push_a_change_as_soon_as_the_live_view_shows_it(
    region: Region, tmp_path: Path
) -> None:
    """The stream looks every view_ttl_s, not every cache_ttl_s: a machine withdrawn (new
    evidence, so new figures, once the descriptions are read again) is pushed while the
    figures before would still be served."""
    changed = copy_region(region, tmp_path)
    rules = CapacityRules(view_ttl_s=0.05, descriptions_ttl_s=0.05, cache_ttl_s=3600)
    factory = "okada-machining"
    with running_api(changed, tmp_path, rules=rules) as api:
        params = {"factory": factory}
        with api.client.stream(
            "GET", "/v1/events", params=params, headers=api.headers("platform")
        ) as stream:
            events = (line for line in stream.iter_lines() if line.startswith("data: "))
            before = json.loads(next(events).removeprefix("data: "))

            async def withdraw() -> None:
                async with SqliteStore(changed.path) as store:
                    await store.remove_description(factory, "cnc-01")

            asyncio.run(withdraw())
            after = json.loads(next(events).removeprefix("data: "))
    (factory_before,) = before["factories"]
    (factory_after,) = after["factories"]
    machines = {p["process"]: p["machines"] for p in factory_before["by_process"]}
    for process in factory_after["by_process"]:
        machines[process["process"]] -= process["machines"]
    assert sum(machines.values()) > 0  # cnc-01 no longer counts in its capabilities


def test_a_client_resuming_with_the_current_id_is_not_sent_the_same_figures(api: Api) -> None:
    tag, _ = _first_event(api)
    headers = {**api.headers("platform"), "Last-Event-ID": tag}
    with api.client.stream("GET", "/v1/events", headers=headers) as stream:
        first = next(line for line in stream.iter_lines() if line)
    assert first == ": keep-alive"  # nothing new to send: only the proxies' comment comes
    other, _ = _first_event(api, last_event_id="0" * 32)  # figures the client no longer has
    assert other == tag


def test_etags_tag_the_figures_not_when_they_were_computed() -> None:
    t0, t1 = "2026-12-05T10:00:00Z", "2026-12-05T10:00:15Z"
    body = {
        "as_of": t0,
        "data_age_s": 3.2,
        "available": 4.5,
        "factories": [{"as_of": t0, "data_age_s": 1.0, "total": 8}],
    }
    later = {
        **body,
        "as_of": t1,
        "data_age_s": 18.2,
        "factories": [{"as_of": t1, "data_age_s": 16.0, "total": 8}],
    }
    changed = {**body, "available": 4.25}
    tag = figures_tag(json.dumps(body).encode())
    assert figures_tag(json.dumps(later).encode()) == tag
    assert figures_tag(json.dumps(changed).encode()) != tag


def test_calendar_endpoint_lists_planned_intervals(api: Api, region: Region) -> None:
    start, end = _window(region, 7)
    body = get_json(
        api, "/v1/factories/okada-machining/machines/cnc-01/calendar", start=start, end=end
    )
    calendar = region.configs["okada-machining"].calendars["two-shift"]
    assert body["pbt"] == pytest.approx(calendar.planned_seconds(start, end) / 3600, abs=1e-4)
    assert len(body["intervals"]) == len(calendar.planned_intervals(start, end))
    assert get_json(api, "/v1/factories/okada-machining/machines/cnc-01")["gateway"] == GATEWAY


def test_health_and_readiness_need_no_key(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}
