"""What every route of the capacity API shares: authentication and the tenant checks, the
query parameters, the figures' shape, and cached (ETag) answers.

The tenant comes from the key, never from the path: a ``factory:<id>`` key asking for
another factory gets 404 exactly as for a factory that does not exist; a ``platform`` key
sees aggregated capacity of every factory and search, the public description of shared
machines and KPIs summed over the machines that share them, never one machine's figures
or telemetry.
"""

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel

from kyoso.capacity.forecast import CapacityFigures
from kyoso.contract.capabilities import ENVELOPE_MAX_MM

from .keys import ApiKeyStore, Lookup, Principal, ScopeKind
from .schemas import (
    Problem,
)
from .service import CapacityService, MachineView

__all__ = [
    "CACHED",
    "EARLIEST",
    "ERRORS",
    "LATEST",
    "MAX_HORIZON_H",
    "MAX_WINDOW",
    "Caller",
    "End",
    "Horizon",
    "PartSize",
    "Service",
    "Start",
    "age_s",
    "any_factory",
    "cached",
    "check_window",
    "figures_out",
    "figures_tag",
    "in_hours",
    "invalid",
    "machine_of",
    "own_factory",
    "regional",
]

MAX_WINDOW: Final = timedelta(days=92)
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)
"""Windows and bookings must lie between these (calendars expand day by day)."""
MAX_HORIZON_H: Final = 24 * 31

_bearer = HTTPBearer(auto_error=False, description="An API key: kyo_<id>_<secret>.")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No valid API key."},
    403: {"model": Problem, "description": "The key's scope does not allow this."},
    404: {"model": Problem, "description": "No such factory or machine (for this key)."},
}

CACHED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the If-None-Match ETag is the current one."}
}


def in_hours(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def figures_out(
    figures: CapacityFigures, confidence: float, history_coverage: float
) -> dict[str, Any]:
    """The figures in hours, as every capacity answer shows them."""
    return {
        "total": in_hours(figures.total_s),
        "committed": in_hours(figures.committed_s),
        "unattainable": in_hours(figures.unattainable_s),
        "available": in_hours(figures.available_s),
        "confidence": _share(confidence),
        "history_coverage": _share(history_coverage),
        "reasons": list(figures.reasons),
    }


def _share(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


def age_s(newest: datetime | None, now: datetime) -> float | None:
    """Seconds from ``newest`` (the end of a sample) to ``now`` (the response), never
    negative (a gateway's clock ahead of ours); None for no sample."""
    return None if newest is None else round(max(0.0, (now - newest).total_seconds()), 3)


_WHEN: Final = frozenset({"as_of", "data_age_s", "gap_oldest_s"})
"""When figures were computed and how old their data (or a gateway's oldest gap) was, all
growing as an answer is served again: not figures themselves."""


def figures_tag(data: bytes | dict[str, Any]) -> str:
    """A digest of a JSON answer's figures (its text, or parsed): everything but the ages
    and times of :data:`_WHEN`, at any depth, so that it changes when a figure does and only
    then."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in _WHEN}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    parsed = json.loads(data) if isinstance(data, bytes) else data
    canonical = json.dumps(strip(parsed), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def cached(
    request: Request,
    body: BaseModel | list[Any] | bytes,
    max_age_s: float,
    *,
    age_s: float | None = None,
    tag: str | None = None,
) -> Response:
    """``body`` (a model, a list of models, or JSON) as JSON with an ETag over its figures
    (:func:`figures_tag`, or ``tag`` when the caller has it already); 304 when the client
    has those figures already. ``age_s`` says how long ago its figures were computed
    (HTTP ``Age``), so that a client's cache keeps them no longer than ``max_age_s`` from
    then: no cache ever holds figures older than the API's bound."""
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, list):
        data = b"[" + b",".join(item.model_dump_json().encode() for item in body) + b"]"
    else:
        data = body.model_dump_json().encode()
    etag = f'"{tag or figures_tag(data)}"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={int(max_age_s)}",
        "Age": str(int(age_s or 0.0)),
    }
    wanted = request.headers.get("if-none-match", "")
    if etag in {tag.strip().removeprefix("W/") for tag in wanted.split(",")} or wanted == "*":
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(data, media_type="application/json", headers=headers)


async def _service(request: Request) -> CapacityService:
    """The app's service (a coroutine: FastAPI runs a plain function in a thread)."""
    service: CapacityService = request.app.state.service
    return service


async def _principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    keys: ApiKeyStore = request.app.state.keys
    found = None
    if credentials is not None:  # a thread only when the key is not known in memory
        cached = keys.authenticate_cached(credentials.credentials)
        if cached is Lookup.FILE:
            found = await asyncio.to_thread(keys.authenticate, credentials.credentials)
        else:
            found = cached
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer kyo_...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


Service = Annotated[CapacityService, Depends(_service)]
Caller = Annotated[Principal, Depends(_principal)]
Horizon = Annotated[
    float, Query(gt=0, le=MAX_HORIZON_H, description="Horizon in hours from now.", examples=[24])
]
Start = Annotated[AwareDatetime, Query(description="Window start (RFC 3339).")]
End = Annotated[AwareDatetime, Query(description="Window end, at most 92 days after start.")]


async def _part_mm(
    part_mm: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]+(\.[0-9]+)?,[0-9]+(\.[0-9]+)?,[0-9]+(\.[0-9]+)?$",
            description="The part's size x,y,z in millimetres: it must fit the machine's "
            "envelope_mm in some axis-aligned orientation.",
            examples=["120,80,40"],
        ),
    ] = None,
) -> tuple[float, float, float] | None:
    """``part_mm`` read: three sizes, each > 0 and within the contract's envelope bound."""
    if part_mm is None:
        return None
    x, y, z = (float(side) for side in part_mm.split(","))
    if not all(0 < side <= ENVELOPE_MAX_MM for side in (x, y, z)):
        raise invalid(
            ("query", "part_mm"), f"each size must be > 0 and at most {ENVELOPE_MAX_MM} mm"
        )
    return x, y, z


PartSize = Annotated[tuple[float, float, float] | None, Depends(_part_mm)]


async def own_factory(service: CapacityService, caller: Principal, factory: str) -> None:
    """404 unless ``factory`` exists and the key may see its machines (403: platform)."""
    kind = caller.scope.kind
    if kind is ScopeKind.PLATFORM:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a platform key sees aggregated capacity")
    await any_factory(service, caller, factory)


async def any_factory(service: CapacityService, caller: Principal, factory: str) -> None:
    """404 unless ``factory`` exists and the key may see its aggregates; another factory
    is answered exactly as a missing one."""
    if caller.scope.kind is ScopeKind.FACTORY and caller.factory != factory:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no factory {factory!r}")
    if factory not in await service.factories():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no factory {factory!r}")


def regional(caller: Principal) -> None:
    if caller.scope.kind is ScopeKind.FACTORY:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "regional figures need a platform key")


async def machine_of(service: CapacityService, factory: str, machine: str) -> MachineView:
    found = (await service.view(factory)).machines.get(machine)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no machine {machine!r}")
    return found


def invalid(where: tuple[str, ...], message: str) -> RequestValidationError:
    """A 422 shaped as FastAPI's own validation errors (the documented shape)."""
    return RequestValidationError([{"loc": where, "msg": message, "type": "value_error"}])


def check_window(start: datetime, end: datetime, where: str = "query") -> None:
    for name, moment in (("start", start), ("end", end)):
        if not EARLIEST <= moment <= LATEST:
            raise invalid(
                (where, name), f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}"
            )
    if end <= start:
        raise invalid((where, "end"), "end must be after start")
    if end - start > MAX_WINDOW:
        raise invalid((where, "end"), f"window longer than {MAX_WINDOW.days} days")
