"""API keys: who may ask the capacity service what (``kyoso api keys`` manages them).

A key is ``kyo_`` + a public key id (12 hex digits) + ``_`` + a secret (43 base62
characters, 256 bits from :mod:`secrets`). The id names the key in logs, in ``keys list``
and in ``keys revoke`` without revealing it; the fixed shape lets a malformed key be turned
away by its length and one regular expression, before any database read, and lets secret
scanners recognise a leaked key by its prefix.

Only the SHA-256 of the whole key is stored. A slow password hash (argon2, bcrypt, scrypt)
makes guessing a *low-entropy* password from a stolen hash expensive; a 256-bit random
secret cannot be guessed at any hashing speed, so a slow hash would protect nothing and
cost every API request tens of milliseconds of CPU. No salt is needed either: every input
is unique and random, so precomputed tables are useless. A keyed hash (HMAC with a server
pepper) would add nothing, for the same reason, but a second secret to hand to every
replica. Digests are compared with :func:`hmac.compare_digest`.

The store is one SQLite file in WAL mode: several API replicas read it while the CLI
writes it, readers never wait for the writer, and a writer waits for another writer up to
:data:`BUSY_TIMEOUT_S`. Authentication only reads (one primary-key lookup by key id); last
use is not tracked, so an API replica never writes the file: per-key request counts belong
in the API's metrics. Whoever can write the file can create keys: keep it writable only by
the operator's and the API's account.

Rows found are kept in memory for :data:`CACHE_TTL_S`, so a key revoked in another
process (the CLI) stops authenticating everywhere within that time, and in the revoking
process at once. Unknown key ids are not cached: a new key works at once everywhere, and
the cache holds at most one entry per stored key.
"""

import hashlib
import hmac
import re
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum, StrEnum
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from kyoso.contract import InvalidIdError, check_id

KEY_PREFIX = "kyo_"
"""The start of every key."""

_ID_BYTES = 6
_SECRET_LENGTH = 43

KEY_LENGTH = len(KEY_PREFIX) + 2 * _ID_BYTES + 1 + _SECRET_LENGTH
"""Characters in a key: prefix, key id, ``_``, secret."""

CACHE_TTL_S = 5.0
"""How long a looked-up key is trusted from memory: the bound on a revocation's delay."""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another writer of the file before it fails."""

MAX_NAME_LENGTH = 100
"""Characters in a key's name, at most."""

SCHEMA_VERSION = 1
"""The layout of the key table, kept in the file's ``user_version``."""

_BASE62 = string.digits + string.ascii_letters
_KEY_ID_RE = re.compile(f"[0-9a-f]{{{2 * _ID_BYTES}}}")
_KEY_RE = re.compile(
    f"{re.escape(KEY_PREFIX)}({_KEY_ID_RE.pattern})_[0-9A-Za-z]{{{_SECRET_LENGTH}}}"
)
SCOPES = "platform, factory:<id> or admin"
"""The scopes a key may have, as a person writes them."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,       -- the public key id
    name TEXT NOT NULL,
    scope TEXT NOT NULL,       -- canonical scope string: platform, factory:<id>, admin
    hash BLOB NOT NULL,        -- SHA-256 of the whole key
    created_at REAL NOT NULL,  -- Unix seconds
    revoked_at REAL            -- Unix seconds; NULL while the key is valid
) WITHOUT ROWID
"""


class ApiKeyError(Exception):
    """An API key error: bad scope or name, unknown key, or an unusable key file."""


class ScopeError(ApiKeyError, ValueError):
    """A scope string that is not ``platform``, ``factory:<id>`` or ``admin``."""


class KeyNameError(ApiKeyError, ValueError):
    """A key name that cannot be shown safely in a listing."""


class UnknownKeyError(ApiKeyError, LookupError):
    """No key has this id."""


class KeyStoreError(ApiKeyError):
    """A file that is not a key store of this version."""


class MissingKeyStoreError(KeyStoreError):
    """No key store at the path, and it was not to be created."""


class ScopeKind(StrEnum):
    """What a key may read; the tenant of a factory key comes with it in :class:`Scope`."""

    PLATFORM = "platform"
    """The aggregated capacity of every factory, no raw telemetry."""
    FACTORY = "factory"
    """Everything of one factory, nothing of the others."""
    ADMIN = "admin"
    """Everything."""


@dataclass(frozen=True, slots=True)
class Scope:
    """A key's scope; a factory id exactly when the kind is ``factory``."""

    kind: ScopeKind
    factory: str | None = None

    def __post_init__(self) -> None:
        if self.kind is not ScopeKind.FACTORY:
            if self.factory is not None:
                raise ScopeError(f"the {self.kind} scope takes no factory id")
        elif self.factory is None:
            raise ScopeError("the factory scope needs a factory id: factory:<id>")
        else:
            try:
                check_id(self.factory, "factory id")
            except InvalidIdError as exc:
                raise ScopeError(str(exc)) from None

    def __str__(self) -> str:
        """The canonical scope string, as :func:`parse_scope` reads it."""
        return f"factory:{self.factory}" if self.kind is ScopeKind.FACTORY else self.kind.value


def parse_scope(text: str) -> Scope:
    """Read ``platform``, ``factory:<id>`` or ``admin``, exactly; raise :class:`ScopeError`."""
    kind_text, colon, factory = text.partition(":")
    try:
        kind = ScopeKind(kind_text)
    except ValueError:
        raise ScopeError(f"scope {text[:80]!r}: use {SCOPES}") from None
    try:
        return Scope(kind, factory if colon else None)
    except ScopeError as exc:
        raise ScopeError(f"scope {text[:80]!r}: {exc}") from None


def check_key_name(name: str) -> str:
    """Return ``name`` if it can name a key, else raise :class:`KeyNameError`.

    Names are shown in listings and logs: no control characters, no invisible ends.
    """
    if not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable() or name != name.strip():
        raise KeyNameError(
            f"key name {name[:80]!r}: use 1-{MAX_NAME_LENGTH} printable characters, "
            "without leading or trailing spaces"
        )
    return name


class Lookup(Enum):
    """What :meth:`ApiKeyStore.authenticate_cached` answers when it cannot tell."""

    FILE = "the key store file must be read"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who presented a valid key. The API takes the tenant from here, never from the request."""

    key_id: str
    name: str
    scope: Scope

    @property
    def factory(self) -> str | None:
        """The one factory a ``factory`` key may see; None for the other scopes."""
        return self.scope.factory


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A stored key as ``keys list`` shows it: everything but the hash."""

    key_id: str
    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just created: the only time its plain text exists outside its holder."""

    key: str = field(repr=False)
    info: KeyInfo


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched_at: float
    digest: bytes
    revoked: bool
    principal: Principal


def is_key_id(text: str) -> bool:
    """Whether ``text`` is shaped like a key id (not whether such a key exists)."""
    return _KEY_ID_RE.fullmatch(text) is not None


class ApiKeyStore:
    """The key file: create, list and revoke keys, and authenticate presented ones.

    Safe to share between threads. ``sqlite3.OperationalError`` ("database is locked")
    after :data:`BUSY_TIMEOUT_S` is the one retryable error; the others are permanent.
    """

    def __init__(
        self,
        path: Path,
        *,
        create: bool = False,
        cache_ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open the key file; with ``create``, make it (and its folder) if it is missing.

        Without ``create`` a missing file is an error, so that an API pointed at the wrong
        path fails at start instead of turning every key away.
        """
        if not create and not path.exists():
            raise MissingKeyStoreError(f"no API key store at {path}")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._cache_ttl_s = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            self._prepare(create)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if exc.sqlite_errorcode != sqlite3.SQLITE_NOTADB:
                raise
            raise KeyStoreError(f"{path} is not an SQLite database") from None
        except KeyStoreError:
            self._db.close()
            raise

    def _prepare(self, create: bool) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        empty = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if version == 0 and empty and create:
            self._db.execute("PRAGMA journal_mode=WAL")  # kept by the file
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(_SCHEMA)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        elif version != SCHEMA_VERSION:
            raise KeyStoreError(
                f"{self.path} is not an API key store of schema version {SCHEMA_VERSION}"
                f" (its user_version is {version})"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def create(self, name: str, scope: Scope) -> NewKey:
        """Make a key; its plain text is in the result and nowhere else, ever.

        A key id collision (48 random bits) fails with ``sqlite3.IntegrityError``; run
        it again.
        """
        check_key_name(name)
        key_id = secrets.token_hex(_ID_BYTES)
        secret = "".join(secrets.choice(_BASE62) for _ in range(_SECRET_LENGTH))
        key = f"{KEY_PREFIX}{key_id}_{secret}"
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (id, name, scope, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (key_id, name, str(scope), _digest(key), now),
            )
        return NewKey(key, KeyInfo(key_id, name, scope, _time(now), None))

    def list_keys(self) -> list[KeyInfo]:
        """Every key, revoked ones included, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, scope, created_at, revoked_at FROM api_keys"
                " ORDER BY created_at, id"
            ).fetchall()
        return [_info(row) for row in rows]

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key for good; revoking it again keeps the first time.

        It stops authenticating here at once and in other processes within
        :data:`CACHE_TTL_S`. Raises :class:`UnknownKeyError`.
        """
        with self._lock:
            rows = self._db.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?"
                " RETURNING id, name, scope, created_at, revoked_at",
                (time.time(), key_id),
            ).fetchall()  # all: the statement, and so the write, ends only when consumed
            self._cache.pop(key_id, None)
        if not rows:
            raise UnknownKeyError(f"no API key {key_id[:80]!r}")
        return _info(rows[0])

    def authenticate(self, presented: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for any other string.

        A string that is not shaped like a key (any length, any characters) is turned
        away before the database is read. The caller strips the ``Bearer`` or header
        framing and answers None with 401, whatever the reason, so that nothing is learnt.
        """
        key_id = _key_id(presented)
        return None if key_id is None else _verdict(self._entry(key_id), presented)

    def authenticate_cached(self, presented: str) -> Principal | Literal[Lookup.FILE] | None:
        """What :meth:`authenticate` answers, if that is known without reading the file
        (nor waiting for another thread that does): :attr:`Lookup.FILE` otherwise. An event
        loop may call it, and call :meth:`authenticate` in a thread only then."""
        key_id = _key_id(presented)
        if key_id is None:
            return None
        if not self._lock.acquire(blocking=False):
            return Lookup.FILE
        try:
            cached = self._cache.get(key_id)
            fresh = cached is not None and self._clock() - cached.fetched_at < self._cache_ttl_s
        finally:
            self._lock.release()
        return _verdict(cached, presented) if fresh else Lookup.FILE

    def _entry(self, key_id: str) -> _Entry | None:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key_id)
            if cached is not None and now - cached.fetched_at < self._cache_ttl_s:
                return cached
            row = self._db.execute(
                "SELECT name, scope, hash, revoked_at FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
            if row is None:
                return None
            name, scope, digest, revoked_at = row
            entry = _Entry(
                now, digest, revoked_at is not None, Principal(key_id, name, parse_scope(scope))
            )
            self._cache[key_id] = entry
            return entry


def _key_id(presented: str) -> str | None:
    """The key id of a string shaped like a key (None for any other: no file read)."""
    if len(presented) != KEY_LENGTH:
        return None
    match = _KEY_RE.fullmatch(presented)
    return None if match is None else match[1]


def _verdict(entry: "_Entry | None", presented: str) -> Principal | None:
    if entry is None or not hmac.compare_digest(entry.digest, _digest(presented)):
        return None
    return None if entry.revoked else entry.principal


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("ascii")).digest()


def _time(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def _info(row: tuple[str, str, str, float, float | None]) -> KeyInfo:
    key_id, name, scope, created_at, revoked_at = row
    revoked = None if revoked_at is None else _time(revoked_at)
    return KeyInfo(key_id, name, parse_scope(scope), _time(created_at), revoked)
