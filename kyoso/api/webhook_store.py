"""Webhook subscriptions and their deliveries, in one SQLite file (or in memory).

A delivery is written in the same transaction as the watcher's new state of its
subscription (:meth:`WebhookStore.record`), so that a crash neither loses an event nor
sends one twice for the same change; it stays ``pending`` until its receiver answers 2xx
(``delivered``) or it has had its attempts (``failed``), and a restart finds it where it
was. Delivered and failed ones are purged after the retention time.

The file holds the signing secrets (the server must sign with them, so they cannot be
hashed like API keys): it is created readable by its owner only. WAL mode, one connection
shared between threads under a lock: API replicas on one host may share the file (one of
them delivers: :mod:`kyoso.api.webhooks`).
"""

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from .keys import Scope, parse_scope

__all__ = [
    "Delivery",
    "DeliveryStatus",
    "Due",
    "Event",
    "Subscription",
    "WebhookSpec",
    "WebhookStore",
    "WebhookStoreError",
]

SCHEMA_VERSION: Final = 1
"""The layout of the tables, kept in the file's ``user_version``."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,           -- the API key that made it: only it sees it
    scope TEXT NOT NULL,            -- that key's scope then: what it may be told
    spec TEXT NOT NULL,             -- JSON: url, events and filters
    secret TEXT NOT NULL,           -- the signing secret
    state TEXT NOT NULL,            -- JSON: what the watcher last saw for it
    created_at REAL NOT NULL        -- Unix seconds
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscriptions_by_key ON subscriptions (key_id);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,             -- the JSON posted, the same bytes at every attempt
    status TEXT NOT NULL,           -- pending, delivered or failed
    attempts INTEGER NOT NULL DEFAULT 0,
    status_code INTEGER,            -- of the last attempt (null: no answer)
    error TEXT,                     -- of the last attempt that failed
    next_attempt_at REAL,           -- Unix seconds, while pending
    created_at REAL NOT NULL,
    finished_at REAL                -- delivered or failed at
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_subscription ON deliveries (subscription, seq);
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (finished_at)
    WHERE status != 'pending';
"""

DeliveryStatus = Literal["pending", "delivered", "failed"]


class WebhookStoreError(Exception):
    """A file that is not a webhook store of this version."""


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """What a subscription asks for: its receiver, event types and filters."""

    url: str
    events: tuple[str, ...]
    factory: str | None = None
    process: str | None = None
    min_available_h: float | None = None
    """The threshold: at least this many available hours of ``process``."""
    horizon_h: float = 24.0
    """Within this many hours from now."""
    machines: tuple[tuple[str, str], ...] = ()
    """Watched machines: (factory, machine)."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A stored subscription."""

    id: str
    key_id: str
    scope: Scope
    spec: WebhookSpec
    secret: str = field(repr=False)
    state: Mapping[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class Event:
    """An event as posted: ``body`` is its JSON, signed and sent byte for byte."""

    id: str
    type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one subscription, as its log shows it."""

    seq: int
    subscription: str
    event_id: str
    type: str
    status: DeliveryStatus
    attempts: int
    status_code: int | None
    error: str | None
    next_attempt_at: float | None
    created_at: float
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class Due:
    """A pending delivery to attempt now, with what sending it needs."""

    seq: int
    subscription: str
    event_id: str
    body: bytes
    attempts: int
    url: str
    secret: str = field(repr=False)


def _spec_json(spec: WebhookSpec) -> str:
    data = {
        "url": spec.url,
        "events": list(spec.events),
        "factory": spec.factory,
        "process": spec.process,
        "min_available_h": spec.min_available_h,
        "horizon_h": spec.horizon_h,
        "machines": [f"{f}/{m}" for f, m in spec.machines],
        "description": spec.description,
    }
    return json.dumps(data, separators=(",", ":"))


def _spec(text: str) -> WebhookSpec:
    data = json.loads(text)
    machines = tuple((f, m) for f, _, m in (w.partition("/") for w in data.pop("machines")))
    return WebhookSpec(events=tuple(data.pop("events")), machines=machines, **data)


_SUBSCRIPTION: Final = (
    "SELECT id, key_id, scope, spec, secret, state, created_at FROM subscriptions"
)
_DELIVERY: Final = (
    "SELECT seq, subscription, event_id, type, status, attempts, status_code, error,"
    " next_attempt_at, created_at, finished_at FROM deliveries"
)


def _subscription(row: tuple[Any, ...]) -> Subscription:
    sub_id, key_id, scope, spec, secret, state, created_at = row
    return Subscription(
        sub_id, key_id, parse_scope(scope), _spec(spec), secret, json.loads(state), created_at
    )


class WebhookStore:
    """Subscriptions and deliveries; thread-safe, closes with :meth:`close`."""

    def __init__(self, path: Path | None) -> None:
        """Open (or make) the store at ``path``; None: in memory."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # private from the start
        target = ":memory:" if path is None else str(path)
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._writes = 0
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise WebhookStoreError(
                    f"{path} is not a webhook store of schema version {SCHEMA_VERSION}"
                    f" (its user_version is {version})"
                )
            if path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise WebhookStoreError(f"{path} is not a usable webhook store: {exc}") from None
        except WebhookStoreError:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the file (once a call under way in another thread is done)."""
        with self._lock:
            self._db.close()

    def version(self) -> tuple[int, int]:
        """Changes when anything was written, by this process or another one."""
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0], self._writes

    def _write(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> list[int]:
        """Run ``statements`` in one transaction; the rows each changed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = [self._db.execute(sql, args).rowcount for sql, args in statements]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._writes += 1
            return changed

    # --- subscriptions ------------------------------------------------------------------

    def add(self, sub: Subscription, max_per_key: int) -> bool:
        """Store ``sub`` unless its key has ``max_per_key`` subscriptions already."""
        [added] = self._write(
            [
                (
                    "INSERT INTO subscriptions (id, key_id, scope, spec, secret, state, created_at)"
                    " SELECT ?, ?, ?, ?, ?, ?, ?"
                    " WHERE (SELECT count(*) FROM subscriptions WHERE key_id = ?) < ?",
                    (
                        sub.id,
                        sub.key_id,
                        str(sub.scope),
                        _spec_json(sub.spec),
                        sub.secret,
                        json.dumps(sub.state),
                        sub.created_at,
                        sub.key_id,
                        max_per_key,
                    ),
                )
            ]
        )
        return added == 1

    def subscriptions(self, key_id: str | None = None) -> list[Subscription]:
        """Those of ``key_id`` (None: all), oldest first."""
        where, args = ("", ()) if key_id is None else (" WHERE key_id = ?", (key_id,))
        with self._lock:
            rows = self._db.execute(f"{_SUBSCRIPTION}{where} ORDER BY created_at, id", args)
            return [_subscription(row) for row in rows.fetchall()]

    def subscription(self, sub_id: str, key_id: str) -> Subscription | None:
        """``sub_id`` if ``key_id`` made it."""
        with self._lock:
            row = self._db.execute(
                f"{_SUBSCRIPTION} WHERE id = ? AND key_id = ?", (sub_id, key_id)
            ).fetchone()
        return None if row is None else _subscription(row)

    def delete(self, sub_id: str, key_id: str) -> bool:
        """Delete ``sub_id`` of ``key_id`` with its deliveries, pending ones included."""
        sql = "DELETE FROM subscriptions WHERE id = ? AND key_id = ?"
        return self._write([(sql, (sub_id, key_id))]) == [1]

    def delete_keys(self, key_ids: Iterable[str]) -> int:
        """Delete every subscription of these keys (revoked ones); how many."""
        sql = "DELETE FROM subscriptions WHERE key_id = ?"
        return sum(self._write([(sql, (key_id,)) for key_id in key_ids]))

    # --- deliveries -----------------------------------------------------------------------

    def record(
        self,
        states: Mapping[str, Mapping[str, Any]],
        deliveries: Iterable[tuple[str, Event]],
        *,
        now: float,
        max_pending: int,
    ) -> int:
        """In one transaction: the subscriptions' new ``states`` and their events, each
        pending from ``now``, or failed at once when its subscription has ``max_pending``
        waiting already. A subscription deleted meanwhile gets neither. How many are
        pending."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE subscriptions SET state = ? WHERE id = ?", (json.dumps(state), sub_id))
            for sub_id, state in states.items()
        ]
        insert = (
            "INSERT INTO deliveries (subscription, event_id, type, body, status, error,"
            " next_attempt_at, created_at, finished_at)"
            " SELECT ?1, ?2, ?3, ?4, 'pending', NULL, ?5, ?5, NULL"
            " WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = ?1)"
            " AND (SELECT count(*) FROM deliveries"
            "      WHERE subscription = ?1 AND status = 'pending') < ?6"
        )
        overflow = (
            "INSERT INTO deliveries (subscription, event_id, type, body, status, error,"
            " created_at, finished_at)"
            " SELECT ?1, ?2, ?3, ?4, 'failed', ?6, ?5, ?5"
            " WHERE EXISTS (SELECT 1 FROM subscriptions WHERE id = ?1)"
            " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE subscription = ?1"
            "                 AND event_id = ?2)"
        )
        full = f"not sent: {max_pending} deliveries of this subscription were waiting already"
        count = len(statements)
        for sub_id, event in deliveries:
            statements.append(
                (insert, (sub_id, event.id, event.type, event.body, now, max_pending))
            )
            statements.append((overflow, (sub_id, event.id, event.type, event.body, now, full)))
        changed = self._write(statements) if statements else []
        return sum(changed[count::2])

    def due(self, now: float, busy: set[str], limit: int) -> list[Due]:
        """Up to ``limit`` pending deliveries due at ``now``, the oldest first, one per
        subscription and none of the ``busy`` ones (a delivery of theirs is in flight)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT d.seq, d.subscription, d.event_id, d.body, d.attempts, s.spec, s.secret"
                " FROM deliveries d JOIN subscriptions s ON s.id = d.subscription"
                " WHERE d.status = 'pending' AND d.next_attempt_at <= ?"
                " ORDER BY d.next_attempt_at, d.seq",
                (now,),
            )
            found: dict[str, Due] = {}
            for seq, sub_id, event_id, body, attempts, spec, secret in rows:
                if sub_id in busy or sub_id in found:
                    continue
                url = json.loads(spec)["url"]
                found[sub_id] = Due(seq, sub_id, event_id, body, attempts, url, secret)
                if len(found) >= limit:
                    break
        return list(found.values())

    def next_due(self, busy: set[str]) -> float | None:
        """When the next pending delivery not of the ``busy`` subscriptions is due (None:
        none is pending)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT subscription, min(next_attempt_at) FROM deliveries"
                " WHERE status = 'pending' GROUP BY subscription"
            ).fetchall()
        return min((float(at) for sub_id, at in rows if sub_id not in busy), default=None)

    def attempted(
        self,
        seq: int,
        *,
        status: DeliveryStatus,
        status_code: int | None,
        error: str | None,
        at: float,
        next_attempt_at: float | None = None,
    ) -> None:
        """Record an attempt of delivery ``seq`` made ``at``: delivered, failed for good, or
        pending again until ``next_attempt_at``."""
        finished = None if status == "pending" else at
        self._write(
            [
                (
                    "UPDATE deliveries SET status = ?, attempts = attempts + 1,"
                    " status_code = ?, error = ?, next_attempt_at = ?, finished_at = ?"
                    " WHERE seq = ?",
                    (status, status_code, error, next_attempt_at, finished, seq),
                )
            ]
        )

    def deliveries(self, sub_id: str, limit: int) -> list[Delivery]:
        """The log of ``sub_id``: its latest ``limit`` deliveries, newest first."""
        with self._lock:
            rows = self._db.execute(
                f"{_DELIVERY} WHERE subscription = ? ORDER BY seq DESC LIMIT ?", (sub_id, limit)
            ).fetchall()
        return [Delivery(*row) for row in rows]

    def purge(self, finished_before: float) -> int:
        """Delete the delivered and failed deliveries finished before then; how many."""
        sql = "DELETE FROM deliveries WHERE status != 'pending' AND finished_at < ?"
        return sum(self._write([(sql, (finished_before,))]))
