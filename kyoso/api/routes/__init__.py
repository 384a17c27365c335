"""The capacity API's routes under ``/v1``, one router per resource."""

from . import bookings, capacity, factories, holds, phased, timeline, webhooks

ROUTERS = [
    factories.router,
    timeline.router,
    capacity.router,
    phased.router,
    bookings.router,
    holds.router,
    webhooks.router,
]
"""In the order the OpenAPI document lists them."""

__all__ = ["ROUTERS"]
