"""schemathesis against the API's own OpenAPI document, in process, as admin and as platform.

For every operation of the document the app serves, schemathesis' Hypothesis strategies
generate valid (positive) and invalid (negative) requests; each is sent to the app in
process (ASGI, through Starlette's TestClient) with an ``admin`` or a ``platform`` key,
and its answer is checked by schemathesis: no server error, a documented status code and
content type, a body and headers that match the document. Path and query ids are drawn
from the region's real factories and machines most of the time, so the checks also see
200s, not only 404s. An event stream is read up to its first event.

The cases are the same on every run (``derandomize``), so the gate does not flicker; raise
``MAX_EXAMPLES`` locally to search further. The whole file runs in well under a minute.

Why cases are not sent with ``case.call()``: schemathesis 4.32 sends ASGI cases through
``requests``, which in this environment runs on urllib3-future (installed in place of
urllib3 by niquests, a dependency of grafana-client); its pool manager has no
``pools.keys()`` and every call fails with AttributeError before reaching the app. Its
pytest integration (``schemathesis.pytest.from_fixture``) does not run on pytest 9 either
(it sets ``Function._nodeid``). Generation and checks are schemathesis' own; only the
transport is the TestClient.
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.checks
from apikit import Api, Region, build_region, running_api
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, Case, GenerationMode

from kyoso.api.routes import ROUTERS

MAX_EXAMPLES = 50
"""Cases per operation, generation mode and key (about 30 s for the file on 2 cores)."""

SCOPES = ("admin", "platform")
CHECKS = [
    getattr(schemathesis.checks, name)
    for name in (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    )
]
OPERATIONS = [
    (method, route.path)
    for router in ROUTERS
    for route in router.routes
    if isinstance(route, APIRoute)
    for method in sorted(route.methods or ())
]
"""Every operation of the API (the test of the document's paths below keeps this honest)."""


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 2, interval_s=600)


@pytest.fixture(scope="module")
def api(region: Region, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(region, tmp_path_factory.mktemp("api")) as started:
        yield started


@pytest.fixture(scope="module")
def schema(api: Api, region: Region) -> BaseSchema:
    """The document the app serves, with ids of the region to draw from."""
    factories = sorted(region.simulations)
    machines = sorted({m.id for c in region.configs.values() for m in c.machines})
    real_ids = {
        f"{where}.{name}": {"dictionary": f"{name}s", "probability": 0.8}
        for where in ("path", "query")
        for name in ("factory", "machine")
    }
    config = schemathesis.Config.from_dict(
        {
            "dictionaries": {
                "factorys": {"values": factories},
                "machines": {"values": machines},
            },
            "parameters": real_ids,
        }
    )
    document = api.client.get("/openapi.json").json()
    return schemathesis.openapi.from_dict(document, config=config)


def send(api: Api, case: Case[Any], scope: str, **headers: str) -> httpx.Response:
    """``case`` sent to the app with ``scope``'s key; an event stream up to its first
    event. An exception escaping the app comes back as the 500 a client would see."""
    sent = api.headers(scope) | headers
    request = case.as_transport_kwargs(base_url=str(api.client.base_url), headers=sent)
    content: dict[str, Any] = {}
    if "json" in request:
        content["json"] = request["json"]
    elif "data" in request:
        content["content"] = request["data"]
    try:
        with api.client.stream(
            request["method"],
            request["url"],
            params=request.get("params"),
            headers=request["headers"],
            **content,
        ) as streamed:
            if streamed.headers.get("content-type", "").startswith("text/event-stream"):
                body = b""
                for chunk in streamed.iter_bytes():
                    body += chunk
                    if b"\n\n" in body:
                        break
            else:  # as sent (gzip-compressed, say): the answer below decodes it
                body = b"".join(streamed.iter_raw())
    except Exception as exc:  # what escapes the app is its 500
        failed = httpx.Request(request["method"], request["url"])
        answer = httpx.Response(500, text=f"{type(exc).__name__}: {exc}", request=failed)
        answer.elapsed = timedelta(0)
        return answer
    answer = httpx.Response(
        streamed.status_code, headers=streamed.headers, content=body, request=streamed.request
    )
    answer.elapsed = streamed.elapsed
    return answer


def test_the_document_lists_every_operation(schema: BaseSchema) -> None:
    documented = {(method.upper(), path) for path, methods in schema.items() for method in methods}
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("operation", OPERATIONS, ids=" ".join)
def test_answers_conform_to_the_document(
    api: Api, schema: BaseSchema, operation: tuple[str, str], mode: GenerationMode, scope: str
) -> None:
    method, path = operation

    @given(case=schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def conforms(case: Case[Any]) -> None:
        case.validate_response(send(api, case, scope), checks=CHECKS)

    conforms()


OWN = {"factory": "okada-machining"}
MACHINE = {**OWN, "machine": "cnc-01"}
WINDOW = {"start": "2026-11-02T00:00:00Z", "end": "2026-11-04T00:00:00Z"}
CONDITIONAL = [
    ("/v1/factories", {}, {}),
    ("/v1/factories/{factory}/machines", OWN, {}),
    ("/v1/factories/{factory}/gateways", OWN, {}),
    ("/v1/factories/{factory}/machines/{machine}", MACHINE, {}),
    ("/v1/factories/{factory}/machines/{machine}/calendar", MACHINE, WINDOW),
    ("/v1/factories/{factory}/kpis", OWN, WINDOW),
    ("/v1/factories/{factory}/capacity", OWN, {"horizon_h": 24}),
    ("/v1/capacity", {}, {"horizon_h": 24}),
    ("/v1/search", {}, {"process": "cnc_turning", "hours": 8, "within_days": 7}),
    ("/v1/search/cover", {}, {**MACHINE, "for_h": 24}),
]
"""A well-formed request to each operation that answers with an ETag."""


@pytest.mark.parametrize(
    ("path", "path_parameters", "query"), CONDITIONAL, ids=[c[0] for c in CONDITIONAL]
)
def test_conditional_answers_conform_to_the_document(
    api: Api,
    schema: BaseSchema,
    path: str,
    path_parameters: dict[str, str],
    query: dict[str, Any],
) -> None:
    """Polling with If-None-Match is how the platform is meant to ask (issue 5): its 304
    is an answer of the API like any other."""
    case = schema[path]["GET"].Case(path_parameters=path_parameters, query=query)
    first = send(api, case, "admin")
    case.validate_response(first, checks=CHECKS)
    again = send(api, case, "admin", **{"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    case.validate_response(again, checks=CHECKS)
