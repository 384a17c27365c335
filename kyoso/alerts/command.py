"""``kyoso alerts``: tell plant managers what they would otherwise have to watch a page for."""

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kyoso.i18n import DEFAULT, Lang, text
from kyoso.validation import ConfigError, explain

from .errors import StateInUseError

if TYPE_CHECKING:
    from .config import AlertsConfig


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``alerts`` to the ``kyoso`` command, its help in ``lang``."""
    parser = commands.add_parser(
        "alerts",
        help=text("cli.alerts.help", lang),
        description=text("cli.alerts.description", lang),
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="ALERTS.yaml",
        required=True,
        help=text("cli.alerts.config", lang),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help=text("cli.alerts.check", lang))
    mode.add_argument("--once", action="store_true", help=text("cli.alerts.once", lang))
    parser.set_defaults(run=run, lang=lang)


def run(args: argparse.Namespace) -> int:
    """Execute ``kyoso alerts``."""
    # apprise and httpx load only when alerts run: every `kyoso` command builds this parser.
    from .config import load_config  # noqa: PLC0415

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(explain(exc, args.lang), file=sys.stderr)
        return 2
    if args.check:
        for warning in config.one_sided():
            print(f"{args.config}: bcp: {warning}: nothing is sent for it", file=sys.stderr)
        recipients = sum(len(f.recipients) for f in config.factories.values())
        print(
            f"ok: {len(config.factories)} factories, {recipients} recipients, "
            f"API {config.api.url}, state {config.state_path}"
        )
        return 0
    try:
        return asyncio.run(_serve(config, once=args.once))
    except StateInUseError as exc:
        print(f"kyoso alerts: {exc}", file=sys.stderr)
        return 2


async def _serve(config: "AlertsConfig", *, once: bool) -> int:
    import httpx  # noqa: PLC0415 (see run)

    from .engine import AlertEngine  # noqa: PLC0415
    from .state import AlertState  # noqa: PLC0415

    with (
        httpx.Client(base_url=config.api.url, timeout=config.api.timeout_s) as client,
        AlertState(config.state_path) as state,
    ):
        engine = AlertEngine(config, client, state)
        if once:
            await engine.once()
            return 0 if engine.looks_failed == 0 else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await engine.run(stop)
    return 0
