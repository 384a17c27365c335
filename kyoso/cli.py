"""The ``kyoso`` command; each component adds its subcommand here."""

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from kyoso import __version__
from kyoso.alerts import command as alerts_command
from kyoso.api import command as api_command
from kyoso.dashboards import command as dashboards_command
from kyoso.demo import command as demo_command
from kyoso.gateway import command as gateway_command
from kyoso.i18n import DEFAULT, Lang, from_environment, text
from kyoso.i18n.parser import CatalogParser
from kyoso.ingest import command as ingest_command
from kyoso.regional import command as regional_command
from kyoso.simulators import command as simulate_command


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def build_parser(lang: Lang = DEFAULT) -> argparse.ArgumentParser:
    """The argument parser of every subcommand, its help and errors in ``lang``."""
    parser = CatalogParser(prog="kyoso", description=text("cli.description", lang), lang=lang)
    parser.add_argument(
        "--version",
        action="version",
        version=f"kyoso {__version__}",
        help=text("cli.version", lang),
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help=text("cli.log_level", lang),
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help=text("cli.log_format", lang),
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar=text("cli.metavar.command", lang)
    )
    simulate_command.register(commands, lang)
    gateway_command.register(commands, lang)
    ingest_command.register(commands, lang)
    api_command.register(commands, lang)
    demo_command.register(commands, lang)
    regional_command.register(commands, lang)
    dashboards_command.register(commands, lang)
    alerts_command.register(commands, lang)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kyoso`` command line in the language of its environment
    (:func:`kyoso.i18n.from_environment`); return the exit code."""
    args = build_parser(from_environment()).parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # force: libraries may have configured the root logger at import.
    logging.basicConfig(level=args.log_level, handlers=[handler], force=True)
    try:
        code: int = args.run(args)
    finally:
        # Run in-process (a test, another program), the command leaves no handler behind on
        # a stream its caller may close.
        logging.getLogger().removeHandler(handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
