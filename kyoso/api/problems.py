"""Every error of the capacity API as RFC 9457 problem details (``application/problem+json``).

A problem names what went wrong twice: ``code``, a stable machine-readable word a client
branches on (``not_found``, ``invalid_request``, ...), and ``title``, the same in words for
a person; ``detail`` says what happened this time and ``instance`` which request it was.
``type`` is ``urn:kyoso:problem:<code>``. The ``title`` is in the language the request's
``Accept-Language`` prefers (Japanese or English, from the ``problem`` section of the
message catalogs; ``Content-Language`` says which); ``code`` and ``type`` never change with
it. A refused request (422) lists each refused part
in ``errors`` (where, what, why), as FastAPI's own validation errors did in ``detail``.

The handlers cover what the routes raise (:class:`fastapi.HTTPException`, with its
headers: ``WWW-Authenticate``, ``Retry-After``), what FastAPI and Starlette raise
themselves (validation, an unknown path, a method not allowed) and any other exception
(500, its traceback in the log, never in the answer).
"""

import logging
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kyoso.i18n import negotiate, text

from .schemas import ProblemCode

__all__ = ["CODES", "MEDIA_TYPE", "Refusal", "install", "problem"]

log = logging.getLogger(__name__)

MEDIA_TYPE: Final = "application/problem+json"
CODES: Final[dict[int, ProblemCode]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    428: "precondition_required",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}
"""The ``code`` of each status the API answers with; another status gets ``error``."""


class Refusal(StarletteHTTPException):
    """An HTTP error whose problem says more than its detail: ``members`` (RFC 9457
    extension members, declared in :class:`~kyoso.api.schemas.Problem`) are added to it."""

    def __init__(self, status: int, detail: str, **members: Any) -> None:
        super().__init__(status, detail)
        self.members = members


class _ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem(
    request: Request,
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
    members: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The problem answer of ``status`` for ``request`` (with ``members`` added)."""
    code: ProblemCode = CODES.get(status, "error")
    lang = negotiate(request.headers.get("accept-language"))
    body: dict[str, Any] = {
        "type": f"urn:kyoso:problem:{code}",
        "title": text(f"problem.{code}", lang, status=status),
        "status": status,
        "code": code,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors is not None:
        body["errors"] = errors
    body.update(members or {})
    answer = _ProblemResponse(body, status_code=status, headers=headers)
    answer.headers["Content-Language"] = lang
    answer.headers.add_vary_header("Accept-Language")
    return answer


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    members = exc.members if isinstance(exc, Refusal) else None
    return problem(request, exc.status_code, str(exc.detail), headers=exc.headers, members=members)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "value_error")),
        }
        for error in exc.errors()
    ]
    where = ", ".join(".".join(e["loc"]) + f": {e['msg']}" for e in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return problem(request, 422, f"the request was refused: {where}{more}", errors=errors)


async def _value_error(request: Request, exc: Exception) -> JSONResponse:
    """A value the route could not take (a figure out of range, say): refused as input."""
    return await _invalid(request, RequestValidationError([{"loc": [], "msg": str(exc)}]))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "the server failed to answer; the failure is logged")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as a problem."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ValueError, _value_error)
    app.add_exception_handler(Exception, _unexpected)
