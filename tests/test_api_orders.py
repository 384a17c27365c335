"""Placing an order, as the matching platform does it: capacity in time (days, shifts,
hours of a window; free blocks; when N hours could start and finish), then a hold on a
machine, which the factory confirms or releases or which expires, every change in the
factory's audit log. The region is the shipped factories' simulated history in the
embedded store; the clock is the test's."""

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apikit import Api, Clocks, Region, build_region, get_json, running_api

from kyoso.api.keys import ApiKeyStore, parse_scope

DAYS = 9
OKADA = "okada-machining"
OWN = f"factory:{OKADA}"
TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", DAYS)


@pytest.fixture
def clocks(region: Region) -> Clocks:
    return Clocks(region.end + timedelta(seconds=30))


@pytest.fixture
def api(region: Region, tmp_path: Path, clocks: Clocks) -> Iterator[Api]:
    with running_api(region, tmp_path, clocks=clocks) as running:
        yield running


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _phased(api: Api, scope: str = OWN, factory: str = OKADA, **query: Any) -> dict[str, Any]:
    """The factory's capacity in time (``start`` is the query's ``from``)."""
    if "start" in query:
        query["from"] = query.pop("start")
    return dict(get_json(api, f"/v1/factories/{factory}/capacity/phased", scope, **query))


def _machine(answer: dict[str, Any], name: str, part: str = "machines") -> dict[str, Any]:
    return dict(next(m for m in answer[part] if m["machine"] == name))


FIGURES = ("total", "committed", "unattainable", "available")


# --- capacity in time -------------------------------------------------------------------


def test_the_hours_of_a_window_are_the_capacity_of_the_same_horizon(api: Api) -> None:
    """From now over 24 hours, hour by hour: each machine's window figures are those of
    ``/capacity?horizon_h=24``, and its hours add up to them."""
    now = api.service.now()
    answer = _phased(api, start=_iso(now), to=_iso(now + timedelta(hours=24)), bucket="hour")
    capacity = get_json(api, f"/v1/factories/{OKADA}/capacity", OWN, horizon_h=24)
    assert answer["timezone"] == "Asia/Tokyo"
    assert len(answer["machines"]) == len(capacity["machines"]) > 3
    for machine in capacity["machines"]:
        phased = _machine(answer, machine["machine"])
        for name in FIGURES:
            assert phased[name] == pytest.approx(machine[name], abs=0.002), name
            assert sum(b[name] for b in phased["buckets"]) == pytest.approx(phased[name], abs=0.01)
        assert phased["reasons"] == machine["reasons"]
        assert len(phased["buckets"]) in {24, 25}  # local hours, now's included
    for process in capacity["by_process"]:
        phased = next(p for p in answer["by_process"] if p["process"] == process["process"])
        assert phased["machines"] == process["machines"]
        assert phased["available"] == pytest.approx(process["available"], abs=0.01)


def test_days_are_the_factorys_and_the_default_window_is_the_coming_week(api: Api) -> None:
    now = api.service.now()
    answer = _phased(api)
    today = now.astimezone(TOKYO).date()
    labels = [b["label"] for b in answer["machines"][0]["buckets"]]
    assert labels == [(today + timedelta(days=i)).isoformat() for i in range(7)]
    first = answer["machines"][0]["buckets"][0]
    assert datetime.fromisoformat(first["start"]).astimezone(TOKYO).hour == 0
    # The first day counts from now on: no capacity in the past.
    rest = _phased(api, start=_iso(now), to=answer["end"])
    for ours, later in zip(answer["machines"], rest["machines"], strict=True):
        assert ours["total"] == pytest.approx(later["total"], abs=0.01)
    # Sunday has no shift at Okada: nothing planned, nothing available.
    for machine in answer["machines"]:
        sunday = next(
            b for b in machine["buckets"] if datetime.fromisoformat(b["label"]).weekday() == 6
        )
        assert sunday["total"] == 0
        assert sunday["available"] == 0


def test_shifts_are_the_machines_calendar_shifts(api: Api) -> None:
    now = api.service.now()
    answer = _phased(api, start=_iso(now), to=_iso(now + timedelta(days=3)), bucket="shift")
    cnc = _machine(answer, "cnc-01")
    names = {b["label"].split()[0] for b in cnc["buckets"]}
    assert names <= {"early", "late", "saturday"}
    assert "early" in names
    assert "late" in names
    for bucket in cnc["buckets"]:
        length = datetime.fromisoformat(bucket["end"]) - datetime.fromisoformat(bucket["start"])
        assert length in {timedelta(hours=8), timedelta(hours=4)}
        assert bucket["total"] <= 7.5 + 1e-9  # a break in every eight-hour shift


def test_free_blocks_and_when_a_job_can_start_and_finish(api: Api) -> None:
    now = api.service.now()
    window = {"start": _iso(now), "to": _iso(now + timedelta(days=7))}
    longest = _machine(_phased(api, **window), "cnc-01", "offers")["longest_free_block"]
    assert longest is not None
    # Planned time between breaks (nothing booked or held yet): at most 10:30-18:00, from
    # the early shift's break across the change of shift to the late shift's.
    span = datetime.fromisoformat(longest["end"]) - datetime.fromisoformat(longest["start"])
    assert timedelta(hours=3) <= span <= timedelta(hours=7, minutes=30)
    assert 0 < longest["available"] <= span.total_seconds() / 3600
    job = round(longest["available"] * 0.75, 2)  # fits the longest block at least
    cnc = _machine(_phased(api, **window, hours=job), "cnc-01", "offers")
    first = cnc["earliest_start"]
    assert first is not None
    assert job <= first["available"]
    assert datetime.fromisoformat(first["start"]) <= datetime.fromisoformat(longest["start"])
    finish = datetime.fromisoformat(cnc["earliest_finish"])
    assert now < finish <= datetime.fromisoformat(first["end"])
    # The hours before the finish hold the job: all but the last one, less than it.
    hourly = _machine(_phased(api, **window, bucket="hour"), "cnc-01")["buckets"]
    before = sum(b["available"] for b in hourly if datetime.fromisoformat(b["end"]) <= finish)
    upto = sum(b["available"] for b in hourly if datetime.fromisoformat(b["start"]) < finish)
    assert before <= job + 0.01 <= upto + 0.02
    available = _machine(_phased(api, **window), "cnc-01")["available"]
    too_long = _machine(_phased(api, **window, hours=available + 1), "cnc-01", "offers")
    assert too_long["earliest_finish"] is None
    assert too_long["earliest_start"] is None


def test_the_region_in_time_adds_up_its_factories(api: Api) -> None:
    answer = get_json(api, "/v1/capacity/phased", "platform")
    assert answer["timezone"] == "Asia/Tokyo"  # every shipped factory's
    for process in answer["by_process"]:
        mine = [
            p
            for f in answer["factories"]
            for p in f["by_process"]
            if p["process"] == process["process"]
        ]
        assert process["factories"] == len(mine)
        for i, bucket in enumerate(process["buckets"]):
            assert bucket["available"] == pytest.approx(
                sum(p["buckets"][i]["available"] for p in mine), abs=0.01
            )
    only = get_json(api, "/v1/capacity/phased", "platform", process="cnc_turning", bucket="hour")
    assert [p["process"] for p in only["by_process"]] == ["cnc_turning"]
    assert len(only["by_process"][0]["buckets"]) >= 7 * 24


@pytest.mark.parametrize(
    ("path", "query", "where"),
    [
        ("/v1/capacity/phased", {"bucket": "shift"}, "bucket"),
        ("/v1/capacity/phased", {"timezone": "Mars/Olympus"}, "timezone"),
        (f"/v1/factories/{OKADA}/capacity/phased", {"to": "2020-01-01T00:00:00Z"}, "to"),
        (f"/v1/factories/{OKADA}/capacity/phased", {"from": "2026-11-11T00:00:00"}, "from"),
        (f"/v1/factories/{OKADA}/capacity/phased", {"to": "2027-06-01T00:00:00Z"}, "to"),
        (f"/v1/factories/{OKADA}/capacity/phased", {"bucket": "week"}, "bucket"),
        (f"/v1/factories/{OKADA}/capacity/phased", {"horizon_h": "24"}, "horizon_h"),
    ],
)
def test_a_window_that_cannot_be_answered_is_refused(
    api: Api, path: str, query: dict[str, str], where: str
) -> None:
    answer = api.client.get(path, params=query, headers=api.headers("admin"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["loc"][-1] == where


def test_the_platform_sees_when_machines_could_work_not_their_figures(api: Api) -> None:
    platform = _phased(api, "platform", hours=1)
    own = _phased(api, hours=1)
    assert platform["machines"] is None
    assert platform["offers"] == own["offers"]  # every shipped machine is shared
    assert platform["by_process"] == own["by_process"]
    other = api.client.get(
        f"/v1/factories/{OKADA}/capacity/phased", headers=api.headers("factory:mori-plastics")
    )
    assert other.status_code == 404
    region = api.client.get("/v1/capacity/phased", headers=api.headers(OWN))
    assert region.status_code == 403


# --- holds and orders -------------------------------------------------------------------


def _window(api: Api, days: float = 3) -> dict[str, str]:
    now = api.service.now()
    return {"start": _iso(now), "end": _iso(now + timedelta(days=days))}


def _hold(api: Api, *, hours: float, machine: str | None = "cnc-01", **more: Any) -> Any:
    body = {"factory": OKADA, "hours": hours, "order_ref": "PO-1", **_window(api), **more}
    if machine is not None:
        body["machine"] = machine
    headers = api.headers("platform")
    if "key" in more:
        headers["Idempotency-Key"] = body.pop("key")
    return api.client.post("/v1/holds", json=body, headers=headers)


def _room(api: Api, machine: str = "cnc-01", days: float = 3) -> dict[str, Any]:
    window = _window(api, days)
    answer = _phased(api, start=window["start"], to=window["end"])
    return _machine(answer, machine)


def test_a_hold_commits_its_hours_on_top_of_the_factorys_own(api: Api) -> None:
    before = _room(api)
    held = _hold(api, hours=3)
    assert held.status_code == 201, held.text
    hold = held.json()
    assert held.headers["location"] == f"/v1/holds/{hold['id']}"
    assert hold["status"] == "held"
    assert hold["machine"] == "cnc-01"
    after = _room(api)
    assert after["committed"] == pytest.approx(before["committed"] + 3, abs=0.01)
    assert after["available"] == pytest.approx(before["available"] - 3, abs=0.01)
    assert "held" in after["reasons"]
    capacity = get_json(api, f"/v1/factories/{OKADA}/capacity", OWN, horizon_h=72)
    cnc = next(m for m in capacity["machines"] if m["machine"] == "cnc-01")
    assert cnc["available"] == pytest.approx(after["available"], abs=0.01)
    # The factory sees the order placed with it; the platform its own.
    assert [h["id"] for h in get_json(api, "/v1/holds", OWN)] == [hold["id"]]
    assert [h["id"] for h in get_json(api, "/v1/holds", "platform")] == [hold["id"]]
    assert get_json(api, "/v1/holds", "factory:mori-plastics") == []


def test_more_than_the_window_has_is_refused_with_the_figures(api: Api) -> None:
    room = _room(api)["available"]
    assert room > 4
    refused = _hold(api, hours=room + 1)
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["code"] == "conflict"
    assert problem["requested_h"] == pytest.approx(room + 1)
    assert problem["available_h"] == pytest.approx(room, abs=0.01)
    # Holds fill the room between them, and the one too many is refused.
    assert _hold(api, hours=room - 2).status_code == 201
    assert _hold(api, hours=2.5).status_code == 409
    assert _hold(api, hours=1.9).status_code == 201
    assert _room(api)["available"] == pytest.approx(0.1, abs=0.02)
    assert get_json(api, "/v1/holds", "platform", status="held").__len__() == 2


def test_a_process_goes_to_the_machine_with_the_most_room(api: Api) -> None:
    window = _window(api)
    answer = _phased(api, start=window["start"], to=window["end"], process="cnc_turning")
    rooms = {m["machine"]: m["available"] for m in answer["machines"]}
    assert len(rooms) >= 2
    best = max(rooms, key=lambda m: rooms[m])
    held = _hold(api, hours=1, machine=None, process="cnc_turning")
    assert held.status_code == 201, held.text
    assert held.json()["machine"] == best
    assert held.json()["process"] == "cnc_turning"
    wrong = _hold(api, hours=1, process="cnc_turning")  # cnc-01 is a five-axis mill
    assert wrong.status_code == 422


def test_a_retried_request_makes_one_hold(api: Api) -> None:
    first = _hold(api, hours=1, key="order-7-attempt")
    again = _hold(api, hours=1, key="order-7-attempt")
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(get_json(api, "/v1/holds", "platform")) == 1
    other = _hold(api, hours=2, key="order-7-attempt")
    assert other.status_code == 422
    assert other.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_the_factory_confirms_or_releases_and_the_platform_withdraws(api: Api) -> None:
    before = _room(api)["available"]
    one, two = (_hold(api, hours=1).json()["id"] for _ in range(2))
    post = api.client.post
    assert post(f"/v1/holds/{one}/confirm", headers=api.headers("platform")).status_code == 403
    other = api.headers("factory:mori-plastics")
    assert post(f"/v1/holds/{one}/confirm", headers=other).status_code == 404
    confirmed = post(f"/v1/holds/{one}/confirm", headers=api.headers(OWN))
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "confirmed"
    assert post(f"/v1/holds/{one}/confirm", headers=api.headers(OWN)).status_code == 409
    # An order counts once, as its hold did.
    assert _room(api)["available"] == pytest.approx(before - 2, abs=0.01)
    withdrawn = post(f"/v1/holds/{two}/release", headers=api.headers("platform"))
    assert withdrawn.json()["status"] == "released"
    cancelled = post(f"/v1/holds/{one}/release", headers=api.headers(OWN))
    assert cancelled.json()["status"] == "released"
    assert _room(api)["available"] == pytest.approx(before, abs=0.01)
    log = get_json(api, f"/v1/factories/{OKADA}/audit", OWN)
    assert [(e["hold"], e["action"]) for e in log] == [
        (one, "created"),
        (two, "created"),
        (one, "confirmed"),
        (two, "released"),
        (one, "released"),
    ]
    platform_key = api.keys["platform"].split("_")[1]
    assert {e["actor"] for e in log if e["action"] == "created"} == {platform_key}
    assert get_json(api, f"/v1/factories/{OKADA}/audit", OWN, after=log[2]["seq"]) == log[3:]
    denied = api.client.get(f"/v1/factories/{OKADA}/audit", headers=api.headers("platform"))
    assert denied.status_code == 403


def test_an_unconfirmed_hold_expires_by_itself(api: Api, clocks: Clocks) -> None:
    before = _room(api, days=4)["available"]
    hold = _hold(api, hours=2, expires_in_s=60).json()
    assert _room(api, days=4)["available"] == pytest.approx(before - 2, abs=0.01)
    clocks.advance(61)  # the machines' data still fresh (stale_after_s: 300)
    found = get_json(api, f"/v1/holds/{hold['id']}", "platform")
    assert found["status"] == "expired"
    later = _room(api, days=4)
    assert later["available"] > before - 0.1  # back (less the minute gone by)
    assert "held" not in later["reasons"]
    confirm = api.client.post(f"/v1/holds/{hold['id']}/confirm", headers=api.headers(OWN))
    assert confirm.status_code == 409
    expired = get_json(api, f"/v1/factories/{OKADA}/audit", OWN)[-1]
    assert expired["action"] == "expired"
    assert expired["actor"] == "system"
    assert expired["at"] == found["expires_at"]


def test_another_platform_never_sees_a_platforms_holds(api: Api, tmp_path: Path) -> None:
    hold = _hold(api, hours=1).json()
    keys = ApiKeyStore(tmp_path / "keys.sqlite3")
    rival = keys.create("rival", parse_scope("platform")).key
    keys.close()
    headers = {"Authorization": f"Bearer {rival}"}
    assert api.client.get("/v1/holds", headers=headers).json() == []
    assert api.client.get(f"/v1/holds/{hold['id']}", headers=headers).status_code == 404
    release = api.client.post(f"/v1/holds/{hold['id']}/release", headers=headers)
    assert release.status_code == 404


def test_bookings_are_in_the_audit_log_too(api: Api) -> None:
    path = f"/v1/factories/{OKADA}/machines/cnc-01/bookings"
    now = api.service.now()
    body = {"bookings": [{"start": _iso(now), "end": _iso(now + timedelta(days=1)), "hours": 2}]}
    headers = {**api.headers(OWN), "If-Match": "*"}
    assert api.client.put(path, json=body, headers=headers).status_code == 200
    assert api.client.delete(path, headers=api.headers(OWN)).status_code == 204
    log = get_json(api, f"/v1/factories/{OKADA}/audit", OWN)
    assert [e["action"] for e in log] == ["bookings_put", "bookings_cleared"]
    assert log[0]["detail"]["machine"] == "cnc-01"
    assert log[0]["detail"]["bookings"][0]["hours"] == 2


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"hours": 0}, 422),
        ({"order_ref": ""}, 422),
        ({"order_ref": "PO\n1"}, 422),
        ({"machine": None}, 422),  # neither machine nor process
        ({"expires_in_s": 30}, 422),
        ({"machine": "no-such-machine"}, 404),
        ({"factory": "no-such-factory"}, 404),
    ],
)
def test_a_hold_that_makes_no_sense_is_refused(
    api: Api, change: dict[str, Any], status: int
) -> None:
    body = {"factory": OKADA, "machine": "cnc-01", "hours": 1, "order_ref": "PO-1"}
    body |= _window(api) | change
    answer = api.client.post("/v1/holds", json=body, headers=api.headers("platform"))
    assert answer.status_code == status, answer.text
    assert get_json(api, "/v1/holds", "platform") == []


def test_a_window_gone_or_too_far_is_refused(api: Api) -> None:
    now = api.service.now()
    for start, end in [
        (now - timedelta(days=2), now - timedelta(days=1)),
        (now, now + timedelta(days=40)),
    ]:
        answer = _hold(api, hours=1, start=_iso(start), end=_iso(end))
        assert answer.status_code == 422, answer.text
