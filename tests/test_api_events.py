"""The event stream's threshold filter and its resumption (``GET /v1/events``,
kyoso/api/routes/capacity.py), over a simulated region whose store the test changes as the
ingest would: a machine withdrawn, a gateway gone offline."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apikit import Api, Region, build_region, copy_region, get_json, online, running_api
from ingestkit import wait_until

from kyoso.capacity.rules import CapacityRules
from kyoso.store import SqliteStore

FACTORY = "okada-machining"
PROCESS = "cnc_milling_3axis"  # cnc-02 and cnc-03
RULES = CapacityRules(view_ttl_s=0.05, descriptions_ttl_s=0.05, cache_ttl_s=3600)
"""Looked at often, so that a change reaches the stream at once; never merely aged."""


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 4, interval_s=600)


@pytest.fixture
def api(region: Region, tmp_path: Path) -> Iterator[tuple[Api, Region]]:
    (tmp_path / "region").mkdir()
    changed = copy_region(region, tmp_path / "region")
    with running_api(changed, tmp_path, rules=RULES) as running:
        yield running, changed


def _process_row(api: Api, horizon_h: float = 24) -> dict[str, Any]:
    """The factory's figures of the process, as the platform sees them."""
    body = get_json(api, f"/v1/factories/{FACTORY}/capacity", "platform", horizon_h=horizon_h)
    [row] = [p for p in body["by_process"] if p["process"] == PROCESS]
    return dict(row)


def _available(api: Api) -> float:
    """The factory's available hours of the process over a week."""
    available: float = _process_row(api, 168)["available"]
    return available


def _quiet_machine(api: Api) -> str:
    """The process's machine whose withdrawal leaves the process's reasons as they are: one
    whose reasons the other has too (which one it is depends on the simulated history: a
    machine in a minor stop at the end of it adds ``minor_stop``)."""
    body = get_json(api, f"/v1/factories/{FACTORY}/capacity", "admin", horizon_h=24)
    rows: dict[str, set[str]] = {
        m["machine"]: set(m["reasons"]) for m in body["machines"] if PROCESS in m["processes"]
    }
    return next(m for m, reasons in rows.items() if all(reasons <= r for r in rows.values()))


def _withdraw(region: Region, machine: str) -> None:
    async def write() -> None:
        async with SqliteStore(region.path) as store:
            await store.remove_description(FACTORY, machine)

    asyncio.run(write())


def _offline(region: Region) -> None:
    async def write() -> None:
        async with SqliteStore(region.path) as store:
            await store.write_status(online(FACTORY, region.end, "offline"))

    asyncio.run(write())


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each event's id and data; a comment (the keep-alive) as ("", {})."""
    event_id = ""
    for line in lines:
        if line.startswith(":"):
            yield "", {}
        elif line.startswith("id: "):
            event_id = line.removeprefix("id: ")
        elif line.startswith("data: "):
            yield event_id, json.loads(line.removeprefix("data: "))


def _row(body: dict[str, Any]) -> tuple[float, bool]:
    [factory] = body["factories"]
    [row] = factory["by_process"]
    return row["available"], factory["offline"]


def test_a_threshold_sends_its_crossings_only_and_a_resumed_stream_what_it_missed(
    api: tuple[Api, Region],
) -> None:
    """The threshold is a quarter of the available hours: cnc-02 withdrawn halves them (a
    move every plain stream sends), the factory offline takes them to 0 (a crossing)."""
    client, region = api
    full = _available(client)
    assert full > 0
    params = {"factory": FACTORY, "process": PROCESS, "horizon_h": 168}
    params["min_available_h"] = round(full / 4, 4)
    platform = client.headers("platform")
    with client.client.stream("GET", "/v1/events", params=params, headers=platform) as stream:
        seen, first = next(_events(stream.iter_lines()))
    assert _row(first) == (full, False)  # at once: where the figures stand

    _withdraw(region, "cnc-02")
    wait_until(lambda: _available(client) < full, what="cnc-02 withdrawn")
    halved = _available(client)
    assert full / 4 < halved < full
    resumed = {**platform, "Last-Event-ID": seen}
    with client.client.stream("GET", "/v1/events", params=params, headers=resumed) as stream:
        events = _events(stream.iter_lines())
        # Nothing crossed since the id it had: it is sent nothing until a keep-alive (15 s).
        assert next(events) == ("", {})
        _offline(region)
        crossed_id, crossed = next(e for e in events if e[0])
    assert _row(crossed) == (0, True)
    assert crossed_id != seen


def test_a_stream_resumed_after_a_move_too_small_to_tell_is_sent_nothing(
    api: tuple[Api, Region],
) -> None:
    """A machine withdrawn changes the answer (one machine fewer: its id, the ETag, changes)
    but, with ``min_change_h`` at 1000, no figure enough to tell: a client resuming with the
    id it had is sent what it would have been sent had it stayed connected, nothing."""
    client, region = api
    platform = client.headers("platform")
    params = {"factory": FACTORY, "process": PROCESS, "min_change_h": 1000}
    with client.client.stream("GET", "/v1/events", params=params, headers=platform) as stream:
        seen, _ = next(_events(stream.iter_lines()))
    before = _process_row(client)
    _withdraw(region, _quiet_machine(client))
    wait_until(lambda: _process_row(client)["machines"] == 1, what="a machine withdrawn")
    after = _process_row(client)
    assert abs(after["confidence"] - before["confidence"]) < 0.05  # nothing else to tell
    assert after["reasons"] == before["reasons"]
    resumed = {**platform, "Last-Event-ID": seen}
    with client.client.stream("GET", "/v1/events", params=params, headers=resumed) as stream:
        assert next(_events(stream.iter_lines())) == ("", {})  # the keep-alive (15 s) first


def test_a_threshold_and_min_change_h_exclude_each_other(api: tuple[Api, Region]) -> None:
    client, _ = api
    params = {"min_available_h": 10, "min_change_h": 1}
    asked = client.client.get("/v1/events", params=params, headers=client.headers("platform"))
    assert asked.status_code == 422
    [error] = asked.json()["errors"]
    assert error["loc"] == ["query", "min_change_h"]
    assert "not with min_available_h" in error["msg"]
