"""The bookings a factory declares for its machines."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response, status

from kyoso.capacity.forecast import Booking
from kyoso.contract import Id

from ..deps import (
    CACHED,
    ERRORS,
    Caller,
    Service,
    cached,
    check_window,
    figures_tag,
    invalid,
    machine_of,
    own_factory,
)
from ..keys import Principal, ScopeKind
from ..schemas import (
    BookingIn,
    BookingsIn,
    BookingsOut,
    Problem,
)
from ..service import CapacityService

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["bookings"])


# --- bookings ---------------------------------------------------------------------------


_PATH = "/factories/{factory}/machines/{machine}/bookings"


async def _declared(service: CapacityService, factory: str, machine: str) -> BookingsOut:
    declared = (await asyncio.to_thread(service.bookings.declared, factory)).get(machine)
    return BookingsOut(
        factory=factory,
        machine=machine,
        declared=declared is not None,
        bookings=[BookingIn(start=b.start, end=b.end, hours=b.hours) for b in declared or []],
    )


@router.get(_PATH, response_model=BookingsOut, responses=CACHED)
async def get_bookings(
    request: Request, factory: Id, machine: Id, service: Service, caller: Caller
) -> Response:
    """The bookings the factory declared for the machine, with the ETag a ``PUT`` must send
    back in ``If-Match``."""
    await own_factory(service, caller, factory)
    await machine_of(service, factory, machine)
    return cached(request, await _declared(service, factory, machine), 0)


def _factory_only(caller: Principal) -> None:
    if caller.scope.kind is not ScopeKind.FACTORY:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "bookings are declared by the factory")


@router.put(
    _PATH,
    response_model=BookingsOut,
    responses={
        400: {"model": Problem, "description": "The body is not JSON."},
        409: {"model": Problem, "description": "A booking asks more hours than attainable."},
        412: {"model": Problem, "description": "If-Match is not the declared bookings' ETag."},
        428: {"model": Problem, "description": "If-Match is missing."},
    },
)
async def put_bookings(
    *,
    factory: Id,
    machine: Id,
    body: BookingsIn,
    if_match: Annotated[
        str | None, Header(description="The ETag of GET …/bookings, or * for any.")
    ] = None,
    service: Service,
    caller: Caller,
) -> BookingsOut:
    """Declare the machine's bookings, replacing earlier ones: each books ``hours`` (all of
    its planned time when null) within ``[start, end)``, committed on top of the expected
    load of the unbooked time (docs/api.md). Only the factory's own key, with ``If-Match``
    so that two writers never overwrite each other unseen. Refused: a booking that has
    ended or has no planned time left (422), or asks more hours than the machine can give
    in its window (409, with the figures)."""
    _factory_only(caller)
    await own_factory(service, caller, factory)
    found = await machine_of(service, factory, machine)
    now = service.now()
    calendar = found.description.calendar
    for i, b in enumerate(body.bookings):  # what the request says, before what it changes
        check_window(b.start, b.end, "body")
        where = ("body", "bookings", str(i))
        if b.end <= now:
            raise invalid((*where, "end"), "the booking has ended: it cannot be booked now")
        if calendar.planned_seconds(max(b.start, now), b.end) <= 0:
            raise invalid(where, "the calendar plans no work in it from now on")
    current = figures_tag((await _declared(service, factory, machine)).model_dump_json().encode())
    if if_match is None:
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            "send If-Match with the ETag of GET …/bookings (or * to replace whatever is there)",
        )
    tags = {t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")}
    if "*" not in tags and current not in tags:
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED, "the bookings changed since: GET them again"
        )
    for i, b in enumerate(body.bookings):
        if b.hours is not None:
            planned, attainable = await service.attainable(factory, machine, b.start, b.end)
            if b.hours * 3600 > attainable + 1e-6:
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"booking {i} asks {b.hours:g} h; from now to its end the machine has "
                    f"{planned / 3600:.2f} h planned and {attainable / 3600:.2f} h attainable",
                )
    bookings = [Booking(b.start, b.end, b.hours) for b in body.bookings]
    await asyncio.to_thread(service.bookings.replace, factory, machine, bookings)
    detail = {"machine": machine, "bookings": body.model_dump(mode="json")["bookings"]}
    await asyncio.to_thread(
        service.bookings.holds.record, factory, "bookings_put", caller.key_id, detail, now
    )
    service.forget(factory)
    return BookingsOut(factory=factory, machine=machine, declared=True, bookings=body.bookings)


@router.delete(
    "/factories/{factory}/machines/{machine}/bookings", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_bookings(factory: Id, machine: Id, service: Service, caller: Caller) -> None:
    """Return the machine's committed load to the forecast."""
    _factory_only(caller)
    await own_factory(service, caller, factory)
    await machine_of(service, factory, machine)
    if await asyncio.to_thread(service.bookings.clear, factory, machine):
        await asyncio.to_thread(
            service.bookings.holds.record,
            factory,
            "bookings_cleared",
            caller.key_id,
            {"machine": machine},
            service.now(),
        )
    service.forget(factory)
