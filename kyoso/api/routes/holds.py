"""Holds and orders: the platform reserves machine time, the factory confirms or releases
it, and reads every change in its audit log (the rules: kyoso/api/holds.py)."""

import asyncio
from datetime import timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status

from kyoso.contract import Id, Process

from ..deps import ERRORS, Caller, Service, any_factory, invalid, machine_of, own_factory
from ..holds import (
    Hold,
    HoldConflictError,
    HoldStatus,
    IdempotencyReusedError,
    NewHold,
    StaleCheckError,
    digest,
)
from ..keys import Principal, ScopeKind
from ..order_schemas import AuditEntryOut, AuditList, HoldIn, HoldList, HoldOut
from ..phasing import MAX_AHEAD
from ..problems import Refusal
from ..schemas import Problem
from ..service import CapacityService
from ..webhooks import WebhookHub

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["holds"])

_TRIES: Final = 3
"""Capacity checks a hold gets while other holds land on its machine meanwhile."""
HoldId = Annotated[
    str,
    Path(
        pattern=r"^hld_[0-9a-f]{16}$",
        description="The hold's id.",
        examples=["hld_3f9a0c2d4b6e8a10"],
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string (a UUID): a retry with the same key and body answers "
        "with the hold the first request made, for 24 hours; never a second hold.",
    ),
]


def _out(hold: Hold) -> HoldOut:
    return HoldOut(
        id=hold.id,
        factory=hold.factory,
        machine=hold.machine,
        process=None if hold.process is None else Process(hold.process),
        start=hold.start,
        end=hold.end,
        hours=hold.hours,
        order_ref=hold.order_ref,
        status=hold.status,
        expires_at=hold.expires_at,
        created_at=hold.created_at,
        updated_at=hold.updated_at,
    )


def _sees(caller: Principal, hold: Hold) -> bool:
    """The platform sees the holds it placed, a factory those placed with it."""
    kind = caller.scope.kind
    if kind is ScopeKind.PLATFORM:
        return hold.placed_by == caller.key_id
    return kind is ScopeKind.ADMIN or hold.factory == caller.factory


async def _candidates(service: CapacityService, body: HoldIn) -> list[str]:
    """The shared machines the hold may go to."""
    if body.machine is not None:
        found = await machine_of(service, body.factory, body.machine)
        if not found.description.sharing.capacity:  # as if it did not exist
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no machine {body.machine!r}")
        offered = {c.process for c in found.description.capabilities}
        if body.process is not None and body.process not in offered:
            raise invalid(("body", "process"), f"machine {body.machine!r} does not offer it")
        return [body.machine]
    view = await service.view(body.factory)
    machines = sorted(
        name
        for name, m in view.machines.items()
        if m.description.sharing.capacity
        and any(c.process == body.process for c in m.description.capabilities)
    )
    if not machines:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"factory {body.factory!r} shares no machine offering {body.process}",
        )
    return machines


@router.post(
    "/holds",
    status_code=status.HTTP_201_CREATED,
    response_model=HoldOut,
    responses={
        409: {"model": Problem, "description": "No machine has the hours in the window."},
    },
)
async def create_hold(
    *,
    request: Request,
    response: Response,
    body: HoldIn,
    idempotency_key: IdempotencyKey = None,
    service: Service,
    caller: Caller,
) -> HoldOut:
    """Hold ``hours`` of work within ``[start, end)`` on a machine (or on the machine of
    the factory offering ``process`` with the most room there) for the platform's order:
    committed load on that machine at once, on top of the factory's own, until the factory
    confirms it (an order) or releases it, or it expires. Refused with 409 and the figures
    when no machine has the hours available in the window, holds placed before included.
    Only a platform key; ``Location`` names the hold."""
    if caller.scope.kind is not ScopeKind.PLATFORM:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "holds are placed by the platform")
    await any_factory(service, caller, body.factory)
    now = service.now()
    if body.end <= now:
        raise invalid(("body", "end"), "the window has passed")
    if body.end > now + MAX_AHEAD:
        raise invalid(("body", "end"), f"at most {MAX_AHEAD.days} days ahead")
    holds = service.bookings.holds
    asked = digest(body.model_dump(mode="json"))
    replay = None if idempotency_key is None else (idempotency_key, asked)
    try:
        if replay is not None:
            earlier = await asyncio.to_thread(holds.replayed, caller.key_id, *replay, now)
            if earlier is not None:
                return _replayed(response, earlier)
        machines = await _candidates(service, body)
        for _ in range(_TRIES):
            counted = {
                m: (await asyncio.to_thread(holds.held_on, body.factory, m, now))[0]
                for m in machines
            }
            room = await service.phasing.room(body.factory, machines, body.start, body.end)
            best = max(machines, key=lambda m: room[m])
            if room[best] + 1e-6 < body.hours * 3600:
                raise Refusal(
                    status.HTTP_409_CONFLICT,
                    f"{body.hours:g} h asked; the most any machine has available in the "
                    f"window is {room[best] / 3600:.2f} h ({best})",
                    requested_h=body.hours,
                    available_h=round(room[best] / 3600, 4),
                )
            new = NewHold(
                body.factory, best, body.process, body.start, body.end, body.hours,
                body.order_ref, now + timedelta(seconds=body.expires_in_s),
            )  # fmt: skip
            try:
                hold, replayed = await asyncio.to_thread(
                    holds.create,
                    new,
                    caller=caller.key_id,
                    counted=counted[best],
                    now=now,
                    idempotency=replay,
                )
            except StaleCheckError:
                continue
            if replayed:
                return _replayed(response, hold)
            break
        else:
            raise HTTPException(
                status.HTTP_409_CONFLICT, "the machines got other holds meanwhile: try again"
            )
    except IdempotencyReusedError as exc:
        raise invalid(("header", "Idempotency-Key"), str(exc)) from exc
    except HoldConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    service.forget(body.factory)
    await _hub(request).tell_hold("hold.created", hold)
    response.headers["Location"] = f"/v1/holds/{hold.id}"
    return _out(hold)


def _hub(request: Request) -> WebhookHub:
    hub: WebhookHub = request.app.state.webhooks
    return hub


def _replayed(response: Response, hold: Hold) -> HoldOut:
    response.headers["Location"] = f"/v1/holds/{hold.id}"
    response.headers["Idempotent-Replayed"] = "true"
    return _out(hold)


@router.get("/holds", response_model=HoldList)
async def list_holds(
    *,
    status_: Annotated[
        HoldStatus | None, Query(alias="status", description="Only holds in this state.")
    ] = None,
    factory: Annotated[Id | None, Query(description="Only holds at this factory.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 100,
    service: Service,
    caller: Caller,
) -> list[HoldOut]:
    """Holds and orders, newest first: those the platform key placed; those placed with
    a factory key's factory."""
    kind = caller.scope.kind
    if kind is ScopeKind.FACTORY:
        if factory is not None and factory != caller.factory:
            return []
        factory = caller.factory
    found = await asyncio.to_thread(
        service.bookings.holds.listed,
        service.now(),
        factory=factory,
        placed_by=caller.key_id if kind is ScopeKind.PLATFORM else None,
        status=status_,
        limit=limit,
    )
    return [_out(h) for h in found]


async def _visible(service: CapacityService, caller: Principal, hold_id: str) -> Hold:
    found = await asyncio.to_thread(service.bookings.holds.get, hold_id, service.now())
    if found is None or not _sees(caller, found):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no hold {hold_id!r}")
    return found


@router.get("/holds/{hold_id}", response_model=HoldOut)
async def get_hold(hold_id: HoldId, service: Service, caller: Caller) -> HoldOut:
    """One hold or order (another key's: 404)."""
    return _out(await _visible(service, caller, hold_id))


async def _change(
    request: Request, service: CapacityService, caller: Principal, hold_id: str,
    action: Literal["confirm", "release"],
) -> HoldOut:  # fmt: skip
    hold = await _visible(service, caller, hold_id)
    if action == "confirm" and caller.scope.kind is not ScopeKind.FACTORY:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a hold is confirmed by its factory")
    if caller.scope.kind is ScopeKind.ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the factory or the platform decides")
    try:
        changed = await asyncio.to_thread(
            service.bookings.holds.change, hold_id, action, caller.key_id, service.now()
        )
    except HoldConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    service.forget(hold.factory)
    await _hub(request).tell_hold(
        "hold.confirmed" if action == "confirm" else "hold.released", changed
    )
    return _out(changed)


_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "Not in a state that allows it."}
}


@router.post("/holds/{hold_id}/confirm", response_model=HoldOut, responses=_CONFLICT)
async def confirm_hold(
    request: Request, hold_id: HoldId, service: Service, caller: Caller
) -> HoldOut:
    """The factory takes the order: the hold no longer expires (its key only)."""
    return await _change(request, service, caller, hold_id, "confirm")


@router.post("/holds/{hold_id}/release", response_model=HoldOut, responses=_CONFLICT)
async def release_hold(
    request: Request, hold_id: HoldId, service: Service, caller: Caller
) -> HoldOut:
    """Give the time back: the factory declines or cancels, or the platform withdraws
    the hold it placed."""
    return await _change(request, service, caller, hold_id, "release")


@router.get("/factories/{factory}/audit", response_model=AuditList)
async def get_audit_log(
    *,
    factory: Id,
    after: Annotated[int, Query(ge=0, description="Entries after this seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 100,
    service: Service,
    caller: Caller,
) -> list[AuditEntryOut]:
    """Every change to the factory's bookings, holds and orders, oldest first: page with
    ``after`` the last ``seq`` seen."""
    await own_factory(service, caller, factory)
    entries = await asyncio.to_thread(
        service.bookings.holds.audit, factory, service.now(), after=after, limit=limit
    )
    return [
        AuditEntryOut(
            seq=e.seq, at=e.at, hold=e.hold, action=e.action, actor=e.actor, detail=e.detail
        )
        for e in entries
    ]
