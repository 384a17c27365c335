"""``kyoso simulate``: run demo factories from the command line."""

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kyoso.i18n import DEFAULT, Lang, text
from kyoso.validation import explain

from .config import (
    ClampSourceConfig,
    FactoryConfig,
    FactoryConfigError,
    MTConnectSourceConfig,
    OpcuaSourceConfig,
    SlmpSourceConfig,
    load_factory,
)
from .config import shipped_factories as _shipped
from .modbus import Fault, FaultKind

if TYPE_CHECKING:
    from .runner import SimClock, SimulationOptions

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h`` or ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 12h or 7d")
    return float(match[1]) * _UNIT_S[match[2]]


def parse_fault(text: str) -> tuple[str, Fault]:
    """``MACHINE=KIND[:PROBABILITY[:DELAY_S]]`` into a machine id and a fault."""
    machine, _, spec = text.partition("=")
    kind, *rest = spec.split(":")
    kinds = [k.value for k in FaultKind]
    if not machine or kind not in kinds or len(rest) > 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected MACHINE=KIND[:PROBABILITY[:DELAY_S]] with KIND one of {kinds}"
        )
    try:
        probability = float(rest[0]) if rest else 1.0
        delay = float(rest[1]) if len(rest) > 1 else 0.0
        return machine, Fault(FaultKind(kind), probability=probability, delay_s=delay)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


def _parse_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 timestamp") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. 2026-01-05T00:00Z")
    return moment.astimezone(UTC).timestamp()


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "1883")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST[:PORT]")
    return host, int(port)


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``simulate`` to the ``kyoso`` command, its help in ``lang``."""
    parser = commands.add_parser(
        "simulate",
        help=text("cli.simulate.help", lang),
        description=text("cli.simulate.description", lang),
    )
    parser.add_argument(
        "factories",
        nargs="*",
        type=Path,
        metavar="FACTORY.yaml",
        help=text("cli.simulate.factories", lang),
    )
    parser.add_argument("--list", action="store_true", help=text("cli.simulate.list", lang))
    parser.add_argument("--check", action="store_true", help=text("cli.simulate.check", lang))
    parser.add_argument("--host", default="127.0.0.1", help=text("cli.simulate.host", lang))
    parser.add_argument(
        "--ephemeral-ports", action="store_true", help=text("cli.simulate.ephemeral_ports", lang)
    )
    parser.add_argument(
        "--mqtt", type=_broker, metavar="HOST[:PORT]", help=text("cli.simulate.mqtt", lang)
    )
    parser.add_argument("--scale", type=float, default=1.0, help=text("cli.simulate.scale", lang))
    parser.add_argument("--start", type=_parse_time, help=text("cli.simulate.start", lang))
    parser.add_argument(
        "--backfill", type=parse_duration, default=0.0, help=text("cli.common.backfill", lang)
    )
    parser.add_argument(
        "--ground-truth",
        type=Path,
        metavar="DIR",
        help=text("cli.simulate.ground_truth", lang),
    )
    parser.add_argument("--duration", type=parse_duration, help=text("cli.simulate.duration", lang))
    parser.add_argument(
        "--fault",
        type=parse_fault,
        action="append",
        default=[],
        metavar="MACHINE=KIND[:P[:DELAY]]",
        help=text("cli.simulate.fault", lang),
    )
    parser.set_defaults(run=run, lang=lang)


def run(args: argparse.Namespace) -> int:
    """Execute ``kyoso simulate``."""
    paths: list[Path] = args.factories or _shipped()
    try:
        factories = [load_factory(p) for p in paths]
    except FactoryConfigError as exc:
        print(explain(exc, args.lang), file=sys.stderr)
        return 2
    if args.check:
        for factory in factories:
            print(f"{factory.factory}: {len(factory.machines)} machines, ok")
        return 0
    if args.list:
        _print_machines(factories)
        return 0
    # The simulators' servers (asyncua above all) load only when a simulation runs: every
    # `kyoso` command builds this parser, and `kyoso --help` should not wait for them.
    from .runner import SimClock, SimulationOptions  # noqa: PLC0415

    options = SimulationOptions(
        backfill_s=args.backfill,
        host=args.host,
        ephemeral_ports=args.ephemeral_ports,
        mqtt_host=args.mqtt[0] if args.mqtt else None,
        mqtt_port=args.mqtt[1] if args.mqtt else 1883,
        ground_truth_dir=args.ground_truth,
        faults=dict(args.fault),
    )
    asyncio.run(_serve(factories, SimClock(args.start, args.scale), options, args.duration))
    return 0


async def _serve(
    factories: list[FactoryConfig],
    clock: "SimClock",
    options: "SimulationOptions",
    duration: float | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from .runner import Simulation  # noqa: PLC0415 (see run)

    async with Simulation(factories, clock, options) as sim:
        for factory, machines in sim.endpoints.items():
            for machine, endpoint in machines.items():
                print(f"{factory}/{machine}: {endpoint.kind} {endpoint}", flush=True)
        for factory, publisher in sim.publishers.items():
            for sensor in publisher.sensors:
                print(f"{factory}/{sensor.model.machine}: mqtt {sensor.topic}", flush=True)
        print("simulating; Ctrl-C stops", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)


def _print_machines(factories: list[FactoryConfig]) -> None:
    for factory in factories:
        print(f"{factory.factory}  {factory.name}")
        for machine in factory.machines:
            source = machine.source
            if isinstance(source, ClampSourceConfig):
                where = f"clamp sensors/{source.sensor}/tele/SENSOR"
            elif isinstance(source, MTConnectSourceConfig):
                where = f"mtconnect :{source.port} device {machine.id}"
            elif isinstance(source, SlmpSourceConfig):
                where = f"slmp :{source.port} {source.transport} {source.frame.upper()}"
            elif isinstance(source, OpcuaSourceConfig):
                where = f"opcua :{source.port} umati {machine.id}"
            else:
                port = factory.modbus_servers[source.server].port
                where = f"modbus :{port} unit {source.unit} {source.word_order}"
            processes = ",".join(c.process.value for c in machine.capabilities)
            print(f"  {machine.id:<14} {where:<40} {processes}")
