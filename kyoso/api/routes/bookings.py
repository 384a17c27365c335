"""The bookings a factory declares for its machines."""

import asyncio

from fastapi import APIRouter, HTTPException, status

from kyoso.capacity.forecast import Booking
from kyoso.contract import Id

from ..deps import (
    ERRORS,
    Caller,
    Service,
    check_window,
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

router = APIRouter(prefix="/v1", responses=ERRORS)


# --- bookings ---------------------------------------------------------------------------


@router.get("/factories/{factory}/machines/{machine}/bookings", response_model=BookingsOut)
async def get_bookings(factory: Id, machine: Id, service: Service, caller: Caller) -> BookingsOut:
    """The bookings the factory declared for the machine."""
    await own_factory(service, caller, factory)
    await machine_of(service, factory, machine)
    declared = (await asyncio.to_thread(service.bookings.declared, factory)).get(machine)
    return BookingsOut(
        factory=factory,
        machine=machine,
        declared=declared is not None,
        bookings=[BookingIn(start=b.start, end=b.end, hours=b.hours) for b in declared or []],
    )


def _factory_only(caller: Principal) -> None:
    if caller.scope.kind is not ScopeKind.FACTORY:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "bookings are declared by the factory")


@router.put(
    "/factories/{factory}/machines/{machine}/bookings",
    response_model=BookingsOut,
    responses={400: {"model": Problem, "description": "The body is not JSON."}},
)
async def put_bookings(
    *, factory: Id, machine: Id, body: BookingsIn, service: Service, caller: Caller
) -> BookingsOut:
    """Declare the machine's bookings, replacing earlier ones: its committed load is then
    the booked hours instead of the forecast. Only the factory's own key."""
    _factory_only(caller)
    await own_factory(service, caller, factory)
    await machine_of(service, factory, machine)
    for b in body.bookings:
        check_window(b.start, b.end, "body")
    bookings = [Booking(b.start, b.end, b.hours) for b in body.bookings]
    await asyncio.to_thread(service.bookings.replace, factory, machine, bookings)
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
    await asyncio.to_thread(service.bookings.clear, factory, machine)
    service.forget(factory)
