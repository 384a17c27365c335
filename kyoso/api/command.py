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

from kyoso.validation import ConfigError

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
    _register_keys(parser.add_subparsers(dest="tool", metavar="TOOL"))


def _settings(args: argparse.Namespace) -> ApiSettings | None:
    """The settings of ``--config`` and the environment; None once the errors are printed."""
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
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


def _register_keys(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = commands.add_parser(
        "keys",
        help="create, list or revoke API keys",
        description="API keys of the capacity service, each with one scope: "
        f"{SCOPES}. Only a hash of each key is stored. The key store is the one "
        "`kyoso api` serves with the same --config and environment.",
    )
    actions = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="make a key and print it, this once",
        description="Make a key and print it on stdout, alone on its line; it cannot be "
        "shown again. The key id and scope go to stderr.",
    )
    create.add_argument("--name", required=True, help="who or what holds the key")
    create.add_argument("--scope", required=True, help=f"what it may read: {SCOPES}")
    create.set_defaults(run=run_create)
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    listing.set_defaults(run=run_list)
    revoke = actions.add_parser(
        "revoke",
        help="revoke a key for good",
        description=f"Revoke a key; every API replica refuses it within {CACHE_TTL_S:g} s.",
    )
    revoke.add_argument("id", help="the key id, as shown by list")
    revoke.set_defaults(run=run_revoke)
    default = ApiSettings.model_fields["keys"].default
    for action in (create, listing, revoke):
        action.add_argument(
            "--keys",
            type=Path,
            metavar="PATH",
            help=f"the key store (default: the API's: ${ENV_PREFIX}KEYS, else `keys` in "
            f"the file of `kyoso api --config`, else {default})",
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
