"""The API's contract as client generators read it, and the server keeping to it.

- **Operation ids** are the route functions' names (``get_factory_capacity``), stable and
  short; every operation has a tag (its resource) and the tags are described.
- **Errors** are documented as they are answered: ``application/problem+json`` with the
  :class:`~kyoso.api.schemas.Problem` schema (kyoso/api/problems.py), 422 included, in
  place of FastAPI's own validation error schemas.
- **Caching headers** (``ETag``, ``Cache-Control``, ``Age``) are documented on every answer
  that carries them (those that can be 304).
- **Unknown query parameters are refused** (422 naming them and the ones the operation
  takes), so that a misspelt ``?horizon=24`` is not silently answered with the default.
- **HEAD** is answered for every ``GET`` with the headers a ``GET`` would get, no body.
- With ``gzip``, a compressed answer's ``ETag`` is weak: the bytes differ from the
  uncompressed ones, the figures (which the tag names) do not.
"""

from collections.abc import Iterator
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import Caller
from .problems import MEDIA_TYPE

__all__ = [
    "TAGS",
    "HeadAsGet",
    "WeakEtagWhenEncoded",
    "document",
    "known_query",
    "operation_id",
]

TAGS: Final = [
    {"name": "capacity", "description": "Available capacity per factory and across the region."},
    {"name": "search", "description": "Who can take an order, or a broken machine's work."},
    {"name": "events", "description": "Capacity pushed as server-sent events."},
    {"name": "factories", "description": "A factory's own machines, gateways, plans and KPIs."},
    {"name": "bookings", "description": "The work a factory has booked on its machines."},
    {"name": "webhooks", "description": "Events posted to a receiver the key subscribes."},
    {
        "name": "holds",
        "description": "Machine time the platform holds for its orders, the factory's "
        "confirmations, and the audit log of every change.",
    },
]
_PROBLEM: Final = {"$ref": "#/components/schemas/Problem"}
_CACHING_HEADERS: Final = {
    "ETag": {
        "description": "A tag of the figures; send it in If-None-Match to get 304 while "
        "they have not changed (weak, W/, when the answer is compressed).",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "private, max-age=<the API's cache bound in seconds>.",
        "schema": {"type": "string"},
    },
    "Age": {
        "description": "Seconds since the figures were computed.",
        "schema": {"type": "integer", "minimum": 0},
    },
}


def operation_id(route: APIRoute) -> str:
    """The route function's name: ``get_factory_capacity``, not FastAPI's path digest."""
    return route.name


def document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` (cached on it, as FastAPI's own is)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=TAGS,
    )
    for operation in _operations(doc):
        responses = operation["responses"]
        responses.setdefault("422", {"description": "The request was refused."})
        if "requestBody" in operation:
            responses.setdefault("400", {"description": "The body is not JSON."})
        for code, response in responses.items():
            if code[0] in "45":
                response["content"] = {MEDIA_TYPE: {"schema": _PROBLEM}}
        if "304" in responses and "200" in responses:
            responses["200"].setdefault("headers", {}).update(_CACHING_HEADERS)
    schemas = doc.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc


def _operations(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in doc.get("paths", {}).values():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "patch"):
                yield operation


def _query_names(dependant: Dependant) -> Iterator[str]:
    for field in dependant.query_params:
        yield field.alias
    for sub in dependant.dependencies:
        yield from _query_names(sub)


async def known_query(request: Request, _: Caller) -> None:
    """422 when the query names a parameter the operation does not take (for a caller
    with a key: without one, every answer is the same 401)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    taken: dict[str, frozenset[str]] = request.app.state.query_names  # per app, by operation
    known = taken.get(route.name)
    if known is None:
        known = taken[route.name] = frozenset(_query_names(route.dependant))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise RequestValidationError(
            [
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter (this operation takes: {takes})",
                    "type": "unknown_parameter",
                }
                for name in unknown
            ]
        )


class HeadAsGet:
    """Answer ``HEAD`` as ``GET`` without the body (an event stream ends after its
    headers)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def headers_only(message: Message) -> None:
            nonlocal ended
            if ended:
                return
            if message["type"] == "http.response.body":
                ended = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        async def until_ended() -> Message:
            if ended:
                return {"type": "http.disconnect"}
            return await receive()

        await self.app({**scope, "method": "GET"}, until_ended, headers_only)


class WeakEtagWhenEncoded:
    """Mark an answer's ``ETag`` weak when a middleware inside compressed it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def weakened(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if any(k.lower() == b"content-encoding" for k, _ in headers):
                    message = {
                        **message,
                        "headers": [
                            (
                                k,
                                b"W/" + v
                                if k.lower() == b"etag" and not v.startswith(b"W/")
                                else v,
                            )
                            for k, v in headers
                        ],
                    }
            await send(message)

        await self.app(scope, receive, weakened)
