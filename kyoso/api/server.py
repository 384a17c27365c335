"""Serving the capacity API: the app over the configured store, on uvicorn."""

import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator
from typing import Final

import uvicorn
from fastapi import FastAPI

from kyoso.influx.client import InfluxWriter
from kyoso.store.choice import store_for
from kyoso.store.influx import InfluxStore

from .app import create_app
from .bookings import BookingStore
from .keys import ApiKeyStore
from .profile_file import ProfileFile
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
    _collect_rarely()
    server.run()


def application(settings: ApiSettings, keys: ApiKeyStore) -> FastAPI:
    """The API app; its lifespan opens the store and the bookings and runs snapshots."""
    reader = store_for(settings)
    bookings = BookingStore(settings.bookings_path)
    kept = None
    if settings.profile_cache_path is not None:
        kept = ProfileFile(settings.profile_cache_path, _source(settings))
    service = CapacityService(reader, bookings, settings.capacity, kept=kept)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(bookings.close)
            if kept is not None:
                stack.callback(kept.close)
            await reader.open()
            stack.push_async_callback(reader.close)
            stack.push_async_callback(service.close)  # first: it uses the others
            if settings.snapshots and isinstance(reader, InfluxStore):
                writer = await stack.enter_async_context(InfluxWriter(settings.influx))
                snapshots = CapacitySnapshots(
                    service, writer, settings.capacity.snapshot_interval_s
                )
                app.state.metrics.snapshots = snapshots
                task = asyncio.create_task(snapshots.run(), name="capacity-snapshots")
                stack.callback(task.cancel)
            yield

    return create_app(
        service,
        keys,
        lifespan=lifespan,
        limits=settings.limits,
        cors_origins=settings.cors_origins,
        webhooks=settings.webhooks,
    )


def _source(settings: ApiSettings) -> str:
    """The store the profiles are learnt from, as the kept profiles name it."""
    if settings.store == "influxdb":
        return f"influxdb {settings.influx.url} {settings.influx.database_prefix}"
    return f"sqlite {settings.sqlite_path.resolve()}"


_YOUNG_COLLECTED_AFTER: Final = 50_000
"""Objects made (and not yet freed) before the garbage collector looks at the young ones."""


def _collect_rarely() -> None:
    """Keep the garbage collector's pauses out of the answers' latency.

    Serving 1,000 machines at 200 requests/s, it walked everything every few seconds: 100 ms
    pauses, the API's slowest answers. What exists when the API starts (modules, the app,
    its schemas) lives as long as the process: frozen, no collection walks it again.
    What a request makes is freed when it ends (nothing here makes cycles on purpose), and
    live views last a second: looking at young objects every 50,000 instead of 700 lets
    them die young instead of filling the old generation, whose full walks became rare."""
    gc.collect()
    gc.freeze()
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, _YOUNG_COLLECTED_AFTER), *older)
