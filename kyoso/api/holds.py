"""Holds and orders: machine time the matching platform reserves at a factory.

The platform holds ``hours`` of work on a machine within ``[start, end)`` for one of its
orders; the factory confirms the hold (it is then an order) or releases it; a hold nobody
confirms expires by itself at ``expires_at``::

    held ── confirm (the factory) ──▶ confirmed ── release (the factory) ──▶ released
      ├──── release (the factory, or the platform that placed it) ─────────▶ released
      └──── expires_at passes ─────────────────────────────────────────────▶ expired

Changes are told to webhooks (kyoso/api/webhooks.py): by the routes as they make them, and
an expiry by the webhooks' watcher, which asks for the expiries not yet told.

A held or confirmed hold whose window has not ended is committed load on its machine, on
top of the forecast (:func:`kyoso.capacity.forecast.forecast`): exactly once, as one row
whatever its state. Every change is written to its factory's audit log in the same
transaction; an expiry is logged at its ``expires_at`` by whichever call finds it first.

``create`` is given the holds that the capacity check counted; if another writer (an API
replica on the same file) placed one on the machine since, it raises :class:`StaleCheckError`
and the caller checks again, so two holds never share room that only one of them got.
An idempotency key makes a retried ``create`` answer with the hold it made the first time
(for 24 hours); the same key with another request is refused.

The table lives in the bookings file (``bookings_path``): one SQLite file in WAL mode,
shared by replicas on one host, each call one short transaction.
"""

import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from kyoso.capacity.forecast import Booking

__all__ = [
    "IDEMPOTENCY_TTL",
    "MAX_ACTIVE_PER_MACHINE",
    "Action",
    "AuditEntry",
    "Hold",
    "HoldConflictError",
    "HoldStatus",
    "HoldStore",
    "IdempotencyReusedError",
    "NewHold",
    "StaleCheckError",
    "digest",
]

HoldStatus = Literal["held", "confirmed", "released", "expired"]
Action = Literal["created", "confirmed", "released", "expired", "bookings_put", "bookings_cleared"]
MAX_ACTIVE_PER_MACHINE: Final = 500
IDEMPOTENCY_TTL: Final = timedelta(hours=24)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS holds (
    id TEXT PRIMARY KEY, factory TEXT NOT NULL, machine TEXT NOT NULL, process TEXT,
    start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, hours REAL NOT NULL,
    order_ref TEXT NOT NULL, status TEXT NOT NULL, expires_us INTEGER NOT NULL,
    placed_by TEXT NOT NULL, created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
    expiry_told INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS holds_machine ON holds (factory, machine, status);
CREATE INDEX IF NOT EXISTS holds_expiry ON holds (status, expires_us);
CREATE TABLE IF NOT EXISTS hold_requests (
    caller TEXT NOT NULL, key TEXT NOT NULL, request TEXT NOT NULL, hold TEXT NOT NULL,
    created_us INTEGER NOT NULL, PRIMARY KEY (caller, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, factory TEXT NOT NULL, at_us INTEGER NOT NULL,
    hold TEXT, action TEXT NOT NULL, actor TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_factory ON audit (factory, seq);
"""
_COLUMNS: Final = (
    "id, factory, machine, process, start_us, end_us, hours, order_ref, status, expires_us,"
    " placed_by, created_us, updated_us"
)
_ACTIVE: Final = "(status = 'confirmed' OR (status = 'held' AND expires_us > ?)) AND end_us > ?"
# The queries, from the constants above only (S608: no value is ever formatted into them).
_BY_ID: Final = f"SELECT {_COLUMNS} FROM holds WHERE id = ?"  # noqa: S608
_INSERT: Final = f"INSERT INTO holds ({_COLUMNS}) VALUES ({', '.join('?' * 13)})"  # noqa: S608
_LOAD: Final = (
    f"SELECT machine, start_us, end_us, hours FROM holds WHERE factory = ? AND {_ACTIVE}"  # noqa: S608
    " ORDER BY created_us, id"
)
_HELD_ON: Final = (
    f"SELECT id, start_us, end_us, hours FROM holds WHERE factory = ? AND machine = ? AND"  # noqa: S608
    f" {_ACTIVE}"
    " ORDER BY created_us, id"
)
_UNTOLD: Final = (
    f"SELECT {_COLUMNS} FROM holds WHERE status = 'expired' AND expiry_told = 0"  # noqa: S608
    " ORDER BY expires_us, id LIMIT 500"
)
_LIST: Final = (
    f"SELECT {_COLUMNS} FROM holds WHERE (?1 IS NULL OR factory = ?1)"  # noqa: S608
    " AND (?2 IS NULL OR placed_by = ?2) AND (?3 IS NULL OR status = ?3)"
    " ORDER BY created_us DESC, id LIMIT ?4"
)


class HoldConflictError(Exception):
    """The hold is not in a state that allows the change (its state is in the message)."""


class StaleCheckError(Exception):
    """Another hold was placed on the machine after the capacity check: check again."""


class IdempotencyReusedError(Exception):
    """The idempotency key was used for another request by the same caller."""


@dataclass(frozen=True, slots=True)
class NewHold:
    """What a platform asks to hold."""

    factory: str
    machine: str
    process: str | None
    start: datetime
    end: datetime
    hours: float
    order_ref: str
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold(NewHold):
    """A hold as stored, its status as of the call that read it."""

    id: str
    status: HoldStatus
    placed_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change a factory can read back."""

    seq: int
    at: datetime
    hold: str | None
    action: Action
    actor: str
    detail: dict[str, Any]


def digest(request: dict[str, Any]) -> str:
    """What an idempotency key is bound to: the request's content, key order aside."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _time(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def _hold(row: Sequence[Any]) -> Hold:
    return Hold(
        id=row[0],
        factory=row[1],
        machine=row[2],
        process=row[3],
        start=_time(row[4]),
        end=_time(row[5]),
        hours=row[6],
        order_ref=row[7],
        status=row[8],
        expires_at=_time(row[9]),
        placed_by=row[10],
        created_at=_time(row[11]),
        updated_at=_time(row[12]),
    )


class HoldStore:
    """Holds, their idempotency keys and the audit log; thread-safe."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        """Over the bookings file's connection (autocommit, WAL), and the lock every use of
        it takes (:class:`~kyoso.api.bookings.BookingStore` opens and closes both)."""
        self._db = db
        self._lock = lock
        with lock:
            db.executescript(_SCHEMA)

    @contextmanager
    def _writing(self, now: datetime) -> Iterator[sqlite3.Connection]:
        """One write transaction, expired holds logged first."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._expire(now)
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _expire(self, now: datetime) -> None:
        expired = self._db.execute(
            "UPDATE holds SET status = 'expired', updated_us = expires_us"
            " WHERE status = 'held' AND expires_us <= ? RETURNING id, factory, expires_us",
            (_us(now),),
        ).fetchall()
        for hold, factory, at in expired:
            self._log(factory, at, hold, "expired", actor="system", detail={})

    def _log(
        self, factory: str, at_us: int, hold: str | None, action: Action, *, actor: str,
        detail: dict[str, Any],
    ) -> None:  # fmt: skip
        self._db.execute(
            "INSERT INTO audit (factory, at_us, hold, action, actor, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (factory, at_us, hold, action, actor, json.dumps(detail, default=str)),
        )

    def active(self, factory: str, now: datetime) -> dict[str, list[Booking]]:
        """The load of each machine's held and confirmed holds whose window has not ended,
        in the order they were placed."""
        with self._lock:
            rows = self._db.execute(_LOAD, (factory, _us(now), _us(now))).fetchall()
        found: dict[str, list[Booking]] = {}
        for machine, start, end, hours in rows:
            found.setdefault(machine, []).append(Booking(_time(start), _time(end), hours))
        return found

    def held_on(
        self, factory: str, machine: str, now: datetime
    ) -> tuple[tuple[str, ...], list[Booking]]:
        """The ids and the load of the machine's active holds, in the order placed: what a
        capacity check counts (``create``'s ``counted``)."""
        with self._lock:
            rows = self._held_on(factory, machine, now)
        return tuple(r[0] for r in rows), [Booking(_time(a), _time(b), h) for _, a, b, h in rows]

    def _held_on(self, factory: str, machine: str, now: datetime) -> list[Any]:
        return self._db.execute(_HELD_ON, (factory, machine, _us(now), _us(now))).fetchall()

    def replayed(self, caller: str, key: str, request: str, now: datetime) -> Hold | None:
        """The hold an earlier request with this idempotency key made; IdempotencyReusedError
        if that request was another one."""
        with self._lock:
            return self._replay(caller, key, request, now)

    def _replay(self, caller: str, key: str, request: str, now: datetime) -> Hold | None:
        row = self._db.execute(
            "SELECT request, hold FROM hold_requests WHERE caller = ? AND key = ?"
            " AND created_us > ?",
            (caller, key, _us(now - IDEMPOTENCY_TTL)),
        ).fetchone()
        if row is None:
            return None
        if row[0] != request:
            raise IdempotencyReusedError(f"idempotency key {key!r} was used for another request")
        return _hold(self._db.execute(_BY_ID, (row[1],)).fetchone())

    def create(
        self,
        new: NewHold,
        *,
        caller: str,
        counted: tuple[str, ...],
        now: datetime,
        idempotency: tuple[str, str] | None = None,
    ) -> tuple[Hold, bool]:
        """Store ``new``, placed by the key ``caller``, if the machine's active holds are
        still ``counted``; with ``idempotency`` (key, request digest), the hold an earlier
        request with that key made, and True."""
        hold_id = "hld_" + secrets.token_hex(8)
        with self._writing(now) as db:
            if idempotency is not None:
                db.execute(
                    "DELETE FROM hold_requests WHERE created_us <= ?",
                    (_us(now - IDEMPOTENCY_TTL),),
                )
                earlier = self._replay(caller, *idempotency, now)
                if earlier is not None:
                    return earlier, True
            active = tuple(r[0] for r in self._held_on(new.factory, new.machine, now))
            if active != counted:
                raise StaleCheckError(f"machine {new.machine!r} got another hold meanwhile")
            if len(active) >= MAX_ACTIVE_PER_MACHINE:
                raise HoldConflictError(
                    f"machine {new.machine!r} has {len(active)} active holds, the most it takes"
                )
            at = _us(now)
            db.execute(
                _INSERT,
                (
                    hold_id, new.factory, new.machine, new.process, _us(new.start),
                    _us(new.end), new.hours, new.order_ref, "held", _us(new.expires_at),
                    caller, at, at,
                ),
            )  # fmt: skip
            if idempotency is not None:
                db.execute(
                    "INSERT INTO hold_requests VALUES (?, ?, ?, ?, ?)",
                    (caller, idempotency[0], idempotency[1], hold_id, at),
                )
            detail = {
                "machine": new.machine,
                "start": new.start.isoformat(),
                "end": new.end.isoformat(),
                "hours": new.hours,
                "order_ref": new.order_ref,
                "expires_at": new.expires_at.isoformat(),
            }
            self._log(new.factory, at, hold_id, "created", actor=caller, detail=detail)
            row = db.execute(_BY_ID, (hold_id,)).fetchone()
        return _hold(row), False

    def get(self, hold_id: str, now: datetime) -> Hold | None:
        """The hold, its expiry applied."""
        with self._writing(now) as db:
            row = db.execute(_BY_ID, (hold_id,)).fetchone()
        return None if row is None else _hold(row)

    def listed(
        self,
        now: datetime,
        *,
        factory: str | None = None,
        placed_by: str | None = None,
        status: HoldStatus | None = None,
        limit: int = 500,
    ) -> list[Hold]:
        """Holds, newest first, narrowed to a factory, a placing key, a status."""
        with self._writing(now) as db:
            rows = db.execute(_LIST, (factory, placed_by, status, limit)).fetchall()
        return [_hold(r) for r in rows]

    def change(self, hold_id: str, action: Literal["confirm", "release"], actor: str,
               now: datetime) -> Hold:  # fmt: skip
        """Confirm a held hold, or release a held or confirmed one; HoldConflictError from any
        other state, LookupError for no such hold."""
        allowed: dict[str, tuple[str, HoldStatus, Action]] = {
            "confirm": ("held", "confirmed", "confirmed"),
            "release": ("held confirmed", "released", "released"),
        }
        before, after, logged = allowed[action]
        with self._writing(now) as db:
            row = db.execute(_BY_ID, (hold_id,)).fetchone()
            if row is None:
                raise LookupError(hold_id)
            hold = _hold(row)
            if hold.status not in before.split():
                raise HoldConflictError(f"hold {hold_id!r} is {hold.status}: it cannot be {after}")
            if hold.end <= now:
                raise HoldConflictError(f"hold {hold_id!r} has ended: it cannot be {after}")
            at = _us(now)
            db.execute(
                "UPDATE holds SET status = ?, updated_us = ? WHERE id = ?", (after, at, hold_id)
            )
            self._log(hold.factory, at, hold_id, logged, actor=actor, detail={"from": hold.status})
            row = db.execute(_BY_ID, (hold_id,)).fetchone()
        return _hold(row)

    def untold_expiries(self, now: datetime) -> list[Hold]:
        """The holds expired (by ``now``) that :meth:`told` has not been called for."""
        with self._writing(now) as db:
            rows = db.execute(_UNTOLD).fetchall()
        return [_hold(r) for r in rows]

    def told(self, hold_ids: list[str]) -> None:
        """The expiries of ``hold_ids`` are told (their events written)."""
        with self._lock:
            self._db.executemany(
                "UPDATE holds SET expiry_told = 1 WHERE id = ?", [(h,) for h in hold_ids]
            )

    def record(self, factory: str, action: Action, actor: str, detail: dict[str, Any],
               now: datetime) -> None:  # fmt: skip
        """Log a change that is not a hold's (a factory's bookings)."""
        with self._writing(now):
            self._log(factory, _us(now), None, action, actor=actor, detail=detail)

    def audit(self, factory: str, now: datetime, *, after: int = 0, limit: int = 500
              ) -> list[AuditEntry]:  # fmt: skip
        """The factory's audit log after entry ``after``, oldest first."""
        with self._writing(now) as db:
            rows = db.execute(
                "SELECT seq, at_us, hold, action, actor, detail FROM audit"
                " WHERE factory = ? AND seq > ? ORDER BY seq LIMIT ?",
                (factory, after, limit),
            ).fetchall()
        return [AuditEntry(s, _time(at), h, a, who, json.loads(d)) for s, at, h, a, who, d in rows]
