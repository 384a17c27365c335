"""The ``kyoso`` command; each component adds its subcommand here."""

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from kyoso import __version__
from kyoso.api import command as api_command
from kyoso.dashboards import command as dashboards_command
from kyoso.demo import command as demo_command
from kyoso.gateway import command as gateway_command
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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="kyoso",
        description="Live machine telemetry turned into shared machine capacity.",
    )
    parser.add_argument("--version", action="version", version=f"kyoso {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: INFO)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text for people, json (one object a line) for log collectors (default: text)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    simulate_command.register(commands)
    gateway_command.register(commands)
    ingest_command.register(commands)
    api_command.register(commands)
    demo_command.register(commands)
    regional_command.register(commands)
    dashboards_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kyoso`` command line; return the exit code."""
    args = build_parser().parse_args(argv)
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
