"""The dead-letter store: every message or line the ingest refuses, with the reason.

Nothing is dropped silently. A refused message is kept with its topic, its reason code
(the contract's dead-letter reasons, plus the writer's), a precise detail and a bounded
copy of the raw payload, so an operator can see what a gateway sent and why it was
refused. Counts by reason survive restarts. The store is SQLite, written in one
transaction per call, before the message is acknowledged to the broker.
"""

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MAX_PAYLOAD_COPY = 4096
"""Bytes of a refused payload kept; the rest is counted, not stored."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One refused message (or one refused line of a message)."""

    id: int
    received_at: float
    topic: str
    reason: str
    detail: str
    payload: bytes
    """The first :data:`MAX_PAYLOAD_COPY` bytes of the payload."""
    payload_size: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, id);
"""


class DeadLetterStore:
    """Append-only store of refused messages; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def add(self, topic: str, reason: str, detail: str, payload: bytes) -> int:
        """Keep one refused message; return its id."""
        return self.add_many([(topic, reason, detail, payload)])[0]

    def add_many(self, letters: list[tuple[str, str, str, bytes]]) -> list[int]:
        """Keep several refused messages in one transaction; return their ids."""
        now = time.time()
        ids: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for topic, reason, detail, payload in letters:
                    cursor = self._db.execute(
                        "INSERT INTO dead_letters (received_at, topic, reason, detail, payload,"
                        " payload_size) VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            now,
                            topic[:1024],
                            reason,
                            detail[:2000],
                            payload[:MAX_PAYLOAD_COPY],
                            len(payload),
                        ),
                    )
                    ids.append(int(cursor.lastrowid or 0))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def counts(self) -> dict[str, int]:
        """How many dead letters there are, by reason."""
        with self._lock:
            rows = self._db.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
            ).fetchall()
        return dict(rows)

    def letters(
        self, *, reason: str | None = None, limit: int = 50, after: int = 0
    ) -> list[DeadLetter]:
        """Dead letters in arrival order, optionally of one reason, after an id."""
        query = "SELECT * FROM dead_letters WHERE id > ?"
        params: list[object] = [after]
        if reason is not None:
            query += " AND reason = ?"
            params.append(reason)
        query += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(query, params).fetchall()
        return [DeadLetter(*row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter | None:
        """One dead letter by id."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM dead_letters WHERE id = ?", (letter_id,)
            ).fetchone()
        return DeadLetter(*row) if row is not None else None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
