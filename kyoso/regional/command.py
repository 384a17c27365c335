"""``kyoso regional``: generate the broker's access files, or set up a whole regional stack."""

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pydantic import SecretStr, ValidationError

from kyoso.i18n import DEFAULT, Lang, text
from kyoso.i18n.parser import CatalogParser
from kyoso.influx.client import InfluxConfig, InfluxError
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.validation import error_lines, explain

from .demo import demo_gateway_configs, write_demo_gateways
from .grafana import write_datasources
from .influxdb import provision_influxdb
from .mosquitto import TlsFiles, write_mosquitto
from .passwords import PasswordError, resolve_passwords
from .registry import Registry, RegistryError, load_registry

ADMIN_PASSWORD_ENV = "KYOSO_INFLUXDB_ADMIN_PASSWORD"  # noqa: S105 - a variable name
"""Where ``setup`` finds the InfluxDB admin's password (never on the command line)."""


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``regional mosquitto`` and ``regional setup`` to the ``kyoso`` command, their
    help in ``lang``."""
    parser = commands.add_parser(
        "regional",
        help=text("cli.regional.help", lang),
        description=text("cli.regional.description", lang),
    )
    parser.set_defaults(lang=lang)
    tools = parser.add_subparsers(
        dest="tool", metavar=text("cli.metavar.tool", lang), required=True
    )
    common = CatalogParser(add_help=False, lang=lang)
    common.add_argument(
        "--registry",
        type=Path,
        required=True,
        metavar="FILE",
        help=text("cli.regional.registry", lang),
    )
    common.add_argument(
        "--secrets",
        type=Path,
        required=True,
        metavar="FILE",
        help=text("cli.regional.secrets", lang),
    )
    common.add_argument(
        "--tls-dir",
        type=Path,
        metavar="DIR",
        help=text("cli.regional.tls_dir", lang),
    )
    mosquitto = tools.add_parser(
        "mosquitto", parents=[common], help=text("cli.regional.mosquitto.help", lang)
    )
    mosquitto.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=text("cli.regional.mosquitto.out", lang),
    )
    mosquitto.set_defaults(run=run_mosquitto)
    setup = tools.add_parser(
        "setup",
        parents=[common],
        help=text("cli.regional.setup.help", lang),
        description=text("cli.regional.setup.description", lang, variable=ADMIN_PASSWORD_ENV),
    )
    setup.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help=text("cli.regional.setup.out", lang),
    )
    setup.add_argument(
        "--influx-url", required=True, help=text("cli.regional.setup.influx_url", lang)
    )
    setup.add_argument(
        "--influx-admin",
        default="admin",
        metavar="USER",
        help=text("cli.regional.setup.influx_admin", lang),
    )
    setup.add_argument(
        "--grafana-influx-url",
        metavar="URL",
        help=text("cli.regional.setup.grafana_influx_url", lang),
    )
    setup.add_argument(
        "--broker",
        type=_address,
        default=("mosquitto", 1883),
        metavar="HOST:PORT",
        help=text("cli.regional.setup.broker", lang),
    )
    setup.add_argument(
        "--simulator-host",
        default="simulators",
        help=text("cli.regional.setup.simulator_host", lang),
    )
    setup.add_argument(
        "--sensor-broker",
        type=_address,
        default=("sensor-broker", 1883),
        metavar="HOST:PORT",
        help=text("cli.regional.setup.sensor_broker", lang),
    )
    setup.set_defaults(run=run_setup)


def _load(args: argparse.Namespace) -> Registry | None:
    try:
        return load_registry(args.registry)
    except RegistryError as exc:
        print(explain(exc, args.lang), file=sys.stderr)
        return None


def run_mosquitto(args: argparse.Namespace) -> int:
    """Execute ``kyoso regional mosquitto``."""
    registry = _load(args)
    if registry is None:
        return 2
    try:
        passwords = resolve_passwords(registry, args.secrets, os.environ)
    except PasswordError as exc:
        print(exc, file=sys.stderr)
        return 2
    tls = TlsFiles.from_dir(args.tls_dir.absolute()) if args.tls_dir is not None else None
    for path in write_mosquitto(registry, passwords.mqtt, args.out, tls):
        print(path)
    return 0


def run_setup(args: argparse.Namespace) -> int:
    """Execute ``kyoso regional setup``."""
    registry = _load(args)
    if registry is None:
        return 2
    admin_password = os.environ.get(ADMIN_PASSWORD_ENV, "")
    try:
        if not admin_password:
            raise PasswordError(f"{ADMIN_PASSWORD_ENV} is not set or empty")
        passwords = resolve_passwords(registry, args.secrets, os.environ)
        admin = InfluxConfig(
            url=args.influx_url,
            username=args.influx_admin,
            password=SecretStr(admin_password),
            create_databases=False,
        )
    except PasswordError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(error_lines("--influx-url/--influx-admin", exc).text(args.lang), file=sys.stderr)
        return 2
    try:
        asyncio.run(provision_influxdb(registry, passwords.influxdb, admin))
    except InfluxError as exc:
        print(f"InfluxDB at {args.influx_url}: {exc}", file=sys.stderr)
        return 1
    tls = TlsFiles.from_dir(args.tls_dir.absolute()) if args.tls_dir is not None else None
    written = write_mosquitto(registry, passwords.mqtt, args.out / "mosquitto", tls)
    grafana_url = args.grafana_influx_url or args.influx_url
    written.append(
        write_datasources(
            args.out / "grafana" / "kyoso.yaml", registry, passwords.influxdb, grafana_url
        )
    )
    configs = demo_gateway_configs(
        registry,
        passwords.mqtt,
        [load_factory(path) for path in shipped_factories()],
        broker=args.broker,
        simulator_host=args.simulator_host,
        sensor_broker=args.sensor_broker,
    )
    written += write_demo_gateways(args.out / "gateways", configs)
    for path in written:
        print(path)
    print(f"InfluxDB users and grants set for {len(registry.factories)} factories")
    return 0
