"""Who may ask the capacity API what: every route x every kind of caller, and bad input.

``ENDPOINTS`` holds, for every route of the app, one well-formed request and the status
each caller must get. ``test_every_route_is_in_the_table`` compares it with the app's own
routes, so a route added without a row fails here instead of shipping unchecked.

The callers: no key, a malformed key, a revoked (admin) key, ``platform``, the target
factory's own key, another factory's key, ``admin``. The rules under test (issue 5):
the tenant comes from the key, never from the path; another factory's resources answer
exactly as a factory that does not exist; ``platform`` sees aggregated capacity, search,
KPIs summed over consenting machines and the public description of shared machines, never
an unshared machine nor one machine's figures; bookings are written by the factory's own
key alone; bad parameters get 422 with a message that says what is wrong; windows and sizes
are bounded.

The region is the shipped factories' simulated history in the embedded store, with one
machine (``PRIVATE``) whose factory does not share its capacity.
"""

import asyncio
import base64
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from apikit import ORIGIN, Api, Region, build_region, running_api
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from kyoso.api.keys import ApiKeyStore, Scope, ScopeKind
from kyoso.contract import Process, Sharing
from kyoso.simulators.history import history_descriptions
from kyoso.store import SqliteStore

OWN = "okada-machining"
"""The factory whose resources the table asks for."""
OTHER = "mori-plastics"
"""A factory whose key must not see ``OWN``."""
MACHINE = "cnc-01"
"""A machine of ``OWN``."""
PRIVATE = "grind-01"
"""A machine of ``OWN`` whose capacity its factory does not share (the region's only
grinder)."""
GHOST = "no-such-factory"
NO_HOLD = "hld_0123456789abcdef"
NO_WEBHOOK = "wh_" + "0" * 24
"""A subscription no key has: another key's is answered as this one (test_api_webhooks.py)."""
"""A well-formed hold id that no hold has."""

CALLERS = ("none", "malformed", "revoked", "platform", "own", "other", "admin")


def _iso(days: float) -> str:
    return (ORIGIN + timedelta(days=days)).isoformat().replace("+00:00", "Z")


WINDOW = {"start": _iso(0), "end": _iso(2)}
"""The region's whole history."""


def _booking(start_days: float, end_days: float, hours: float | None = 4) -> dict[str, Any]:
    return {"start": _iso(start_days), "end": _iso(end_days), "hours": hours}


BOOKINGS = {"bookings": [_booking(2.25, 2.5)]}


@dataclass(frozen=True)
class Endpoint:
    """One route, a well-formed request to it, and the status each caller gets."""

    method: str
    path: str
    expected: Mapping[str, int]
    query: Mapping[str, str] = field(default_factory=dict)
    body: Any = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def target(self, factory: str, machine: str) -> tuple[str, dict[str, str]]:
        """The path and query asking for ``factory``'s ``machine``."""
        names = {
            "factory": factory,
            "machine": machine,
            "hold_id": NO_HOLD,
            "webhook_id": NO_WEBHOOK,
        }
        return self.path.format(**names), {k: v.format(**names) for k, v in self.query.items()}

    @property
    def names_a_factory(self) -> bool:
        return "{factory}" in self.path or "{factory}" in self.query.values()


def _guarded(*, platform: int, own: int, other: int, admin: int) -> dict[str, int]:
    return {
        "none": 401,
        "malformed": 401,
        "revoked": 401,
        "platform": platform,
        "own": own,
        "other": other,
        "admin": admin,
    }


PUBLIC = dict.fromkeys(CALLERS, 200)
FACTORY_ONLY = _guarded(platform=403, own=200, other=404, admin=200)
"""A machine's details, a factory's gateways, calendars and bookings."""
AGGREGATED = _guarded(platform=200, own=200, other=404, admin=200)
SHARED = AGGREGATED
"""What the factory shares, shown to the platform its own way: its shared machines' public
description, KPIs summed over the machines whose KPIs it shares."""
REGIONAL = _guarded(platform=200, own=403, other=403, admin=200)
WRITE_BOOKINGS = _guarded(platform=403, own=200, other=404, admin=403)
_MACHINE = "/v1/factories/{factory}/machines/{machine}"
_SEARCH = {"process": "cnc_turning", "hours": "8", "within_days": "7"}

FACTORIES = Endpoint("GET", "/v1/factories", _guarded(platform=200, own=200, other=200, admin=200))
MACHINES = Endpoint("GET", "/v1/factories/{factory}/machines", SHARED)
GATEWAYS = Endpoint("GET", "/v1/factories/{factory}/gateways", FACTORY_ONLY)
MACHINE_VIEW = Endpoint("GET", _MACHINE, FACTORY_ONLY)
CALENDAR = Endpoint("GET", _MACHINE + "/calendar", FACTORY_ONLY, WINDOW)
KPIS = Endpoint("GET", "/v1/factories/{factory}/kpis", SHARED, WINDOW)
TIMELINE = Endpoint("GET", "/v1/factories/{factory}/timeline", FACTORY_ONLY)
SHIFTS = Endpoint("GET", "/v1/factories/{factory}/kpis/shifts", FACTORY_ONLY, {"days": "2"})
CAPACITY = Endpoint("GET", "/v1/factories/{factory}/capacity", AGGREGATED, {"horizon_h": "24"})
REGION = Endpoint("GET", "/v1/capacity", REGIONAL, {"horizon_h": "24"})
SEARCH = Endpoint("GET", "/v1/search", REGIONAL, _SEARCH)
COVER = Endpoint(
    "GET",
    "/v1/search/cover",
    AGGREGATED,
    {"factory": "{factory}", "machine": "{machine}", "for_h": "24"},
)
BOOKINGS_GET = Endpoint("GET", _MACHINE + "/bookings", FACTORY_ONLY)
BOOKINGS_PUT = Endpoint("PUT", _MACHINE + "/bookings", WRITE_BOOKINGS, body=BOOKINGS)
BOOKINGS_DELETE = Endpoint(
    "DELETE", _MACHINE + "/bookings", _guarded(platform=403, own=204, other=404, admin=403)
)
EVENTS = Endpoint("GET", "/v1/events", REGIONAL, {"horizon_h": "24"})
PHASED = Endpoint("GET", "/v1/factories/{factory}/capacity/phased", AGGREGATED, {"bucket": "shift"})
REGION_PHASED = Endpoint("GET", "/v1/capacity/phased", REGIONAL, {"bucket": "day"})
_HOLD = {"factory": OWN, "machine": MACHINE, "start": _iso(2), "end": _iso(3), "hours": 1,
         "order_ref": "PO-1"}  # fmt: skip
HOLD = Endpoint("POST", "/v1/holds", _guarded(platform=201, own=403, other=403, admin=403),
                body=_HOLD)  # fmt: skip
HOLDS = Endpoint("GET", "/v1/holds", _guarded(platform=200, own=200, other=200, admin=200))
NOWHERE = _guarded(platform=404, own=404, other=404, admin=404)
"""A hold no key sees (``NO_HOLD``; tests/test_api_orders.py has who sees which hold)."""
HOLD_VIEW = Endpoint("GET", "/v1/holds/{hold_id}", NOWHERE)
HOLD_CONFIRM = Endpoint("POST", "/v1/holds/{hold_id}/confirm", NOWHERE)
HOLD_RELEASE = Endpoint("POST", "/v1/holds/{hold_id}/release", NOWHERE)
AUDIT = Endpoint("GET", "/v1/factories/{factory}/audit", FACTORY_ONLY)
ANY_KEY = _guarded(platform=200, own=200, other=200, admin=200)
_WEBHOOK = {"url": "https://8.8.8.8/hook", "events": ["factory.offline"]}
WEBHOOKS = [
    Endpoint("POST", "/v1/webhooks", _guarded(platform=201, own=201, other=201, admin=201),
             body=_WEBHOOK),
    Endpoint("GET", "/v1/webhooks", ANY_KEY),
    Endpoint("GET", "/v1/webhooks/{webhook_id}", NOWHERE),
    Endpoint("DELETE", "/v1/webhooks/{webhook_id}", NOWHERE),
    Endpoint("GET", "/v1/webhooks/{webhook_id}/deliveries", NOWHERE),
]  # fmt: skip

ENDPOINTS = [
    Endpoint("GET", "/", PUBLIC),  # the overview page: its script asks for a key
    Endpoint("GET", "/healthz", PUBLIC),
    Endpoint("GET", "/metrics", PUBLIC),
    Endpoint("GET", "/readyz", PUBLIC),
    Endpoint("GET", "/openapi.json", PUBLIC),
    Endpoint("GET", "/docs", PUBLIC),
    Endpoint("GET", "/docs/oauth2-redirect", PUBLIC),
    Endpoint("GET", "/redoc", PUBLIC),
    FACTORIES,
    MACHINES,
    GATEWAYS,
    MACHINE_VIEW,
    CALENDAR,
    KPIS,
    TIMELINE,
    SHIFTS,
    CAPACITY,
    REGION,
    SEARCH,
    COVER,
    BOOKINGS_GET,
    BOOKINGS_PUT,
    BOOKINGS_DELETE,
    EVENTS,
    PHASED,
    REGION_PHASED,
    HOLD,
    HOLDS,
    HOLD_VIEW,
    HOLD_CONFIRM,
    HOLD_RELEASE,
    AUDIT,
    *WEBHOOKS,
]
API_ENDPOINTS = [e for e in ENDPOINTS if e.path.startswith("/v1/")]


# --- the region, the app, and how to ask it ------------------------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    built = build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 2, interval_s=600)
    unshared = next(
        d.model_copy(update={"sharing": Sharing(capacity=False), "updated_at": built.end})
        for d in history_descriptions(built.configs[OWN], built.origin.timestamp(), gateway="gw-01")
        if d.machine == PRIVATE
    )

    async def withdraw() -> None:
        async with SqliteStore(built.path) as store:
            await store.write_description(unshared)

    asyncio.run(withdraw())
    return built


def _with_revoked_key(api: Api) -> Api:
    """``api`` with an extra admin key under ``revoked``, revoked."""
    keys: ApiKeyStore = cast(FastAPI, api.client.app).state.keys
    made = keys.create("revoked-admin", Scope(ScopeKind.ADMIN))
    keys.revoke(made.info.key_id)
    api.keys["revoked"] = made.key
    return api


@pytest.fixture(scope="module")
def api(region: Region, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The app over the region, shared by the tests that only read."""
    with running_api(region, tmp_path_factory.mktemp("api")) as started:
        yield _with_revoked_key(started)


@pytest.fixture
def fresh_api(region: Region, tmp_path: Path) -> Iterator[Api]:
    """An app of its own (own bookings file), for tests that write bookings."""
    with running_api(region, tmp_path) as started:
        yield started


def credentials(api: Api, caller: str) -> dict[str, str]:
    """The headers ``caller`` sends."""
    if caller == "none":
        return {}
    if caller == "malformed":
        return {"Authorization": "Bearer kyo_not-a-key"}
    scope = {"own": f"factory:{OWN}", "other": f"factory:{OTHER}"}.get(caller, caller)
    return {"Authorization": f"Bearer {api.keys[scope]}"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The JSON body, or the data of the first server-sent event."""
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            data = next(
                line for line in self.body.decode().splitlines() if line.startswith("data: ")
            )
            return json.loads(data.removeprefix("data: "))
        return json.loads(self.body)

    @property
    def problem(self) -> str:
        """An error's message: each refused part as ``where: message``, else ``detail``."""
        body = self.json()
        parts = [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in body.get("errors") or []]
        return "; ".join(parts) or str(body["detail"])

    def comparable_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k != "content-length"}


def ask(
    api: Api,
    endpoint: Endpoint,
    headers: Mapping[str, str],
    *,
    factory: str = OWN,
    machine: str = MACHINE,
    query: Mapping[str, str] | None = None,
    body: Any = None,
) -> Answer:
    """Send ``endpoint``'s request for ``factory``/``machine`` (or the given query and body).

    An event stream is read up to its first event, then closed. An exception escaping the
    app is answered as what a client would see: a 500.
    """
    path, default_query = endpoint.target(factory, machine)
    content = endpoint.body if body is None else body
    try:
        with api.client.stream(
            endpoint.method,
            path,
            params=default_query if query is None else dict(query),
            # Bookings are written with If-Match (test_api.py tests it); here: any will do.
            headers={**({"If-Match": "*"} if endpoint.method == "PUT" else {}), **headers},
            json=content,
        ) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if b"\n\n" in data:
                        break
            else:
                data = response.read()
    except Exception as exc:  # what escapes the app is its 500
        return Answer(500, {}, f"{type(exc).__name__}: {exc}".encode())
    return Answer(response.status_code, dict(response.headers), data)


# --- the table against the app ---------------------------------------------------------------


def test_every_route_is_in_the_table(api: Api) -> None:
    app = cast(FastAPI, api.client.app)
    routes = {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        for method in context.methods or ()
        if method != "HEAD"  # Starlette answers HEAD wherever GET is
    }
    assert routes == {(e.method, e.path) for e in ENDPOINTS}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_each_caller_gets_its_status(api: Api, endpoint: Endpoint, caller: str) -> None:
    answer = ask(api, endpoint, credentials(api, caller))
    expected = endpoint.expected[caller]
    assert answer.status == expected, answer.body[:300]
    if expected == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.problem == "a valid API key is required (Authorization: Bearer kyo_...)"
    elif expected in {403, 404}:
        assert answer.problem


# --- tenants ----------------------------------------------------------------------------------


TENANT_PAIRS = [(a, b) for a in (OWN, OTHER, "sato-sheetmetal") for b in (OWN, OTHER) if a != b]


@pytest.mark.parametrize(("holder", "target"), TENANT_PAIRS)
@pytest.mark.parametrize("endpoint", [e for e in API_ENDPOINTS if e.names_a_factory], ids=str)
def test_another_factory_is_answered_as_a_missing_one(
    api: Api, region: Region, endpoint: Endpoint, holder: str, target: str
) -> None:
    headers = {"Authorization": f"Bearer {api.keys[f'factory:{holder}']}"}
    machine = region.configs[target].machines[0].id
    real = ask(api, endpoint, headers, factory=target, machine=machine)
    missing = ask(api, endpoint, headers, factory=GHOST, machine=machine)
    assert real.status == missing.status == 404
    assert real.body.replace(target.encode(), GHOST.encode()) == missing.body
    assert real.comparable_headers() == missing.comparable_headers()
    if endpoint.expected["admin"] < 400:  # and as the factory really missing
        by_admin = ask(api, endpoint, credentials(api, "admin"), factory=GHOST, machine=machine)
        assert (by_admin.status, by_admin.body) == (404, missing.body)


def test_a_factory_key_lists_its_own_factory_only(api: Api) -> None:
    for scope in (f"factory:{OWN}", f"factory:{OTHER}"):
        listed = ask(api, FACTORIES, {"Authorization": f"Bearer {api.keys[scope]}"})
        assert [f["factory"] for f in listed.json()] == [scope.removeprefix("factory:")]


# --- callers without a valid key ----------------------------------------------------------


def _bad_credentials(api: Api) -> dict[str, dict[str, str]]:
    key = api.keys["admin"]
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    basic = base64.b64encode(b"admin:admin").decode()
    return {
        "none": {},
        "empty": {"Authorization": ""},
        "scheme only": {"Authorization": "Bearer"},
        "not a key": {"Authorization": "Bearer not-a-key"},
        "basic": {"Authorization": f"Basic {basic}"},
        "no scheme": {"Authorization": key},
        "other scheme": {"Authorization": f"Token {key}"},
        "other header": {"X-API-Key": key},
        "wrong secret": {"Authorization": f"Bearer {flipped}"},
        "unknown id": {"Authorization": f"Bearer kyo_000000000000_{key[-43:]}"},
        "truncated": {"Authorization": f"Bearer {key[:-1]}"},
        "extended": {"Authorization": f"Bearer {key}0"},
        "huge": {"Authorization": "Bearer " + "A" * 8000},
        "revoked": {"Authorization": f"Bearer {api.keys['revoked']}"},
    }


@pytest.mark.parametrize("endpoint", API_ENDPOINTS, ids=str)
def test_without_a_valid_key_every_answer_is_the_same_401(api: Api, endpoint: Endpoint) -> None:
    """Whatever is wrong with the key, and whatever the parameters: one 401, learning
    nothing about keys, tenants or validation."""
    reference = ask(api, endpoint, {})
    assert reference.status == 401
    for name, headers in _bad_credentials(api).items():
        answer = ask(api, endpoint, headers)
        assert (answer.status, answer.body) == (401, reference.body), name
        assert answer.headers["www-authenticate"] == "Bearer", name
    nonsense = {**dict.fromkeys(endpoint.query, "-1"), "no_such_parameter": "1"}
    body = {"bookings": "-1"} if endpoint.body is not None else None
    invalid = ask(
        api, endpoint, {}, factory="Not An Id", machine="Not.An.Id", query=nonsense, body=body
    )
    assert invalid.status == 401
    # The same problem but for the path asked for, which the caller knows already.
    assert _but_instance(invalid) == _but_instance(reference)
    assert invalid.json()["instance"] == endpoint.target("Not An Id", "Not.An.Id")[0]


def _but_instance(answer: "Answer") -> dict[str, Any]:
    return {k: v for k, v in answer.json().items() if k != "instance"}


def test_a_key_in_the_query_is_not_a_key(api: Api) -> None:
    answer = ask(api, FACTORIES, {}, query={"api_key": api.keys["admin"]})
    assert answer.status == 401


# --- the platform sees no unshared machine, and no machine's figures -----------------------

NAMING_SHARED_MACHINES = {
    MACHINES.path, SEARCH.path, COVER.path, PHASED.path, HOLD.path, HOLDS.path,
}  # fmt: skip
"""Where the platform is told machine ids: a factory's shared machines, those of them that
qualified for a search (or a cover), when each could take a job, and its own holds."""


def _walk(value: Any) -> Iterator[Any]:
    yield value
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict | list):
        for child in children:
            yield from _walk(child)


@pytest.mark.parametrize(
    "endpoint", [e for e in API_ENDPOINTS if e.expected["platform"] == 200], ids=str
)
def test_the_platform_never_sees_an_unshared_machine_nor_a_machines_figures(
    api: Api, region: Region, endpoint: Endpoint
) -> None:
    machines = {m.id for config in region.configs.values() for m in config.machines}
    asked = {MACHINE} if "{machine}" in endpoint.query.values() else set()  # echoed back
    answer = ask(api, endpoint, credentials(api, "platform"))
    assert answer.status == 200
    seen = {v for v in _walk(answer.json()) if isinstance(v, str) and v in machines - asked}
    assert seen <= (machines - {PRIVATE} if endpoint.path in NAMING_SHARED_MACHINES else set())
    for value in _walk(answer.json()):
        if isinstance(value, dict) and {"factory", "by_process"} <= value.keys():
            assert not isinstance(value["machines"], list), value["factory"]  # none, or a count


@pytest.mark.parametrize("caller", ["own", "admin"])
def test_the_factory_and_admin_see_its_machines(api: Api, caller: str) -> None:
    answer = ask(api, CAPACITY, credentials(api, caller))
    machines = {m["machine"]: m for m in answer.json()["machines"]}
    assert {MACHINE, PRIVATE} <= machines.keys()
    assert machines[PRIVATE]["shared"] is False


def test_a_machine_not_shared_stays_out_of_every_platform_answer(api: Api) -> None:
    grinding = Process.CNC_GRINDING.value  # PRIVATE is the region's only grinder
    platform = credentials(api, "platform")
    by_factory = ask(api, CAPACITY, platform).json()
    by_region = ask(api, REGION, platform).json()
    found = ask(
        api, SEARCH, platform, query={"process": grinding, "hours": "1", "within_days": "7"}
    ).json()
    assert grinding not in [p["process"] for p in by_factory["by_process"]]
    assert grinding not in [p["process"] for p in by_region["by_process"]]
    assert found["candidates"] == []
    assert PRIVATE not in [m["machine"] for m in ask(api, MACHINES, platform).json()]
    own_view = ask(api, CAPACITY, credentials(api, "own")).json()
    assert grinding in [p["process"] for p in own_view["by_process"]]

    # "Who can cover machine M?" must not tell the platform M's load either: a machine
    # its factory does not share is answered as one that does not exist.
    cover = ask(api, COVER, platform, machine=PRIVATE)
    missing = ask(api, COVER, platform, machine="no-such-machine")
    assert cover.status == missing.status == 404, cover.body[:300]
    assert cover.body.replace(PRIVATE.encode(), b"no-such-machine") == missing.body


# --- bookings -------------------------------------------------------------------------------


def test_bookings_are_written_by_their_factory_alone(fresh_api: Api) -> None:
    api = fresh_api
    admin = credentials(api, "admin")

    def declared() -> Any:
        return ask(api, BOOKINGS_GET, admin).json()

    def refused(caller: str) -> None:
        for endpoint in (BOOKINGS_PUT, BOOKINGS_DELETE):
            answer = ask(api, endpoint, credentials(api, caller))
            assert answer.status == endpoint.expected[caller] >= 400, (endpoint, caller)

    before = declared()
    assert before["declared"] is False
    for caller in ("none", "platform", "other", "admin"):
        refused(caller)
        assert declared() == before, caller

    own = credentials(api, "own")
    assert ask(api, BOOKINGS_PUT, own).json()["bookings"] == declared()["bookings"]
    after = declared()
    assert after["declared"] is True
    for caller in ("none", "platform", "other", "admin"):
        refused(caller)
        assert declared() == after, caller
    assert ask(api, BOOKINGS_DELETE, own).status == 204
    assert declared() == before


def test_bookings_cannot_break_the_regional_query(fresh_api: Api) -> None:
    """One factory's bookings feed every region-wide answer: a booking the service cannot
    compute with must be refused, not stored."""
    api = fresh_api
    far = {"bookings": [{"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"}]}
    put = ask(api, BOOKINGS_PUT, credentials(api, "own"), body=far)
    regional = ask(api, REGION, credentials(api, "platform"))
    assert (put.status, regional.status) == (422, 200), regional.body[:300]


# --- bad parameters -------------------------------------------------------------------------


_ID_RULE = (
    "is not a valid id: use 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter "
    "or digit"
)


@dataclass(frozen=True)
class Bad:
    """A request with one thing wrong, and the message that must name it."""

    name: str
    endpoint: Endpoint
    message: str | Callable[[str], bool]
    query: Mapping[str, str] | None = None
    factory: str = OWN
    machine: str = MACHINE
    body: Any = None
    caller: str = "admin"

    def __str__(self) -> str:
        return self.name


BAD = [
    Bad(
        "window over 92 days",
        KPIS,
        "query.end: window longer than 92 days",
        {"start": _iso(0), "end": _iso(92.00001)},
    ),
    Bad(
        "calendar over 92 days",
        CALENDAR,
        "query.end: window longer than 92 days",
        {"start": _iso(0), "end": _iso(93)},
    ),
    Bad(
        "end before start",
        KPIS,
        "query.end: end must be after start",
        {"start": _iso(1), "end": _iso(0)},
    ),
    Bad(
        "empty window",
        CALENDAR,
        "query.end: end must be after start",
        {"start": _iso(1), "end": _iso(1)},
    ),
    Bad(
        "year 1",
        KPIS,
        "query.start: must be between 1970-01-01 and 2200-01-01",
        {"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"},
    ),
    Bad(
        "naive start",
        KPIS,
        "query.start: Input should have timezone info",
        {"start": "2026-11-02T00:00:00", "end": _iso(1)},
    ),
    Bad("no window", KPIS, "query.start: Field required; query.end: Field required", {}),
    Bad(
        "horizon 0", CAPACITY, "query.horizon_h: Input should be greater than 0", {"horizon_h": "0"}
    ),
    Bad(
        "horizon negative",
        CAPACITY,
        "query.horizon_h: Input should be greater than 0",
        {"horizon_h": "-24"},
    ),
    Bad(
        "horizon over a month",
        CAPACITY,
        "query.horizon_h: Input should be less than or equal to 744",
        {"horizon_h": "744.5"},
    ),
    Bad(
        "horizon not a number",
        CAPACITY,
        "query.horizon_h: Input should be a valid number, unable to parse string as a number",
        {"horizon_h": "a day"},
    ),
    Bad("horizon nan", CAPACITY, lambda m: m.startswith("query.horizon_h: "), {"horizon_h": "nan"}),
    Bad("horizon inf", CAPACITY, lambda m: m.startswith("query.horizon_h: "), {"horizon_h": "inf"}),
    Bad(
        "regional horizon",
        REGION,
        "query.horizon_h: Input should be less than or equal to 744",
        {"horizon_h": "10000"},
    ),
    Bad(
        "unknown process",
        SEARCH,
        lambda m: m.startswith("query.process: Input should be 'cnc_milling_3axis', "),
        {**_SEARCH, "process": "welding_by_hand"},
    ),
    Bad(
        "unknown regional process",
        REGION,
        lambda m: m.startswith("query.process: Input should be "),
        {"process": "CNC_TURNING"},
    ),
    Bad(
        "unknown material",
        SEARCH,
        lambda m: m.startswith("query.material: Input should be 'steel', "),
        {**_SEARCH, "material": "unobtainium"},
    ),
    Bad(
        "no hours", SEARCH, "query.hours: Input should be greater than 0", {**_SEARCH, "hours": "0"}
    ),
    Bad(
        "search beyond 31 days",
        SEARCH,
        "query.within_days: Input should be less than or equal to 31",
        {**_SEARCH, "within_days": "32"},
    ),
    Bad(
        "cover beyond 31 days",
        COVER,
        "query.within_days: Input should be less than or equal to 31",
        {"factory": OWN, "machine": MACHINE, "within_days": "31.5"},
    ),
    Bad(
        "uppercase factory id",
        CAPACITY,
        f"path.factory: Value error, id 'Okada' {_ID_RULE}",
        factory="Okada",
    ),
    Bad(
        "factory id too long",
        CAPACITY,
        f"path.factory: Value error, id '{'a' * 64}' {_ID_RULE}",
        factory="a" * 64,
    ),
    Bad(
        "factory id with a space",
        MACHINES,
        f"path.factory: Value error, id 'okada machining' {_ID_RULE}",
        factory="okada machining",
    ),
    Bad(
        "machine id with a dot",
        MACHINE_VIEW,
        f"path.machine: Value error, id 'cnc.01' {_ID_RULE}",
        machine="cnc.01",
    ),
    Bad(
        "machine id of the query",
        COVER,
        f"query.machine: Value error, id '-cnc' {_ID_RULE}",
        {"factory": OWN, "machine": "-cnc"},
    ),
    Bad(
        "machine filter id",
        KPIS,
        f"query.machine: Value error, id 'CNC' {_ID_RULE}",
        {**WINDOW, "machine": "CNC"},
    ),
    Bad(
        "booking over 92 days",
        BOOKINGS_PUT,
        "body.end: window longer than 92 days",
        body={"bookings": [_booking(2, 95)]},
        caller="own",
    ),
    Bad(
        "booking ends first",
        BOOKINGS_PUT,
        "body.end: end must be after start",
        body={"bookings": [_booking(3, 2)]},
        caller="own",
    ),
    Bad(
        "booking of no hours",
        BOOKINGS_PUT,
        "body.bookings.0.hours: Input should be greater than 0",
        body={"bookings": [_booking(2, 3, 0)]},
        caller="own",
    ),
    Bad(
        "booking with a naive time",
        BOOKINGS_PUT,
        "body.bookings.0.start: Input should have timezone info",
        body={"bookings": [{"start": "2026-11-04T00:00:00", "end": _iso(3)}]},
        caller="own",
    ),
    Bad(
        "booking with an unknown field",
        BOOKINGS_PUT,
        "body.bookings.0.shift: Extra inputs are not permitted",
        body={"bookings": [{**_booking(2, 3), "shift": "late"}]},
        caller="own",
    ),
    Bad(
        "too many bookings",
        BOOKINGS_PUT,
        "body.bookings: List should have at most 500 items after validation, not 501",
        body={"bookings": [_booking(2, 3)] * 501},
        caller="own",
    ),
    # Out of the calendar's range: the service must refuse them, not fail on them.
    Bad(
        "window in year 1",
        KPIS,
        lambda m: "start" in m,
        {"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"},
    ),
    Bad(
        "window in year 9999",
        KPIS,
        lambda m: "end" in m or "start" in m,
        {"start": "9999-12-30T00:00:00Z", "end": "9999-12-31T00:00:00Z"},
    ),
    Bad(
        "calendar in year 1",
        CALENDAR,
        lambda m: "start" in m,
        {"start": "0001-01-01T00:00:00Z", "end": "0001-01-02T00:00:00Z"},
    ),
]


@pytest.mark.parametrize("bad", BAD, ids=str)
def test_bad_parameters_get_422_saying_what_is_wrong(api: Api, bad: Bad) -> None:
    answer = ask(
        api,
        bad.endpoint,
        credentials(api, bad.caller),
        factory=bad.factory,
        machine=bad.machine,
        query=bad.query,
        body=bad.body,
    )
    assert answer.status == 422, answer.body[:300]
    if isinstance(bad.message, str):
        assert answer.problem == bad.message
    else:
        assert bad.message(answer.problem), answer.problem


BOUNDS = [
    ("92-day window", KPIS, {"start": _iso(0), "end": _iso(92)}, None),
    ("92-day calendar", CALENDAR, {"start": _iso(0), "end": _iso(92)}, None),
    ("31-day horizon", CAPACITY, {"horizon_h": "744"}, None),
    ("31-day search", SEARCH, {**_SEARCH, "within_days": "31"}, None),
    ("500 bookings of 92 days", BOOKINGS_PUT, None, {"bookings": [_booking(2, 94)] * 500}),
]


@pytest.mark.parametrize(("name", "endpoint", "query", "body"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_the_largest_request_allowed_gets_a_small_answer(
    fresh_api: Api, name: str, endpoint: Endpoint, query: dict[str, str] | None, body: Any
) -> None:
    caller = "own" if endpoint is BOOKINGS_PUT else "admin"
    answer = ask(fresh_api, endpoint, credentials(fresh_api, caller), query=query, body=body)
    assert answer.status == 200, answer.body[:300]
    assert len(answer.body) < 256 * 1024, name
