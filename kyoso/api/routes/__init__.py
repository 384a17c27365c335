"""The capacity API's routes under ``/v1``, one router per resource."""

from . import bookings, capacity, factories

ROUTERS = [factories.router, capacity.router, bookings.router]
"""In the order the OpenAPI document lists them."""

__all__ = ["ROUTERS"]
