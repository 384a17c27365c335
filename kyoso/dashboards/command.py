"""``kyoso dashboards``: generate the dashboards' JSON, check it, or push it to a Grafana.

The generator and the client are the ``dashboards`` extra; they are imported when a
subcommand runs, so that ``kyoso`` without the extra still starts.
"""

import argparse
import sys
from pathlib import Path

from kyoso.i18n import DEFAULT, LANGUAGES, Lang, text

_EXTRA = "kyoso dashboards needs the dashboards extra: pip install 'kyoso[dashboards]'"


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``dashboards generate`` and ``dashboards push`` to the ``kyoso`` command, their
    help in ``lang``."""
    parser = commands.add_parser(
        "dashboards",
        help=text("cli.dashboards.help", lang),
        description=text("cli.dashboards.description", lang),
    )
    tools = parser.add_subparsers(
        dest="tool", metavar=text("cli.metavar.tool", lang), required=True
    )
    generate = tools.add_parser("generate", help=text("cli.dashboards.generate.help", lang))
    generate.add_argument(
        "--out",
        type=Path,
        default=Path("dashboards"),
        metavar="DIR",
        help=text("cli.dashboards.generate.out", lang),
    )
    generate.add_argument(
        "--check", action="store_true", help=text("cli.dashboards.generate.check", lang)
    )
    generate.set_defaults(run=run_generate)
    push = tools.add_parser("push", help=text("cli.dashboards.push.help", lang))
    push.add_argument("--url", required=True, help=text("cli.dashboards.push.url", lang))
    push.add_argument("--token", required=True, help=text("cli.dashboards.push.token", lang))
    push.add_argument(
        "--lang",
        choices=LANGUAGES,
        action="append",
        help=text("dashboard.push_lang_help", lang),
    )
    folders = ", ".join(text("dashboard.folder", each) for each in LANGUAGES)
    push.add_argument("--folder", help=text("dashboard.push_folder_help", lang, folders=folders))
    push.add_argument(
        "--timeout", type=float, default=10.0, help=text("cli.dashboards.push.timeout", lang)
    )
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

        from .generate import documents  # noqa: PLC0415
        from .push import PushError, push_dashboards  # noqa: PLC0415
    except ImportError:
        print(_EXTRA, file=sys.stderr)
        return 2
    api = GrafanaApi.from_url(args.url, credential=args.token, timeout=args.timeout)
    for lang in args.lang or LANGUAGES:
        folder = args.folder or text("dashboard.folder", lang)
        try:
            urls = push_dashboards(api, documents([lang]).values(), folder)
        except PushError as exc:
            print(f"{args.url}: {exc}", file=sys.stderr)
            return 1
        for url in urls:
            print(args.url.rstrip("/") + url)
    return 0
