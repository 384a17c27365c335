"""``kyoso gateway``: run a gateway, check its configuration, probe a device, or look into
and mend its outbox."""

import argparse
import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from kyoso.i18n import DEFAULT, Lang, text
from kyoso.validation import explain

from . import mtconnect_probe, slmp_probe
from .agent import Gateway
from .config import ConfigError, GatewayConfig, load_config
from .http import health_server
from .modbus import ModbusError
from .modbus_decode import format_plan, plan_device
from .modbus_probe import format_probe, probe
from .mtconnect_xml import MtconnectError
from .outbox import OutboxLockedError, SqliteOutbox
from .slmp_config import SlmpEndpointConfig, plan_reads
from .slmp_frames import SlmpError


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``gateway`` (and ``gateway probe``) to the ``kyoso`` command, its help in ``lang``."""
    parser = commands.add_parser(
        "gateway",
        help=text("cli.gateway.help", lang),
        description=text("cli.gateway.description", lang),
    )
    parser.add_argument(
        "--config", type=Path, metavar="GATEWAY.yaml", help=text("cli.gateway.config", lang)
    )
    parser.add_argument("--check", action="store_true", help=text("cli.gateway.check", lang))
    parser.set_defaults(run=run, lang=lang)
    tools = parser.add_subparsers(dest="tool", metavar=text("cli.metavar.tool", lang))
    probe_parser = tools.add_parser("probe", help=text("cli.gateway.probe.help", lang))
    probe_parser.add_argument(
        "target", nargs="?", metavar="HOST[:PORT]", help=text("cli.gateway.probe.target", lang)
    )
    probe_parser.add_argument(
        "--mtconnect", metavar="URL", help=text("cli.gateway.probe.mtconnect", lang)
    )
    probe_parser.add_argument(
        "--device", metavar="NAME", help=text("cli.gateway.probe.mtconnect_device", lang)
    )
    probe_parser.add_argument("--opcua", metavar="URL", help=text("cli.gateway.probe.opcua", lang))
    probe_parser.add_argument(
        "--depth", type=int, default=4, help=text("cli.gateway.probe.opcua_depth", lang)
    )
    probe_parser.add_argument(
        "--security", metavar="POLICY,MODE,...", help=text("cli.gateway.probe.opcua_security", lang)
    )
    probe_parser.add_argument(
        "--user", metavar="NAME", help=text("cli.gateway.probe.opcua_user", lang)
    )
    probe_parser.add_argument(
        "--slmp", metavar="HOST[:PORT]", help=text("cli.gateway.probe.slmp", lang)
    )
    probe_parser.add_argument(
        "--devices", metavar="D0-D99,M0-M63", help=text("cli.gateway.probe.slmp_devices", lang)
    )
    probe_parser.add_argument(
        "--udp", action="store_true", help=text("cli.gateway.probe.slmp_udp", lang)
    )
    probe_parser.add_argument(
        "--frame",
        choices=["3e", "4e"],
        default="3e",
        help=text("cli.gateway.probe.slmp_frame", lang),
    )
    probe_parser.add_argument(
        "--unit", type=int, default=1, help=text("cli.gateway.probe.unit", lang)
    )
    probe_parser.add_argument(
        "--address", type=int, default=0, help=text("cli.gateway.probe.address", lang)
    )
    probe_parser.add_argument(
        "--count", type=int, default=2, help=text("cli.gateway.probe.count", lang)
    )
    probe_parser.add_argument(
        "--table",
        choices=["holding", "input", "coil", "discrete_input"],
        default="holding",
        help=text("cli.gateway.probe.table", lang),
    )
    probe_parser.add_argument(
        "--rtu-over-tcp", action="store_true", help=text("cli.gateway.probe.rtu_over_tcp", lang)
    )
    probe_parser.add_argument(
        "--timeout", type=float, default=3.0, help=text("cli.common.timeout", lang)
    )
    probe_parser.set_defaults(run=run_probe)
    outbox_parser = tools.add_parser(
        "outbox",
        help=text("cli.gateway.outbox.help", lang),
        description=text("cli.gateway.outbox.description", lang),
    )
    outbox_parser.add_argument(
        "action",
        nargs="?",
        choices=["show", "requeue"],
        default="show",
        help=text("cli.gateway.outbox.action", lang),
    )
    outbox_parser.add_argument(
        "seqs",
        nargs="*",
        type=int,
        metavar="SEQ",
        help=text("cli.gateway.outbox.seqs", lang),
    )
    outbox_parser.set_defaults(run=run_outbox)


def _config(args: argparse.Namespace, command: str) -> GatewayConfig | None:
    """The configuration ``--config`` names; None (said on stderr) if there is none."""
    if args.config is None:
        print(text("cli.gateway.config_required", args.lang, command=command), file=sys.stderr)
        return None
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(explain(exc, args.lang), file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Execute ``kyoso gateway``."""
    config = _config(args, "kyoso gateway")
    if config is None:
        return 2
    if args.check:
        print(f"{args.config}: factory {config.factory}, gateway {config.gateway}, ok")
        for machine in config.machines:
            device = machine.source.modbus
            if device is not None:
                print(f"{machine.id}: {device.endpoint} unit {device.unit}")
                print(format_plan(plan_device(device)))
            elif machine.source.mqtt is not None:
                print(f"{machine.id}: mqtt {machine.source.mqtt.topic}")
            elif (agent := machine.source.mtconnect) is not None:
                print(f"{machine.id}: mtconnect {agent.base} device {agent.device or '(only)'}")
            elif (server := machine.source.opcua) is not None:
                print(f"{machine.id}: opcua {server.endpoint} ({server.mode})")
            elif (plc := machine.source.slmp) is not None:
                reads = ", ".join(map(str, plan_reads(plc)))
                print(f"{machine.id}: slmp {plc.endpoint} {plc.frame.upper()}: {reads}")
        return 0
    asyncio.run(_serve(Gateway(config)))
    return 0


async def _serve(gateway: Gateway) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    health = health_server(gateway, gateway.config.http)
    await health.start()
    try:
        await gateway.run(stop)
    finally:
        await health.stop()


def run_outbox(args: argparse.Namespace) -> int:
    """Execute ``kyoso gateway --config G outbox [show | requeue [SEQ...]]``."""
    config = _config(args, "kyoso gateway outbox")
    if config is None:
        return 2
    try:
        outbox = SqliteOutbox(config.outbox)
    except OutboxLockedError:
        print(
            f"kyoso gateway outbox: {config.outbox.path} is in use by a running gateway: "
            "stop it first",
            file=sys.stderr,
        )
        return 1
    with outbox:
        if args.action == "requeue":
            moved = outbox.requeue_refused(args.seqs or None)
            print(f"{moved} refused samples put back; the gateway publishes them when it runs")
            return 0
        sent = f"{outbox.unconfirmed()} sent, awaiting a store receipt"
        print(
            f"{config.outbox.path}: {outbox.depth()} pending ({sent}), last seq {outbox.last_seq}"
        )
        totals = f"{outbox.refused_total} refused, {outbox.dropped} dropped"
        print(f"since it was made: {totals}, {outbox.rejected} rejected")
        for row in outbox.refused():
            when = datetime.fromtimestamp(row.refused_at, UTC).isoformat(timespec="seconds")
            print(f"refused seq {row.seq} (session {row.session}) at {when}: {row.reason}")
        for gap in outbox.dropped_ranges():
            print(f"dropped {gap.count} samples of seq {gap.first_seq}-{gap.last_seq}")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    """Execute ``kyoso gateway probe``."""
    protocols = (("mtconnect", _probe_mtconnect), ("opcua", _probe_opcua), ("slmp", _probe_slmp))
    for option, run_protocol in protocols:
        if getattr(args, option) is not None:
            return run_protocol(args)
    if args.target is None:
        print(
            "kyoso gateway probe: give HOST[:PORT] (Modbus), --mtconnect URL, --opcua URL or "
            "--slmp HOST[:PORT]",
            file=sys.stderr,
        )
        return 2
    host, _, port = args.target.rpartition(":") if ":" in args.target else (args.target, "", "502")
    if not host or not port.isdigit():
        print(f"{args.target!r} is not HOST[:PORT]", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(
            probe(
                host,
                int(port),
                unit=args.unit,
                address=args.address,
                count=args.count,
                table=args.table,
                transport="rtu_over_tcp" if args.rtu_over_tcp else "tcp",
                timeout_s=args.timeout,
            )
        )
    except (ValueError, ModbusError) as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    print(format_probe(result))
    return 0


def _probe_mtconnect(args: argparse.Namespace) -> int:
    """Execute ``kyoso gateway probe --mtconnect URL [--device NAME]``."""
    if args.target is not None:
        print("kyoso gateway probe: give HOST[:PORT] or --mtconnect, not both", file=sys.stderr)
        return 2
    try:
        items = asyncio.run(mtconnect_probe.probe(args.mtconnect, args.device, args.timeout))
    except MtconnectError as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    print(mtconnect_probe.format_probe(items))
    return 0


def _probe_opcua(args: argparse.Namespace) -> int:
    """Execute ``kyoso gateway probe --opcua URL [--depth N] [--security ...] [--user]``."""
    if args.target is not None:
        print("kyoso gateway probe: give HOST[:PORT] or --opcua, not both", file=sys.stderr)
        return 2
    from . import opcua_probe  # noqa: PLC0415 (asyncua loads only for an OPC UA probe)

    try:
        nodes = asyncio.run(
            opcua_probe.probe(
                args.opcua,
                depth=args.depth,
                security=args.security,
                user=args.user,
                timeout_s=args.timeout,
            )
        )
    except opcua_probe.OpcuaProbeError as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    print(opcua_probe.format_probe(nodes))
    return 0


def _probe_slmp(args: argparse.Namespace) -> int:
    """Execute ``kyoso gateway probe --slmp HOST[:PORT] --devices RANGES [--udp] [--frame]``."""
    if args.target is not None or args.mtconnect is not None:
        print("kyoso gateway probe: give one of HOST[:PORT], --mtconnect, --slmp", file=sys.stderr)
        return 2
    host, _, port = args.slmp.rpartition(":") if ":" in args.slmp else (args.slmp, "", "5000")
    try:
        ranges = slmp_probe.parse_ranges(args.devices or "")
        endpoint = SlmpEndpointConfig(
            host=host,
            port=int(port),
            transport="udp" if args.udp else "tcp",
            frame=args.frame,
            timeout_s=args.timeout,
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        print(f"kyoso gateway probe --slmp: {exc}", file=sys.stderr)
        return 2
    try:
        results = asyncio.run(slmp_probe.probe(endpoint, ranges))
    except SlmpError as exc:
        print(f"probe failed: {exc}", file=sys.stderr)
        return 1
    print(slmp_probe.format_probe(results))
    return 0
