"""The gateway's durable on-disk outbox: every sample enters it first, and leaves it only
once the store has it.

Promises:

- **Numbering.** :meth:`SqliteOutbox.append` gives each sample the next per-gateway sequence
  number (+1 per sample). The counter is stored in the same transaction as the rows, so a
  restart continues the sequence and a number is never handed out twice, even for samples
  that have left the outbox. Each row keeps the session id of the process that numbered
  it, so a replay after a reboot carries its original session.
- **Durability.** When ``append`` returns, its rows are committed to an SQLite database in
  WAL mode. Killing the process at any point after that loses none of them (the WAL has
  been written); with ``synchronous="full"`` (the default) the commit has also been
  fsynced, so a power cut does not lose them either.
- **Leaving.** A row leaves only through :meth:`confirm` (an ingest worker's store receipt
  covers its session and seq: the store has it), :meth:`mark_delivered` (used instead under
  ``confirm: broker``, at a successful PUBACK), :meth:`mark_refused` (moved to the
  ``refused`` table, counted, kept for inspection and :meth:`requeue_refused`), or the
  full-outbox policy (counted, its seq range recorded).
- **Sent is not stored.** :meth:`mark_sent` records when the broker acknowledged a row; the
  row stays, counted in :meth:`unconfirmed`. :meth:`pending` at a moment ``now`` offers the
  rows never sent and those sent ``confirm_timeout_s`` or more before ``now`` without a
  receipt, so a sample the broker lost (a crash before its autosave, no subscriber yet) is
  sent again. ``sent_at`` is wall-clock time, kept across restarts: if the clock is set back,
  rows sent "in the future" wait until it catches up.
- **Full outbox** (``max_rows`` / ``max_bytes`` of encoded samples, sent or not), per
  ``policy``: ``drop_oldest`` (default) deletes the oldest pending rows until the new ones
  fit, counts them in ``dropped`` and records the dropped seq range, so a consumer's gap is
  explained; ``reject_new`` refuses the whole ``append`` call with :class:`OutboxFullError`,
  stores none of it, and counts it in ``rejected``. ``drop_oldest`` keeps the newest data, which
  live capacity needs; ``reject_new`` keeps the oldest, for sites that value the past more.

One process writes an outbox: :class:`SqliteOutbox` takes an exclusive ``flock`` on a
sidecar ``.lock`` file, and a second opener fails with :class:`OutboxLockedError`. Within
the process every method holds one lock, so the outbox may be shared between threads.

Schema version 2 added ``sent_at``; a version 1 file is migrated in place when opened (its
rows had no successful PUBACK yet: they count as never sent).
"""

import contextlib
import fcntl
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from kyoso.contract import Sample, check_id

from .errors import GatewayError
from .outbox_config import ConfirmMode, FullPolicy, OutboxConfig

__all__ = [
    "ConfirmMode",
    "DroppedRange",
    "FullPolicy",
    "OutboxConfig",
    "OutboxError",
    "OutboxFullError",
    "OutboxLockedError",
    "OutboxRow",
    "RefusedRow",
    "SqliteOutbox",
]

log = logging.getLogger(__name__)

_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY, session TEXT NOT NULL, payload BLOB NOT NULL,
    appended_at REAL NOT NULL, sent_at REAL);
CREATE INDEX IF NOT EXISTS outbox_sent_at ON outbox (sent_at);
CREATE TABLE IF NOT EXISTS refused (
    seq INTEGER PRIMARY KEY, session TEXT NOT NULL, payload BLOB NOT NULL,
    appended_at REAL NOT NULL, reason TEXT NOT NULL, refused_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dropped (
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, count INTEGER NOT NULL,
    bytes INTEGER NOT NULL, dropped_at REAL NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('next_seq', 0), ('dropped', 0), ('rejected', 0),
    ('refused', 0);
"""
_MIGRATIONS = {1: "ALTER TABLE outbox ADD COLUMN sent_at REAL;"}
"""By the version they migrate from, the statements that bring a file to the next one."""


class OutboxError(GatewayError):
    """Root of the outbox's errors."""


class OutboxFullError(OutboxError):
    """``append`` refused under the ``reject_new`` policy; nothing of the call was stored."""


class OutboxLockedError(OutboxError):
    """Another process (or another open outbox in this one) holds the outbox."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A pending sample: its number, the session that numbered it, its encoded JSON, and when
    the broker last acknowledged it (epoch seconds; None: never)."""

    seq: int
    session: str
    payload: bytes
    sent_at: float | None = None


@dataclass(frozen=True, slots=True)
class RefusedRow:
    """A sample the broker refused, kept for inspection."""

    seq: int
    session: str
    payload: bytes
    reason: str
    refused_at: float


@dataclass(frozen=True, slots=True)
class DroppedRange:
    """Samples dropped by a full outbox: ``count`` pending rows with seqs in the range.

    Seqs inside the range that are not counted had left the outbox already; a dropped row
    that had been sent (or was in flight) may have been stored too.
    """

    first_seq: int
    last_seq: int
    count: int
    bytes: int
    dropped_at: float


class SqliteOutbox:
    """The durable outbox of one gateway; see the module docstring for what it promises."""

    def __init__(self, config: OutboxConfig, *, session: str | None = None) -> None:
        self.config = config
        self.session = check_id(session if session is not None else str(uuid.uuid4()), "session")
        self._lock = threading.Lock()
        self._lock_file = _acquire_file_lock(config.path)
        try:
            self._db = sqlite3.connect(config.path, isolation_level=None, check_same_thread=False)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxError(f"{config.path}: SQLite refused WAL mode (got {mode!r})")
            self._db.execute(f"PRAGMA synchronous={config.synchronous.upper()}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, *_MIGRATIONS, _SCHEMA_VERSION):
                raise OutboxError(f"{config.path}: unknown outbox schema version {version}")
            # A new file (version 0) gets the current schema at once.
            steps = range(version, _SCHEMA_VERSION) if version else range(0)
            migrations = "".join(_MIGRATIONS[step] for step in steps)
            self._db.executescript(
                f"BEGIN; {migrations} {_SCHEMA} PRAGMA user_version={_SCHEMA_VERSION}; COMMIT;"
            )
            if version and version < _SCHEMA_VERSION:
                log.info("outbox %s: migrated from schema version %d", config.path, version)
            depth, size, sent = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0), count(sent_at) FROM outbox"
            ).fetchone()
        except BaseException:
            self._lock_file.close()
            raise
        self._depth: int = depth
        self._bytes: int = size
        self._sent: int = sent
        log.info(
            "outbox %s: %d samples pending (%d sent, unconfirmed), session %s",
            config.path,
            depth,
            sent,
            self.session,
        )

    # --- writing --------------------------------------------------------------------------

    def append(self, samples: Sequence[Sample]) -> list[int]:
        """Number, encode and store ``samples`` in one transaction; return their seqs.

        The ``seq`` each given sample carries is ignored (build them with ``seq=0``): the
        outbox assigns the next numbers, in the order given. Raises :class:`OutboxFullError`
        under the ``reject_new`` policy if they do not all fit.
        """
        if not samples:
            return []
        now = time.time()
        refusal: str | None = None
        with self._lock, self._transaction():
            first = self._meta("next_seq")
            seqs = list(range(first, first + len(samples)))
            rows = [
                (seq, self.session, _encode(sample, seq), now)
                for seq, sample in zip(seqs, samples, strict=True)
            ]
            added = sum(len(row[2]) for row in rows)
            cfg = self.config
            fits = self._depth + len(rows) <= cfg.max_rows and self._bytes + added <= cfg.max_bytes
            if not fits and cfg.policy is FullPolicy.REJECT_NEW:
                self._bump("rejected", len(rows))
                refusal = (
                    f"outbox full ({self._depth} samples, {self._bytes} bytes): "
                    f"rejected {len(rows)} new samples"
                )
            else:
                self._db.executemany(
                    "INSERT INTO outbox (seq, session, payload, appended_at) VALUES (?, ?, ?, ?)",
                    rows,
                )
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'next_seq'", (seqs[-1] + 1,)
                )
                self._depth += len(rows)
                self._bytes += added
                self._drop_oldest_beyond_limits(now)
        if refusal is not None:
            log.warning("%s", refusal)
            raise OutboxFullError(refusal)
        return seqs

    def mark_sent(self, seqs: Iterable[int], at: float) -> int:
        """Record that the broker acknowledged rows at ``at`` (epoch seconds); return how many
        were pending (others are ignored). The rows stay until :meth:`confirm`; one sent
        again gets the new time."""
        keys = [(at, seq) for seq in seqs]
        with self._lock, self._transaction():
            again = self._db.executemany(
                "UPDATE outbox SET sent_at = ? WHERE seq = ? AND sent_at IS NOT NULL", keys
            ).rowcount
            first = self._db.executemany(
                "UPDATE outbox SET sent_at = ? WHERE seq = ? AND sent_at IS NULL", keys
            ).rowcount
            self._sent += first
        return again + first

    def confirm(self, session: str, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the rows of ``session`` whose seq lies in one of the ``[first, last]``
        ranges (a store receipt's); return how many were pending (others are ignored)."""
        deleted = size = sent = 0
        with self._lock, self._transaction():
            for first, last in ranges:
                for length, was_sent in self._db.execute(
                    "DELETE FROM outbox WHERE seq BETWEEN ? AND ? AND session = ? "
                    "RETURNING length(payload), sent_at IS NOT NULL",
                    (first, last, session),
                ):
                    deleted, size, sent = deleted + 1, size + length, sent + was_sent
            self._forget(deleted, size, sent)
        return deleted

    def mark_delivered(self, seqs: Sequence[int]) -> int:
        """Delete acknowledged rows (under ``confirm: broker``); return how many were pending
        (others are ignored)."""
        if not seqs:
            return 0
        with self._lock, self._transaction():
            return self._delete(seqs)

    def mark_refused(self, seqs: Iterable[int], reason: str) -> int:
        """Move rows the broker refused to the ``refused`` table; return how many moved.

        They are not published again unless :meth:`requeue_refused` puts them back.
        """
        keys = [(seq,) for seq in seqs]
        now = time.time()
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO refused SELECT seq, session, payload, appended_at, ?, ? "
                "FROM outbox WHERE seq = ?",
                [(reason, now, key[0]) for key in keys],
            )
            moved = self._delete(key[0] for key in keys)
            self._bump("refused", moved)
        if moved:
            log.warning("outbox: %d samples refused by the broker: %s", moved, reason)
        return moved

    def requeue_refused(self, seqs: Iterable[int] | None = None) -> int:
        """Put refused rows (all, or those of ``seqs``) back in the outbox, keeping their seq.

        For an operator who fixed the cause (an ACL, a quota). Limits are not applied. A
        running publisher sends them with its next backlog pass, after its next reconnect.
        """
        select = "SELECT seq, session, payload, appended_at FROM refused"
        with self._lock, self._transaction():
            if seqs is None:
                rows = self._db.execute(select).fetchall()
            else:
                rows = [r for s in seqs for r in self._db.execute(f"{select} WHERE seq = ?", (s,))]
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (seq, session, payload, appended_at) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
            self._db.executemany("DELETE FROM refused WHERE seq = ?", [(r[0],) for r in rows])
            self._depth += len(rows)
            self._bytes += sum(len(r[2]) for r in rows)
        return len(rows)

    # --- reading --------------------------------------------------------------------------

    def pending(
        self,
        limit: int,
        *,
        after: int = -1,
        through: int | None = None,
        now: float | None = None,
    ) -> list[OutboxRow]:
        """Up to ``limit`` pending rows with ``after < seq <= through``, in seq order.

        With ``now`` (epoch seconds), only the rows to send at that moment: never sent, or
        sent at ``now - confirm_timeout_s`` or before. Without, every pending row.
        """
        upper = 2**63 - 1 if through is None else through
        due = math.inf if now is None else now - self.config.confirm_timeout_s
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, session, payload, sent_at FROM outbox WHERE seq > ? AND seq <= ? "
                "AND (sent_at IS NULL OR sent_at <= ?) ORDER BY seq LIMIT ?",
                (after, upper, due, limit),
            ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def next_due(self, after: float) -> float | None:
        """The first moment later than ``after`` at which a sent row becomes due again (its
        ``sent_at`` plus ``confirm_timeout_s``); None if there is none."""
        timeout = self.config.confirm_timeout_s
        with self._lock:
            (first,) = self._db.execute(
                "SELECT min(sent_at) FROM outbox WHERE sent_at > ?", (after - timeout,)
            ).fetchone()
        return None if first is None else first + timeout

    def refused(self, limit: int = 1000) -> list[RefusedRow]:
        """Refused rows in seq order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, session, payload, reason, refused_at FROM refused "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [RefusedRow(*row) for row in rows]

    def dropped_ranges(self) -> list[DroppedRange]:
        """Every seq range dropped by the ``drop_oldest`` policy, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM dropped ORDER BY first_seq").fetchall()
        return [DroppedRange(*row) for row in rows]

    def depth(self) -> int:
        """Pending rows (not yet confirmed, delivered, refused or dropped), sent or not."""
        return self._depth

    def unconfirmed(self) -> int:
        """Pending rows the broker has acknowledged, awaiting a store receipt."""
        return self._sent

    @property
    def pending_bytes(self) -> int:
        """Bytes of encoded pending samples (what ``max_bytes`` limits)."""
        return self._bytes

    @property
    def last_seq(self) -> int:
        """The highest seq ever handed out, or -1 before the first append."""
        with self._lock:
            return self._meta("next_seq") - 1

    @property
    def dropped(self) -> int:
        """Samples dropped by a full outbox since it was created (persisted)."""
        with self._lock:
            return self._meta("dropped")

    @property
    def rejected(self) -> int:
        """Samples rejected by a full outbox since it was created (persisted)."""
        with self._lock:
            return self._meta("rejected")

    @property
    def refused_total(self) -> int:
        """Samples the broker refused since the outbox was created (persisted)."""
        with self._lock:
            return self._meta("refused")

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and release the lock; idempotent."""
        with self._lock:
            if not self._lock_file.closed:
                self._db.close()
                self._lock_file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- internals (called with self._lock held) ------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; on error, roll back and restore the counters."""
        saved = (self._depth, self._bytes, self._sent)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._depth, self._bytes, self._sent = saved
            raise
        self._db.execute("COMMIT")

    def _meta(self, key: str) -> int:
        value: int = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
        return value

    def _bump(self, key: str, by: int) -> None:
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = ?", (by, key))

    def _delete(self, seqs: Iterable[int]) -> int:
        deleted = size = sent = 0
        for seq in seqs:
            for length, was_sent in self._db.execute(
                "DELETE FROM outbox WHERE seq = ? RETURNING length(payload), sent_at IS NOT NULL",
                (seq,),
            ):
                deleted, size, sent = deleted + 1, size + length, sent + was_sent
        self._forget(deleted, size, sent)
        return deleted

    def _forget(self, rows: int, size: int, sent: int) -> None:
        """Take deleted rows (``sent`` of them sent) out of the counters."""
        self._depth -= rows
        self._bytes -= size
        self._sent -= sent

    def _drop_oldest_beyond_limits(self, now: float) -> None:
        excess_rows = self._depth - self.config.max_rows
        excess_bytes = self._bytes - self.config.max_bytes
        if excess_rows <= 0 and excess_bytes <= 0:
            return
        count = size = sent = 0
        first = last = -1
        for seq, length, was_sent in self._db.execute(
            "SELECT seq, length(payload), sent_at IS NOT NULL FROM outbox ORDER BY seq"
        ):
            if count >= excess_rows and size >= excess_bytes:
                break
            first = seq if count == 0 else first
            last, count, size, sent = seq, count + 1, size + length, sent + was_sent
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
        self._db.execute(
            "INSERT INTO dropped VALUES (?, ?, ?, ?, ?)", (first, last, count, size, now)
        )
        self._bump("dropped", count)
        self._forget(count, size, sent)
        log.warning("outbox full: dropped %d oldest samples (seq %d..%d)", count, first, last)


def _encode(sample: Sample, seq: int) -> bytes:
    # The contract's canonical form (as `encode` writes it); stored so a replay re-sends
    # byte-for-byte what was first sent.
    return sample.model_copy(update={"seq": seq}).model_dump_json(exclude_none=True).encode()


def _acquire_file_lock(path: Path) -> IO[bytes]:
    lock_path = path.with_name(path.name + ".lock")
    handle = lock_path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutboxLockedError(f"outbox {path} is open in another process") from None
    return handle
