"""``kyoso api``: serve the capacity API, check its settings, or manage its keys.

``kyoso api [--config API.yaml] keys ...`` reads the same settings as ``kyoso api
[--config API.yaml]`` (the file, then ``KYOSO_API_*``), so that a key is made in the store
the API serves; ``--keys PATH`` names another store.
"""

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

from kyoso.i18n import DEFAULT, Lang, text
from kyoso.validation import ConfigError, explain

from .keys import (
    CACHE_TTL_S,
    SCOPES,
    ApiKeyError,
    ApiKeyStore,
    KeyStoreError,
    MissingKeyStoreError,
    UnknownKeyError,
    check_key_name,
    is_key_id,
    parse_scope,
)
from .settings import ENV_PREFIX, ApiSettings, load_settings


def register(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang = DEFAULT
) -> None:
    """Add ``api`` (and ``api keys``) to the ``kyoso`` command, its help in ``lang``."""
    parser = commands.add_parser(
        "api",
        help=text("cli.api.help", lang),
        description=text("cli.api.description", lang, prefix=ENV_PREFIX),
    )
    parser.add_argument(
        "--config", type=Path, metavar="API.yaml", help=text("cli.common.settings_file", lang)
    )
    parser.add_argument(
        "--check", action="store_true", help=text("cli.common.check_settings", lang)
    )
    parser.set_defaults(run=run, lang=lang)
    _register_keys(parser.add_subparsers(dest="tool", metavar=text("cli.metavar.tool", lang)), lang)


def _settings(args: argparse.Namespace) -> ApiSettings | None:
    """The settings of ``--config`` and the environment; None once the errors are printed."""
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(explain(exc, args.lang), file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    """Execute ``kyoso api``."""
    settings = _settings(args)
    if settings is None:
        return 2
    if args.check:
        where = settings.influx.url if settings.store == "influxdb" else settings.sqlite_path
        print(f"ok: store {settings.store} ({where}), keys {settings.keys}, port {settings.port}")
        return 0
    try:
        keys = ApiKeyStore(settings.keys)
    except KeyStoreError as exc:
        config = "" if args.config is None else f" --config {shlex.quote(str(args.config))}"
        print(
            f"{exc} (create one with: kyoso api{config} keys create --name NAME --scope SCOPE)",
            file=sys.stderr,
        )
        return 1
    # FastAPI and uvicorn load only to serve: every other kyoso command starts without them.
    from .server import serve  # noqa: PLC0415

    try:
        serve(settings, keys)
    finally:
        keys.close()
    return 0


# --- kyoso api keys -----------------------------------------------------------------------


def _register_keys(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", lang: Lang
) -> None:
    parser = commands.add_parser(
        "keys",
        help=text("cli.api.keys.help", lang),
        description=text("cli.api.keys.description", lang, scopes=SCOPES),
    )
    actions = parser.add_subparsers(
        dest="keys_action", required=True, metavar=text("cli.metavar.action", lang)
    )
    create = actions.add_parser(
        "create",
        help=text("cli.api.keys.create.help", lang),
        description=text("cli.api.keys.create.description", lang),
    )
    create.add_argument("--name", required=True, help=text("cli.api.keys.name", lang))
    create.add_argument(
        "--scope", required=True, help=text("cli.api.keys.scope", lang, scopes=SCOPES)
    )
    create.set_defaults(run=run_create)
    listing = actions.add_parser("list", help=text("cli.api.keys.list.help", lang))
    listing.set_defaults(run=run_list)
    revoke = actions.add_parser(
        "revoke",
        help=text("cli.api.keys.revoke.help", lang),
        description=text("cli.api.keys.revoke.description", lang, ttl=f"{CACHE_TTL_S:g}"),
    )
    revoke.add_argument("id", help=text("cli.api.keys.id", lang))
    revoke.set_defaults(run=run_revoke)
    default = ApiSettings.model_fields["keys"].default
    for action in (create, listing, revoke):
        action.add_argument(
            "--keys",
            type=Path,
            metavar="PATH",
            help=text("cli.api.keys.store", lang, prefix=ENV_PREFIX, default=default),
        )


def _store_path(args: argparse.Namespace) -> Path | None:
    """``--keys``, else the API's key store; None once a settings error is printed.

    The settings are read even with ``--keys``: a ``--config`` is never ignored silently.
    """
    settings = _settings(args)
    if settings is None:
        return None
    path: Path = args.keys or settings.keys
    return path


def run_create(args: argparse.Namespace) -> int:
    """Execute ``kyoso api keys create``."""
    try:
        scope = parse_scope(args.scope)
        name = check_key_name(args.name)
    except ApiKeyError as exc:
        return _failed(exc)
    path = _store_path(args)
    if path is None:
        return 2
    try:
        with ApiKeyStore(path, create=True) as store:
            new = store.create(name, scope)
    except ApiKeyError as exc:
        return _failed(exc)
    print(new.key)
    print(
        f"created API key {new.info.key_id} ({scope}) for {name!r} in {path}: copy it now, "
        "it cannot be shown again",
        file=sys.stderr,
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Execute ``kyoso api keys list``."""
    path = _store_path(args)
    if path is None:
        return 2
    try:
        with ApiKeyStore(path) as store:
            keys = store.list_keys()
    except ApiKeyError as exc:
        return _failed(exc)
    print(f"{'ID':<12}  {'CREATED':<20}  {'REVOKED':<20}  {'SCOPE':<24}  NAME")
    for info in keys:
        print(
            f"{info.key_id:<12}  {_shown(info.created_at):<20}  {_shown(info.revoked_at):<20}  "
            f"{info.scope!s:<24}  {info.name}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Execute ``kyoso api keys revoke``."""
    if not is_key_id(args.id):
        # Not echoed: it may be a whole key, pasted by mistake.
        print("not a key id: use the 12 hex digits of the ID column of list", file=sys.stderr)
        return 2
    path = _store_path(args)
    if path is None:
        return 2
    try:
        with ApiKeyStore(path) as store:
            info = store.revoke(args.id)
    except ApiKeyError as exc:
        return _failed(exc)
    print(
        f"revoked API key {info.key_id} ({info.scope}) of {info.name!r} at "
        f"{_shown(info.revoked_at)}; refused everywhere within {CACHE_TTL_S:g} s"
    )
    return 0


def _failed(exc: ApiKeyError) -> int:
    print(exc, file=sys.stderr)
    return 1 if isinstance(exc, UnknownKeyError | MissingKeyStoreError) else 2


def _shown(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
