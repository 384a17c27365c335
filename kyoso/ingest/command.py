"""``kyoso ingest``: run the ingest, check its settings, or look at its dead letters."""

import argparse
import asyncio
import gc
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from kyoso.i18n import DEFAULT, Lang, text
from kyoso.store import SqliteStore
from kyoso.store.choice import store_for
from kyoso.store.influx import InfluxStore
from kyoso.validation import explain

from .config import ENV_PREFIX, IngestConfigError, IngestSettings, load_settings
from .deadletter import DeadLetter, DeadLetterStore
from .http import health_server
from .service import Ingest

GC_YOUNG_THRESHOLD = 20_000
"""Allocations between young collections (CPython's default is 700)."""


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``ingest`` (and ``ingest dead-letters``) to the ``kyoso`` command, its help in
    ``lang``."""
    parser = commands.add_parser(
        "ingest",
        help=text("cli.ingest.help", lang),
        description=text("cli.ingest.description", lang, prefix=ENV_PREFIX),
    )
    parser.add_argument(
        "--config", type=Path, metavar="INGEST.yaml", help=text("cli.common.settings_file", lang)
    )
    parser.add_argument(
        "--check", action="store_true", help=text("cli.common.check_settings", lang)
    )
    parser.set_defaults(run=run, lang=lang)
    tools = parser.add_subparsers(dest="tool", metavar=text("cli.metavar.tool", lang))
    letters = tools.add_parser("dead-letters", help=text("cli.ingest.dead_letters.help", lang))
    letters.add_argument("id", nargs="?", type=int, help=text("cli.ingest.dead_letters.id", lang))
    letters.add_argument("--reason", help=text("cli.ingest.dead_letters.reason", lang))
    letters.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="ID",
        help=text("cli.ingest.dead_letters.after", lang),
    )
    letters.add_argument(
        "--limit", type=int, default=50, help=text("cli.ingest.dead_letters.limit", lang)
    )
    letters.add_argument(
        "--raw", action="store_true", help=text("cli.ingest.dead_letters.raw", lang)
    )
    letters.set_defaults(run=run_dead_letters)


def _settings(args: argparse.Namespace) -> IngestSettings | None:
    try:
        return load_settings(args.config)
    except IngestConfigError as exc:
        print(explain(exc, args.lang), file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Execute ``kyoso ingest``."""
    settings = _settings(args)
    if settings is None:
        return 2
    if args.check:
        where = settings.influx.url if settings.store == "influxdb" else settings.sqlite_path
        print(
            f"ok: broker {settings.mqtt.host}:{settings.mqtt.port} as {settings.mqtt.session_id},"
            f" store {settings.store} ({where}), dead letters {settings.dead_letter_path}"
        )
        return 0
    _tune_gc()
    asyncio.run(_serve(settings))
    return 0


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Decoded messages are freed by reference counting (they hold no cycles); the collector
    only adds work: each young collection is triggered by allocations, of which one sample
    makes dozens, and each full one walks every object alive, the modules and pydantic
    schemas imported at start included. Freezing what exists now takes those out of every
    scan, and a higher young threshold collects less often. bench/ingest.py measured it.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


def ingest_store(settings: IngestSettings) -> InfluxStore | SqliteStore:
    """The store the settings name, not yet opened, whose InfluxDB writer makes one attempt
    per request: the ingest owns the retries (``batch.retry_min_s`` … ``retry_max_s``,
    never before a ``Retry-After``), so its ``store_failing_seconds`` counts from the first
    failure and no timer below it doubles the wait."""
    influx = settings.influx.model_copy(update={"max_retry_time_s": 0.0})
    return store_for(settings.model_copy(update={"influx": influx}))


async def _serve(settings: IngestSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    dead_letters = DeadLetterStore(settings.dead_letter_path)
    try:
        async with ingest_store(settings) as store:
            ingest = Ingest(settings, store, dead_letters)
            endpoint = health_server(ingest, settings.http)
            await endpoint.start()
            try:
                await ingest.run(stop)
            finally:
                await endpoint.stop()
    finally:
        dead_letters.close()


def run_dead_letters(args: argparse.Namespace) -> int:
    """Execute ``kyoso ingest dead-letters``."""
    settings = _settings(args)
    if settings is None:
        return 2
    path = settings.dead_letter_path
    if not path.exists():
        print(f"no dead-letter store at {path}", file=sys.stderr)
        return 1
    store = DeadLetterStore(path)
    try:
        if args.id is None:
            counts = store.counts()
            print(f"{sum(counts.values())} dead letters: " + json.dumps(counts))
            for letter in store.letters(reason=args.reason, limit=args.limit, after=args.after):
                print(_summary(letter))
            return 0
        found = store.get(args.id)
        if found is None:
            print(f"no dead letter {args.id}", file=sys.stderr)
            return 1
        if args.raw:
            sys.stdout.buffer.write(found.payload)
            return 0
        print(_summary(found))
        print(f"detail: {found.detail}")
        kept = f"{len(found.payload)} of {found.payload_size} bytes"
        try:
            print(f"payload ({kept}):\n{found.payload.decode()}")
        except UnicodeDecodeError:
            print(f"payload ({kept}, not UTF-8):\n{found.payload.hex(' ', 2)}")
        return 0
    finally:
        store.close()


def _summary(letter: DeadLetter) -> str:
    when = datetime.fromtimestamp(letter.received_at, UTC).isoformat(timespec="seconds")
    return f"{letter.id:>8}  {when}  {letter.reason:<16} {letter.topic}  {letter.detail[:120]}"
