"""``kyoso api``: serve the capacity API, check its settings, or manage its keys."""

import argparse
import sys
from pathlib import Path

from kyoso.validation import ConfigError

from . import keys as keys_command
from .keys import ApiKeyStore, KeyStoreError
from .settings import ENV_PREFIX, load_settings


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
    # FastAPI and uvicorn load only to serve: every other kyoso command starts without them.
    from .server import serve  # noqa: PLC0415

    try:
        serve(settings, keys)
    finally:
        keys.close()
    return 0
