"""Serving the capacity API: the app over the configured store, on uvicorn."""

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import uvicorn
from fastapi import FastAPI

from kyoso.influx.client import InfluxWriter
from kyoso.store.choice import store_for
from kyoso.store.influx import InfluxStore

from .app import create_app
from .bookings import BookingStore
from .keys import ApiKeyStore
from .service import CapacityService
from .settings import ApiSettings
from .snapshots import CapacitySnapshots

__all__ = ["application", "serve"]


def serve(settings: ApiSettings, keys: ApiKeyStore) -> None:
    """Serve until SIGINT or SIGTERM, then return (a clean stop)."""
    server = uvicorn.Server(
        uvicorn.Config(
            application(settings, keys),
            host=settings.host,
            port=settings.port,
            log_config=None,
            proxy_headers=True,
        )
    )
    # uvicorn stops on SIGINT/SIGTERM, restores the handlers it found and raises the
    # signal again; finding these, the stop ends here as the clean exit it was.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run()


def application(settings: ApiSettings, keys: ApiKeyStore) -> FastAPI:
    """The API app; its lifespan opens the store and the bookings and runs snapshots."""
    reader = store_for(settings)
    bookings = BookingStore(settings.bookings_path)
    service = CapacityService(reader, bookings, settings.capacity)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(bookings.close)
            await reader.open()
            stack.push_async_callback(reader.close)
            if settings.snapshots and isinstance(reader, InfluxStore):
                writer = await stack.enter_async_context(InfluxWriter(settings.influx))
                snapshots = CapacitySnapshots(
                    service, writer, settings.capacity.snapshot_interval_s
                )
                app.state.metrics.snapshots = snapshots
                task = asyncio.create_task(snapshots.run(), name="capacity-snapshots")
                stack.callback(task.cancel)
            yield

    return create_app(service, keys, lifespan=lifespan, limits=settings.limits)
