"""``kyoso demo``: the whole system in one command (see :mod:`kyoso.demo.runner`)."""

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from kyoso.i18n import DEFAULT, Lang, from_environment, text
from kyoso.influx.client import InfluxConfig
from kyoso.simulators.command import parse_duration


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``demo`` to the ``kyoso`` command, its help in ``lang``."""
    parser = commands.add_parser(
        "demo", help=text("cli.demo.help", lang), description=text("cli.demo.description", lang)
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("kyoso-demo"),
        metavar="DIR",
        help=text("cli.demo.data_dir", lang),
    )
    parser.add_argument("--host", default="127.0.0.1", help=text("cli.demo.host", lang))
    parser.add_argument("--port", type=int, default=8000, help=text("cli.demo.port", lang))
    parser.add_argument(
        "--mqtt-port", type=int, default=1883, help=text("cli.demo.mqtt_port", lang)
    )
    parser.add_argument("--broker", metavar="HOST:PORT", help=text("cli.demo.broker", lang))
    parser.add_argument("--influxdb", metavar="URL", help=text("cli.demo.influxdb", lang))
    parser.add_argument(
        "--backfill",
        type=parse_duration,
        default=7 * 86400.0,
        help=text("cli.common.backfill", lang),
    )
    parser.set_defaults(run=run, lang=lang)


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
        print(guide(info, from_environment()), flush=True)

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
