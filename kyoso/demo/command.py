"""``kyoso demo``: the whole system in one command (see :mod:`kyoso.demo.runner`)."""

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from kyoso.influx.client import InfluxConfig
from kyoso.simulators.command import parse_duration


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``demo`` to the ``kyoso`` command."""
    parser = commands.add_parser(
        "demo",
        help="run broker, demo factories, gateways, ingest and API in one process",
        description="Everything in one process with nothing else installed: an embedded "
        "MQTT broker, the demo factories with a backfilled week, one gateway per factory, "
        "the ingest into the embedded store, and the capacity API with its overview page. "
        "Ctrl-C stops it; the data directory is kept for the next run.",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("kyoso-demo"), help="where everything is kept"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=8000, help="API port (0: a free one)")
    parser.add_argument(
        "--mqtt-port", type=int, default=1883, help="embedded broker port (0: a free one)"
    )
    parser.add_argument(
        "--broker", metavar="HOST:PORT", help="use this MQTT 5 broker instead of the embedded one"
    )
    parser.add_argument(
        "--influxdb", metavar="URL", help="use this InfluxDB (v1 API) instead of the embedded store"
    )
    parser.add_argument(
        "--backfill", type=parse_duration, default=7 * 86400.0, help="history to generate, e.g. 7d"
    )
    parser.set_defaults(run=run)


def _broker(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--broker must be HOST:PORT, not {value!r}")
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    """Execute ``kyoso demo``."""
    # Everything the demo runs loads only now: other kyoso commands start without it.
    from .runner import (  # noqa: PLC0415
        DemoError,
        DemoInfo,
        DemoOptions,
        guide,
        install_stop_handlers,
        run_demo,
    )

    try:
        options = DemoOptions(
            data_dir=args.data_dir,
            host=args.host,
            api_port=args.port,
            mqtt_port=args.mqtt_port,
            broker=_broker(args.broker),
            influx=None if args.influxdb is None else InfluxConfig(url=args.influxdb),
            backfill=timedelta(seconds=args.backfill),
        )
    except ValueError as exc:
        print(f"kyoso demo: {exc}", file=sys.stderr)
        return 2

    def ready(info: DemoInfo) -> None:
        print(guide(info), flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_handlers(stop)
        await run_demo(options, stop, ready)

    try:
        asyncio.run(main())
    except DemoError as exc:
        print(f"kyoso demo: {exc}", file=sys.stderr)
        return 1
    return 0
