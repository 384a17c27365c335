"""Bookings: the load a factory declares for its machines, instead of the forecast.

A factory that plans its machines may tell the region exactly what is committed: it puts
the bookings of a machine (``[start, end)``, optionally the hours of work within) with its
own key, and from then on that machine's committed capacity is the booked load, not the
expected load learnt from history (:func:`kyoso.capacity.forecast.forecast`). Deleting
them returns the machine to the forecast. Putting an empty list declares "nothing booked".

The holds and orders the platform places live in the same file (:mod:`.holds`).

One SQLite file in WAL mode, shared by API replicas on one host; each call is one short
transaction, so replicas always read what any of them wrote.
"""

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from kyoso.capacity.forecast import Booking

from .holds import HoldStore

__all__ = ["MAX_BOOKINGS_PER_MACHINE", "BookingStore"]

MAX_BOOKINGS_PER_MACHINE: Final = 500

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS declared (
    factory TEXT NOT NULL, machine TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (factory, machine)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bookings (
    factory TEXT NOT NULL, machine TEXT NOT NULL, position INTEGER NOT NULL,
    start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, hours REAL,
    PRIMARY KEY (factory, machine, position)) WITHOUT ROWID;
"""


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _time(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


class BookingStore:
    """Declared bookings per (factory, machine); thread-safe, closes with :meth:`close`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.holds = HoldStore(self._db, self._lock)
        """The platform's holds and orders, and the factories' audit log, in the same file."""

    def close(self) -> None:
        """Close the file (once a call under way in another thread is done)."""
        with self._lock:
            self._db.close()

    def declared(self, factory: str) -> dict[str, list[Booking]]:
        """The bookings of each machine of ``factory`` that declares its load."""
        with self._lock:
            machines = self._db.execute(
                "SELECT machine FROM declared WHERE factory = ?", (factory,)
            ).fetchall()
            rows = self._db.execute(
                "SELECT machine, start_us, end_us, hours FROM bookings WHERE factory = ?"
                " ORDER BY machine, position",
                (factory,),
            ).fetchall()
        result: dict[str, list[Booking]] = {machine: [] for (machine,) in machines}
        for machine, start, end, hours in rows:
            result.setdefault(machine, []).append(Booking(_time(start), _time(end), hours))
        return result

    def replace(self, factory: str, machine: str, bookings: list[Booking]) -> None:
        """Declare exactly ``bookings`` for the machine (an empty list: nothing booked)."""
        if len(bookings) > MAX_BOOKINGS_PER_MACHINE:
            raise ValueError(f"at most {MAX_BOOKINGS_PER_MACHINE} bookings per machine")
        now = datetime.now(UTC).timestamp()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "DELETE FROM bookings WHERE factory = ? AND machine = ?", (factory, machine)
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO declared VALUES (?, ?, ?)", (factory, machine, now)
                )
                self._db.executemany(
                    "INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (factory, machine, i, _us(b.start), _us(b.end), b.hours)
                        for i, b in enumerate(bookings)
                    ],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def clear(self, factory: str, machine: str) -> bool:
        """Return the machine to the forecast; False if it declared nothing."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "DELETE FROM bookings WHERE factory = ? AND machine = ?", (factory, machine)
            )
            gone = self._db.execute(
                "DELETE FROM declared WHERE factory = ? AND machine = ?", (factory, machine)
            ).rowcount
            self._db.execute("COMMIT")
        return gone > 0
