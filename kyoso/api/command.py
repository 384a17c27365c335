"""``kyoso api``: serve the capacity API, check its settings, or manage its keys."""

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from kyoso.ingest.influx import InfluxWriter
from kyoso.store import SqliteStore
from kyoso.store.influx import InfluxStore
from kyoso.validation import ConfigError

from . import keys as keys_command
from .app import create_app
from .bookings import BookingStore
from .keys import ApiKeyStore, KeyStoreError
from .service import CapacityService
from .settings import ENV_PREFIX, ApiSettings, load_settings
from .snapshots import CapacitySnapshots


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``api`` (and ``api keys``) to the ``kyoso`` command."""
    parser = commands.add_parser(
        "api",
        help="run the capacity API",
        description="Serve live capacity, KPIs and search over HTTP; options from --config "
        f"and/or {ENV_PREFIX}* environment variables.",
    )
    parser.add_argument("--config", type=Path, metavar="API.yaml", help="settings file")
    parser.add_argument("--check", action="store_true", help="validate the settings and exit")
    parser.set_defaults(run=run)
    keys_command.register(parser.add_subparsers(dest="tool", metavar="TOOL"))


def run(args: argparse.Namespace) -> int:
    """Execute ``kyoso api``."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        where = settings.influx.url if settings.store == "influxdb" else settings.sqlite_path
        print(f"ok: store {settings.store} ({where}), keys {settings.keys}, port {settings.port}")
        return 0
    try:
        keys = ApiKeyStore(settings.keys)
    except KeyStoreError as exc:
        print(f"{exc} (create one with: kyoso api keys create)", file=sys.stderr)
        return 1
    try:
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
    finally:
        keys.close()
    return 0


def application(settings: ApiSettings, keys: ApiKeyStore) -> FastAPI:
    """The API app; its lifespan opens the store and the bookings and runs snapshots."""
    store = InfluxStore(settings.influx) if settings.store == "influxdb" else None
    reader: InfluxStore | SqliteStore = store or SqliteStore(settings.sqlite_path)
    bookings = BookingStore(settings.bookings_path)
    service = CapacityService(reader, bookings, settings.capacity)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(bookings.close)
            await reader.open()
            stack.push_async_callback(reader.close)
            if settings.snapshots and store is not None:
                writer = await stack.enter_async_context(InfluxWriter(settings.influx))
                snapshots = CapacitySnapshots(
                    service, writer, settings.capacity.snapshot_interval_s
                )
                task = asyncio.create_task(snapshots.run(), name="capacity-snapshots")
                stack.callback(task.cancel)
            yield

    return create_app(service, keys, lifespan=lifespan)
