"""The API's contract as a client generator reads it, and the server keeping to it: stable
operation ids and tags, named and described schemas with examples, enums, documented
headers, RFC 9457 problems for every error, unknown query parameters refused, HEAD, gzip
and CORS (kyoso/api/openapi.py, kyoso/api/problems.py)."""

import gzip
from typing import Any, cast, get_args

import pytest
from apikit import Api, build_region, running_api
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kyoso.api.app import create_app
from kyoso.api.openapi import TAGS
from kyoso.api.schemas import ProblemCode
from kyoso.capacity.forecast import Reason

OPERATIONS = {
    ("get", "/v1/factories"): "list_factories",
    ("get", "/v1/factories/{factory}/machines"): "list_machines",
    ("get", "/v1/factories/{factory}/gateways"): "list_gateways",
    ("get", "/v1/factories/{factory}/machines/{machine}"): "get_machine",
    ("get", "/v1/factories/{factory}/machines/{machine}/calendar"): "get_planned",
    ("get", "/v1/factories/{factory}/kpis"): "get_kpis",
    ("get", "/v1/factories/{factory}/timeline"): "get_timeline",
    ("get", "/v1/factories/{factory}/kpis/shifts"): "get_shift_utilization",
    ("get", "/v1/factories/{factory}/capacity"): "get_factory_capacity",
    ("get", "/v1/capacity"): "get_region_capacity",
    ("get", "/v1/search"): "search_capacity",
    ("get", "/v1/search/cover"): "find_cover",
    ("get", "/v1/events"): "stream_capacity_events",
    ("get", "/v1/factories/{factory}/machines/{machine}/bookings"): "get_bookings",
    ("put", "/v1/factories/{factory}/machines/{machine}/bookings"): "put_bookings",
    ("delete", "/v1/factories/{factory}/machines/{machine}/bookings"): "delete_bookings",
    ("get", "/v1/factories/{factory}/capacity/phased"): "get_factory_phased_capacity",
    ("get", "/v1/capacity/phased"): "get_region_phased_capacity",
    ("post", "/v1/holds"): "create_hold",
    ("get", "/v1/holds"): "list_holds",
    ("get", "/v1/holds/{hold_id}"): "get_hold",
    ("post", "/v1/holds/{hold_id}/confirm"): "confirm_hold",
    ("post", "/v1/holds/{hold_id}/release"): "release_hold",
    ("get", "/v1/factories/{factory}/audit"): "get_audit_log",
    ("post", "/v1/webhooks"): "create_webhook",
    ("get", "/v1/webhooks"): "list_webhooks",
    ("get", "/v1/webhooks/{webhook_id}"): "get_webhook",
    ("delete", "/v1/webhooks/{webhook_id}"): "delete_webhook",
    ("get", "/v1/webhooks/{webhook_id}/deliveries"): "list_webhook_deliveries",
}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("openapi")
    region = build_region(workdir / "store.sqlite3", 2)
    with running_api(region, workdir) as api:
        yield api


@pytest.fixture(scope="module")
def document(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m, path): op for path, item in doc["paths"].items() for m, op in item.items()}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# --- the document -------------------------------------------------------------------------


def test_operations_have_stable_ids_and_a_described_tag(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert {key: op["operationId"] for key, op in operations.items()} == OPERATIONS
    described = {tag["name"] for tag in document["tags"] if tag.get("description")}
    assert described == {tag["name"] for tag in TAGS}
    for key, op in operations.items():
        assert len(op["tags"]) == 1, key
        assert op["tags"][0] in described, key
        assert op.get("summary"), key
        assert op.get("description"), key


def test_every_answer_is_a_named_schema(document: dict[str, Any]) -> None:
    """A generator names a type after its schema: no inline arrays or objects."""
    for key, op in _operations(document).items():
        for code, response in op["responses"].items():
            for media, content in response.get("content", {}).items():
                if media in ("application/json", PROBLEM):
                    assert set(content["schema"]) == {"$ref"}, (key, code, media)


def test_every_property_is_described_with_an_example(document: dict[str, Any]) -> None:
    """Objects nested by reference carry their examples in their own schemas."""
    lacking = []
    for name, schema in document["components"]["schemas"].items():
        for prop, spec in schema.get("properties", {}).items():
            nested = (
                "$ref" in spec
                or "$ref" in spec.get("items", {})
                or any(
                    "$ref" in option or "$ref" in option.get("items", {})
                    for option in spec.get("anyOf", [])
                )
            )
            if "description" not in spec or not (nested or spec.get("examples")):
                lacking.append(f"{name}.{prop}")
    assert lacking == []


def test_states_reasons_statuses_and_codes_are_enums(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    reasons = schemas["RegionProcessOut"]["properties"]["reasons"]["items"]
    assert set(reasons["enum"]) == set(get_args(Reason))
    assert set(schemas["Problem"]["properties"]["code"]["enum"]) == set(get_args(ProblemCode))
    gateway = schemas["GatewayOut"]["properties"]
    assert set(gateway["status"]["enum"]) == {"online", "offline"}
    assert set(gateway["reason"]["enum"]) == {"connected", "shutdown", "connection_lost"}
    state = schemas["MachineOut"]["properties"]["state"]["anyOf"][0]
    assert schemas[state["$ref"].rsplit("/", 1)[1]]["enum"]


def test_errors_and_caching_headers_are_documented(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for key, op in _operations(document).items():
        responses = op["responses"]
        assert {"401", "403", "404", "422", "429"} <= set(responses), key
        for code, response in responses.items():
            if code[0] in "45":
                assert response["content"] == {PROBLEM: {"schema": _ref("Problem")}}, (key, code)
        if "304" in responses:
            assert {"ETag", "Cache-Control", "Age"} <= set(responses["200"]["headers"]), key
    assert (
        "Retry-After" in _operations(document)["get", "/v1/capacity"]["responses"]["429"]["headers"]
    )


# --- the server keeping to it -------------------------------------------------------------


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:kyoso:problem:{code}"
    assert (body["status"], body["code"]) == (status, code)
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    return body


def test_every_error_is_a_problem(api: Api) -> None:
    client, platform = api.client, api.headers("platform")
    unauthorized = client.get("/v1/capacity")
    _problem(unauthorized, 401, "unauthorized")
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    _problem(
        client.get("/v1/factories/okada-machining/gateways", headers=platform), 403, "forbidden"
    )
    missing = _problem(
        client.get("/v1/factories/nowhere/capacity", headers=platform), 404, "not_found"
    )
    assert "nowhere" in missing["detail"]
    _problem(client.get("/v1/no-such-thing", headers=platform), 404, "not_found")
    _problem(client.post("/v1/capacity", headers=platform), 405, "method_not_allowed")
    refused = _problem(
        client.get("/v1/capacity", params={"horizon_h": 9999}, headers=platform),
        422,
        "invalid_request",
    )
    [error] = refused["errors"]
    assert error["loc"] == ["query", "horizon_h"]
    assert error["type"] == "less_than_equal"
    assert "horizon_h" in refused["detail"]


def test_a_problem_title_speaks_the_asked_language_its_code_does_not(api: Api) -> None:
    platform = api.headers("platform")
    asked = {
        "ja-JP,ja;q=0.9,en;q=0.8": ("見つかりません", "ja"),
        "en-US,en;q=0.9": ("Not Found", "en"),
        "fr-FR, ja;q=0.5": ("見つかりません", "ja"),  # no French: Japanese is the next asked
        "de": ("Not Found", "en"),  # nothing asked is known: English
    }
    for accept, (title, lang) in asked.items():
        response = api.client.get(
            "/v1/factories/nowhere/capacity", headers={**platform, "Accept-Language": accept}
        )
        body = _problem(response, 404, "not_found")
        assert (body["title"], response.headers["content-language"]) == (title, lang), accept
        assert "accept-language" in response.headers["vary"].lower()
    refused = api.client.get(
        "/v1/capacity", params={"horizon_h": 9999}, headers={**platform, "Accept-Language": "ja"}
    )
    assert _problem(refused, 422, "invalid_request")["title"] == "リクエストの内容が不正です"


def test_an_unknown_query_parameter_is_refused_not_ignored(api: Api) -> None:
    platform = api.headers("platform")
    asked = api.client.get("/v1/capacity", params={"horizon": 24}, headers=platform)
    body = _problem(asked, 422, "invalid_request")
    [error] = body["errors"]
    assert error["loc"] == ["query", "horizon"]
    assert error["type"] == "unknown_parameter"
    assert "horizon_h" in error["msg"]
    assert "process" in error["msg"]
    search = {"process": "cnc_milling_3axis", "hours": 10, "within_days": 7, "machines": 2}
    [error] = _problem(api.client.get("/v1/search", params=search, headers=platform), 422,
                       "invalid_request")["errors"]  # fmt: skip
    assert error["loc"] == ["query", "machines"]
    known = {k: v for k, v in search.items() if k != "machines"}
    assert api.client.get("/v1/search", params=known, headers=platform).status_code == 200


def test_head_answers_a_gets_headers_without_its_body(api: Api) -> None:
    platform = api.headers("platform")
    for path in ("/v1/capacity", "/v1/factories"):
        got = api.client.get(path, headers={**platform, "Accept-Encoding": "identity"})
        head = api.client.head(path, headers={**platform, "Accept-Encoding": "identity"})
        assert (head.status_code, head.content) == (200, b"")
        for name in ("etag", "content-length", "content-type", "cache-control"):
            assert head.headers[name] == got.headers[name], (path, name)
    assert api.client.head("/v1/capacity").status_code == 401
    events = api.client.head("/v1/events", headers=platform)
    assert (events.status_code, events.content) == (200, b"")
    assert events.headers["content-type"].startswith("text/event-stream")


def test_gzip_when_asked_with_a_weak_etag(api: Api) -> None:
    platform = api.headers("platform")
    plain = api.client.get("/v1/capacity", headers={**platform, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    tag = plain.headers["etag"]
    assert not tag.startswith("W/")
    raw = api.client.stream("GET", "/v1/capacity", headers={**platform, "Accept-Encoding": "gzip"})
    with raw as zipped:
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["etag"] == f"W/{tag}"
        assert "accept-encoding" in zipped.headers["vary"].lower()
        assert gzip.decompress(b"".join(zipped.iter_raw())) == plain.content
    again = api.client.get("/v1/capacity", headers={**platform, "If-None-Match": f"W/{tag}"})
    assert again.status_code == 304


def test_cors_only_for_the_configured_origins(api: Api) -> None:
    preflight = {"Origin": "https://platform.example", "Access-Control-Request-Method": "GET"}
    preflight["Access-Control-Request-Headers"] = "authorization"
    closed = api.client.options("/v1/capacity", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    keys = cast(FastAPI, api.client.app).state.keys
    app = create_app(api.service, keys, cors_origins=["https://platform.example"])
    with TestClient(app) as client:
        opened = client.options("/v1/capacity", headers=preflight)
        assert opened.status_code == 200
        assert opened.headers["access-control-allow-origin"] == "https://platform.example"
        assert "authorization" in opened.headers["access-control-allow-headers"].lower()
        other = client.options(
            "/v1/capacity", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        answer = client.get(
            "/v1/capacity",
            headers={**api.headers("platform"), "Origin": "https://platform.example"},
        )
        assert answer.headers["access-control-allow-origin"] == "https://platform.example"
        assert "etag" in answer.headers["access-control-expose-headers"].lower()
