"""The ``kyoso`` command; each component adds its subcommand here."""

import argparse
import logging
import sys
from collections.abc import Sequence

from kyoso import __version__
from kyoso.gateway import command as gateway_command
from kyoso.simulators import command as simulate_command


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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    simulate_command.register(commands)
    gateway_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kyoso`` command line; return the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # libraries may have configured the root logger at import
    )
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
