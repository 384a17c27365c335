"""``kyoso dashboards``: generate the dashboards' JSON, check it, or push it to a Grafana.

The generator and the client are the ``dashboards`` extra; they are imported when a
subcommand runs, so that ``kyoso`` without the extra still starts.
"""

import argparse
import sys
from pathlib import Path

_EXTRA = "kyoso dashboards needs the dashboards extra: pip install 'kyoso[dashboards]'"


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add ``dashboards generate`` and ``dashboards push`` to the ``kyoso`` command."""
    parser = commands.add_parser(
        "dashboards",
        help="Grafana dashboards as code: generate, check, push",
        description="The plant and regional dashboards, generated from kyoso.dashboards.",
    )
    tools = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)
    generate = tools.add_parser("generate", help="write the dashboards' JSON")
    generate.add_argument("--out", type=Path, default=Path("dashboards"), metavar="DIR")
    generate.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if DIR differs from the code"
    )
    generate.set_defaults(run=run_generate)
    push = tools.add_parser("push", help="upload the dashboards to a Grafana")
    push.add_argument("--url", required=True, help="Grafana's base URL, e.g. http://localhost:3000")
    push.add_argument(
        "--token", required=True, help="a service account token (Editor) of the target org"
    )
    push.add_argument("--folder", default="Kyoso", help="folder title (default Kyoso)")
    push.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    push.set_defaults(run=run_push)


def run_generate(args: argparse.Namespace) -> int:
    """Execute ``kyoso dashboards generate``."""
    try:
        from .generate import differences, write_dashboards  # noqa: PLC0415 - optional extra
    except ImportError:
        print(_EXTRA, file=sys.stderr)
        return 2
    if args.check:
        problems = differences(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `kyoso dashboards generate` and commit the result", file=sys.stderr)
        return 1 if problems else 0
    for path in write_dashboards(args.out):
        print(path)
    return 0


def run_push(args: argparse.Namespace) -> int:
    """Execute ``kyoso dashboards push``."""
    try:
        from grafana_client.api import GrafanaApi  # noqa: PLC0415 - optional extra

        from .generate import DASHBOARDS, render  # noqa: PLC0415
        from .push import PushError, push_dashboards  # noqa: PLC0415
    except ImportError:
        print(_EXTRA, file=sys.stderr)
        return 2
    api = GrafanaApi.from_url(args.url, credential=args.token, timeout=args.timeout)
    documents = {name: render(build()) for name, build in DASHBOARDS.items()}
    try:
        urls = push_dashboards(api, documents, args.folder)
    except PushError as exc:
        print(f"{args.url}: {exc}", file=sys.stderr)
        return 1
    for url in urls:
        print(args.url.rstrip("/") + url)
    return 0
