"""Learnt histories kept between restarts of the API: one SQLite file (``profile_cache_path``).

Learning a region's load profiles and repair records from the store reads weeks of
history, the longest part of the API's first answer after a start. What the learner keeps
(:class:`~kyoso.capacity.history.FactoryHistory`: hourly sums and down samples) is written
here after each update, one row per factory, and read back at the next start, when only
the history since needs reading.

Nothing read here is trusted blindly:

- the file names the store it was learnt from and its format (``source``, ``format``); a
  file of another store or format is emptied when opened;
- each row is checked whole when read (its factory, machine ids, whole hours and ordered
  samples within its window, finite non-negative seconds, the exact length): a row that
  fails is refused (:class:`KeptHistoryError`), and the learner reads the store instead; a
  file that is no database is started afresh;
- the learner refuses what is too old, and checks what it uses against the store itself
  (kyoso/api/learning.py).

One short transaction per call; WAL, so replicas sharing a host may share the file. Floats
are kept as IEEE doubles, bit for bit.
"""

import itertools
import json
import logging
import math
import sqlite3
import sys
import threading
from array import array
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from kyoso.capacity.history import FactoryHistory, LoadHistory, hour_index
from kyoso.capacity.repair import DownSamples, us_of
from kyoso.contract import check_id

__all__ = ["FORMAT", "KeptHistoryError", "ProfileFile"]

FORMAT: Final = 1
"""The layout of a kept history; a file of another is emptied."""

log = logging.getLogger(__name__)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS histories (factory TEXT PRIMARY KEY, body BLOB NOT NULL)
    WITHOUT ROWID;
"""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_SWAP: Final = sys.byteorder != "little"
"""Doubles are kept little-endian whatever the machine."""


class KeptHistoryError(ValueError):
    """A kept history that cannot be used (damaged, or not what it claims to be)."""


class ProfileFile:
    """Histories kept per factory, learnt from the store named ``source``; thread-safe."""

    def __init__(self, path: Path, source: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = self._open({"format": str(FORMAT), "source": source})
        except sqlite3.DatabaseError as exc:  # not a database (any more): start afresh
            log.warning("%s is unreadable (%s): starting it afresh", path, exc)
            for damaged in (path, path.with_name(path.name + "-wal")):
                damaged.unlink(missing_ok=True)
            self._db = self._open({"format": str(FORMAT), "source": source})

    def _open(self, meta: dict[str, str]) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: a power cut may lose a write
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            _claim(db, meta, self.path)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        """Close the file (once a call under way in another thread is done)."""
        with self._lock:
            self._db.close()

    def load(self, factory: str) -> FactoryHistory | None:
        """The history kept for ``factory`` (None: none); :class:`KeptHistoryError` if what
        is kept cannot be used."""
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM histories WHERE factory = ?", (factory,)
            ).fetchone()
        return None if row is None else decode(factory, row[0])

    def save(self, history: FactoryHistory, current: Callable[[], bool]) -> None:
        """Keep ``history`` for its factory, in place of what was, if it is still
        ``current()`` then (asked under the file's lock: :meth:`drop` takes it too)."""
        body = encode(history)
        with self._lock:
            if current():
                self._db.execute(
                    "INSERT OR REPLACE INTO histories VALUES (?, ?)", (history.factory, body)
                )

    def drop(self, factory: str) -> None:
        """Forget what is kept for ``factory`` (its history changed)."""
        with self._lock:
            self._db.execute("DELETE FROM histories WHERE factory = ?", (factory,))


def _claim(db: sqlite3.Connection, meta: dict[str, str], path: Path) -> None:
    """Empty the file unless it was kept for this store in this format."""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if found != meta:
            if found:
                log.info("%s was kept for %s: starting it afresh", path, found)
            db.execute("DELETE FROM histories")
            db.execute("DELETE FROM meta")
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def encode(history: FactoryHistory) -> bytes:
    """A JSON header (times in µs since 1970), a newline, then the arrays it lists, little
    endian: per machine of ``loads`` its busy, lost and observed seconds per hour
    (doubles), then per machine of ``down`` its down samples' beginnings and ends (64-bit
    µs), down seconds (doubles) and whether each ended down (bytes)."""
    loads, down = sorted(history.loads.items()), sorted(history.down.items())
    header = {
        "format": FORMAT,
        "factory": history.factory,
        "start": us_of(history.start),
        "end": us_of(history.end),
        "relearnt_at": us_of(history.relearnt_at),
        "loads": [[m, hours.first, len(hours.observed)] for m, hours in loads],
        "down": [[m, len(samples.ts)] for m, samples in down],
    }
    arrays: list[array[Any]] = [a for _, h in loads for a in (h.busy, h.lost, h.observed)]
    arrays += [a for _, d in down for a in (d.begin, d.ts, d.seconds, d.ended)]
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(map(_le, arrays))


def decode(factory: str, body: bytes) -> FactoryHistory:
    """The history ``body`` holds, checked whole (:class:`KeptHistoryError` otherwise),
    without the breakdowns its down samples tell: the learner's update tells them."""
    try:
        text, _, data = body.partition(b"\n")
        return _history(factory, json.loads(text), _Reader(data))
    except KeptHistoryError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise KeptHistoryError(f"kept history of {factory!r} unreadable: {exc}") from exc


def _history(factory: str, header: Mapping[str, Any], data: "_Reader") -> FactoryHistory:
    if header["format"] != FORMAT or header["factory"] != factory:
        raise KeptHistoryError(f"kept history of {header['factory']!r}, not of {factory!r}")
    start, end, relearnt_at = (_time(header[k]) for k in ("start", "end", "relearnt_at"))
    if end <= start:
        raise KeptHistoryError(f"kept history of {factory!r} ends before it starts")
    first_hour, end_hour = hour_index(start), hour_index(end)
    loads: dict[str, LoadHistory] = {}
    for machine, first, count in header["loads"]:
        check_id(machine, "machine")
        _check(isinstance(first, int) and first_hour <= first, machine, "hours before its window")
        _check(first + count <= end_hour and machine not in loads, machine, "hours after it")
        hours = LoadHistory(first, *(data.take("d", count) for _ in range(3)))
        _check(_seconds(hours.busy, hours.lost, hours.observed), machine, "impossible seconds")
        loads[machine] = hours
    down: dict[str, DownSamples] = {}
    for machine, count in header["down"]:
        check_id(machine, "machine")
        samples = DownSamples(*(data.take(code, count) for code in "qqdb"))
        ends = [us_of(start), *samples.ts]
        _check(all(a < b for a, b in itertools.pairwise(ends)), machine, "samples out of order")
        _check(not count or samples.ts[-1] <= us_of(end), machine, "samples after its window")
        intervals = zip(samples.begin, samples.ts, strict=True)
        _check(all(b < t for b, t in intervals), machine, "samples ending before they begin")
        _check(_seconds(samples.seconds) and all(samples.seconds), machine, "impossible seconds")
        _check(set(samples.ended) <= {0, 1} and machine not in down, machine, "impossible states")
        down[machine] = samples
    _check(data.done(), factory, "more than it says")
    return FactoryHistory(factory, start, end, relearnt_at, loads=loads, down=down, repairs={})


class _Reader:
    """The arrays of a kept history's body, one after the other."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, typecode: str, count: object) -> "array[Any]":
        if not isinstance(count, int) or count < 0:
            raise KeptHistoryError(f"{count!r} values asked for")
        values = array(typecode)
        chunk = self._data[self._at : self._at + values.itemsize * count]
        if len(chunk) != values.itemsize * count:
            raise KeptHistoryError("a kept history cut short")
        values.frombytes(chunk)
        if _SWAP:
            values.byteswap()
        self._at += len(chunk)
        return values

    def done(self) -> bool:
        return self._at == len(self._data)


def _le(values: "array[Any]") -> bytes:
    if not _SWAP:
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _seconds(*values: "array[float]") -> bool:
    """Whether all are finite and none negative (a NaN or an infinity makes the sum one)."""
    return all(not found or (min(found) >= 0 and math.isfinite(sum(found))) for found in values)


def _check(holds: bool, name: str, what: str) -> None:
    if not holds:
        raise KeptHistoryError(f"kept history of {name!r}: {what}")


def _time(us: object) -> datetime:
    if not isinstance(us, int) or isinstance(us, bool):
        raise KeptHistoryError(f"{us!r} is no time")
    return _EPOCH + us * _US
