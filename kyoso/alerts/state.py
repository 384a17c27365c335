"""What the alerts remember between looks and across restarts: one small SQLite file.

Two tables. ``alerts``: each (owner, rule, subject) whose condition holds, since when, and
once it fired, when it was last sent, with the facts its messages name; so a restart neither
fires again what had fired nor forgets to send its recovery. ``outbox``: every message not
yet delivered, per recipient and channel (a digest of the channel's URL, never the URL: it
may hold a password or token), when it is due, and its attempts. A look's changes to both
are committed together, so a message is queued exactly when its alert changes.
"""

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .errors import StateInUseError

__all__ = ["AlertRow", "AlertState", "Outgoing", "Queued"]

SCHEMA_VERSION = 1
"""The layout of the tables, kept in the file's ``user_version``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    owner TEXT NOT NULL,      -- the factory whose recipients are told
    rule TEXT NOT NULL,
    subject TEXT NOT NULL,    -- machine, gateway, process, or partner/machine
    since REAL NOT NULL,      -- Unix seconds: when the condition began
    fired_at REAL,            -- NULL while it has not held long enough
    sent_at REAL,             -- when it was last sent (fired or reminded)
    facts TEXT NOT NULL,      -- JSON: what its messages name
    PRIMARY KEY (owner, rule, subject)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    recipient TEXT NOT NULL,
    channel TEXT NOT NULL,    -- digest of the channel's URL
    held INTEGER NOT NULL,    -- 1: held by quiet hours (sent in a digest)
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (failed, due_at);
"""


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert whose condition holds (pending, or fired)."""

    rule: str
    subject: str
    since: float
    fired_at: float | None
    sent_at: float | None
    facts: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to queue for one channel of one recipient."""

    owner: str
    recipient: str
    channel: str
    held: bool
    title: str
    body: str
    due_at: float


@dataclass(frozen=True, slots=True)
class Queued:
    """A message in the outbox."""

    id: int
    owner: str
    recipient: str
    channel: str
    held: bool
    title: str
    body: str
    attempts: int


class AlertState:
    """The state file; used from one thread (the engine's event loop), by one process: it
    holds SQLite's exclusive lock from its first write until closed, so that a second
    ``kyoso alerts`` on the same file (which would send every message twice) is refused."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=0)
        self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(f"{path}: an alerts state file of version {version}, not 1")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            # A write each time it opens: the exclusive lock is taken now, not at the first
            # alert.
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.commit()
        except sqlite3.OperationalError as exc:
            self._db.close()
            if "locked" not in str(exc):
                raise
            raise StateInUseError(
                f"{path} is in use by another kyoso alerts: one process per state file, or "
                "each would send every message"
            ) from None
        except ValueError:
            self._db.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # --- alerts -----------------------------------------------------------------------------

    def alerts(self, owner: str, rule: str) -> dict[str, AlertRow]:
        """The owner's alerts of ``rule`` by subject."""
        rows = self._db.execute(
            "SELECT subject, since, fired_at, sent_at, facts FROM alerts"
            " WHERE owner = ? AND rule = ?",
            (owner, rule),
        )
        return {
            subject: AlertRow(rule, subject, since, fired, sent, json.loads(facts))
            for subject, since, fired, sent, facts in rows
        }

    def begin(self, owner: str, rule: str, subject: str, since: float, facts: object) -> None:
        """The condition holds, since ``since``; not fired yet."""
        self._db.execute(
            "INSERT INTO alerts (owner, rule, subject, since, facts) VALUES (?, ?, ?, ?, ?)",
            (owner, rule, subject, since, json.dumps(facts)),
        )

    def sent(self, owner: str, rule: str, subject: str, at: float, facts: object) -> None:
        """It fired (or reminded) at ``at`` with ``facts``."""
        self._db.execute(
            "UPDATE alerts SET fired_at = coalesce(fired_at, ?), sent_at = ?, facts = ?"
            " WHERE owner = ? AND rule = ? AND subject = ?",
            (at, at, json.dumps(facts), owner, rule, subject),
        )

    def end(self, owner: str, rule: str, subject: str | None = None) -> None:
        """The condition is over (``subject`` None: every subject of the rule)."""
        if subject is None:
            self._db.execute("DELETE FROM alerts WHERE owner = ? AND rule = ?", (owner, rule))
        else:
            self._db.execute(
                "DELETE FROM alerts WHERE owner = ? AND rule = ? AND subject = ?",
                (owner, rule, subject),
            )

    # --- outbox -----------------------------------------------------------------------------

    def queue(self, messages: Iterable[Outgoing]) -> None:
        self._db.executemany(
            "INSERT INTO outbox (owner, recipient, channel, held, title, body, due_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (m.owner, m.recipient, m.channel, int(m.held), m.title, m.body, m.due_at)
                for m in messages
            ],
        )

    def commit(self) -> None:
        """Keep every change since the last commit, together."""
        self._db.commit()

    def due(self, now: float) -> list[Queued]:
        """Messages due by ``now``, oldest first (failed ones excepted)."""
        rows = self._db.execute(
            "SELECT id, owner, recipient, channel, held, title, body, attempts FROM outbox"
            " WHERE failed = 0 AND due_at <= ? ORDER BY id",
            (now,),
        )
        return [Queued(i, o, r, c, bool(h), t, b, a) for i, o, r, c, h, t, b, a in rows]

    def next_due(self) -> float | None:
        """When the next message falls due; None: none waits."""
        found: float | None = self._db.execute(
            "SELECT min(due_at) FROM outbox WHERE failed = 0"
        ).fetchone()[0]
        return found

    def delivered(self, ids: Iterable[int]) -> None:
        self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        self._db.commit()

    def retry(self, ids: Iterable[int], due_at: float, error: str, *, failed: bool) -> None:
        """One more attempt failed: try again at ``due_at``, or never (``failed``)."""
        self._db.executemany(
            "UPDATE outbox SET attempts = attempts + 1, due_at = ?, last_error = ?, failed = ?"
            " WHERE id = ?",
            [(due_at, error, int(failed), i) for i in ids],
        )
        self._db.commit()

    def failed(self) -> int:
        """Messages given up on (kept, for an operator to read)."""
        count: int = self._db.execute("SELECT count(*) FROM outbox WHERE failed = 1").fetchone()[0]
        return count
