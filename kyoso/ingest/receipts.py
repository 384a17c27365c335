"""Store receipts and gaps: what the ingest has taken of each gateway's samples, told back
to the gateway, and the holes in it, told to the operator (docs/contract.md, 8.6).

- **Taken** means written to the store or dead-lettered with a reason: either way the
  ingest answers for the sample, and sending it again changes nothing. Once a batch is
  written, its samples' sequence numbers are added to this worker's ranges per
  ``(factory, gateway, session)``; at most every ``interval_s`` the ranges of every gateway
  with new ones are published, retained, on ``…/<gateway>/stored/<worker>``. The gateway
  deletes what they cover from its outbox, and sends again what stays unconfirmed.
- **Several workers** (a shared subscription) each publish their own receipt; every worker
  reads all of them, so each knows what the region's ingest has taken as a whole, and its
  receipt tells that whole: its own numbers and those of the receipts it heard. The broker
  deals a session's messages between the workers, so one worker's own numbers alone are
  as many ranges as messages, more than a receipt holds: what fell out of the receipts
  would be gaps to the others, and never close. The group's numbers are a few ranges. A
  worker that restarts reads the retained receipts back and goes on from them.
- **Gaps** are the holes between the lowest and the highest sequence number taken of a
  session: samples lost, or not yet replayed. Each hole keeps the time it was first seen,
  so the age of the oldest one tells a hole that is closing from one that never will (the
  gateway dropped those samples, or lost them). The gaps of each gateway, summed over its
  sessions, are written to the store when this worker first knows the gateway and again
  whenever they change (:meth:`Receipts.due_gaps`), for the API's gateway view.
- **Replays that differ**: a sequence number taken before and sent again with another
  machine or time is not the same sample (the contract forbids reusing one); the last
  ``REPLAY_MEMORY`` numbers of each session are remembered to refuse it (dead letter
  ``replay_conflict``), since writing it would add a point rather than overwrite one.

Bounded: a receipt holds the ``MAX_RECEIPT_SESSIONS`` sessions of a gateway taken most
recently, each with its ``MAX_RECEIPT_RANGES`` highest ranges; what falls out of it is
sent again by the gateway and taken again (harmless), never lost.
"""

import bisect
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from kyoso.contract import (
    MAX_RECEIPT_RANGES,
    MAX_RECEIPT_SESSIONS,
    SessionReceipt,
    StoreReceipt,
    encode,
    stored_topic,
)
from kyoso.contract.wire import SampleLike

__all__ = ["REPLAY_MEMORY", "Gap", "GatewayGaps", "Receipts", "ReplayGuard", "SeqRanges"]

REPLAY_MEMORY: Final = 100_000
"""Sequence numbers per session whose machine and time are remembered (16 bytes each)."""
REPLAY_SESSIONS: Final = 4096
"""Sessions remembered so (the ones first seen longest ago go first)."""

_Key = tuple[str, str, str]
"""(factory, gateway, session)."""
_Figure = tuple[int, float | None]
"""A gateway's gaps: samples missing, and when its oldest hole was first seen (None: none)."""


class SeqRanges:
    """A set of sequence numbers as ascending, disjoint ``[first, last]`` ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._firsts: list[int] = []
        self._lasts: list[int] = []
        for first, last in ranges:
            self.add(first, last)

    def add(self, first: int, last: int) -> None:
        """Add ``first`` to ``last`` (both included), merging what touches them."""
        i = bisect.bisect_left(self._lasts, first - 1)  # the first range that may touch
        j = bisect.bisect_right(self._firsts, last + 1)  # past the last that may touch
        if i < j:
            first = min(first, self._firsts[i])
            last = max(last, self._lasts[j - 1])
        self._firsts[i:j] = [first]
        self._lasts[i:j] = [last]

    def update(self, seqs: Iterable[int]) -> None:
        """Add every number of ``seqs`` (runs of consecutive ones in one step each)."""
        ordered = sorted(seqs)
        if not ordered:
            return
        first = last = ordered[0]
        for seq in ordered:
            if seq > last + 1:
                self.add(first, last)
                first = seq
            last = seq
        self.add(first, last)

    def merge(self, other: "SeqRanges") -> None:
        for first, last in other.ranges():
            self.add(first, last)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._firsts, self._lasts, strict=True))

    def holes(self) -> list[tuple[int, int]]:
        """The missing numbers between the lowest and the highest held, as ranges."""
        return [(b + 1, a - 1) for b, a in zip(self._lasts, self._firsts[1:], strict=False)]

    def __bool__(self) -> bool:
        return bool(self._firsts)


@dataclass(frozen=True, slots=True)
class Gap:
    """Samples of one gateway session that no ingest worker has taken yet."""

    factory: str
    gateway: str
    session: str
    missing: int
    """Sequence numbers in the holes."""
    oldest_s: float
    """How long the oldest hole has been seen."""


@dataclass(frozen=True, slots=True)
class GatewayGaps:
    """The gaps of one gateway over all its sessions, to write to the store."""

    factory: str
    gateway: str
    missing: int
    """Sequence numbers in the holes of its sessions; 0: none."""
    oldest_s: float
    """How long its oldest hole had been seen at ``at``; 0.0 without one."""
    at: datetime


@dataclass(slots=True)
class _Session:
    own: SeqRanges = field(default_factory=SeqRanges)
    others: dict[str, SeqRanges] = field(default_factory=dict)
    touched: float = 0.0
    seen: dict[tuple[int, int], float] = field(default_factory=dict)
    """Holes by range, and when each was first seen."""

    def union(self) -> SeqRanges:
        merged = SeqRanges(self.own.ranges())
        for ranges in self.others.values():
            merged.merge(ranges)
        return merged


class Receipts:
    """This worker's receipts, the other workers', and the gaps (module docstring)."""

    def __init__(self, worker: str, *, clock: Callable[[], float] = time.time) -> None:
        self.worker = worker
        self._clock = clock
        self._sessions: dict[_Key, _Session] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._written: dict[tuple[str, str], _Figure] = {}
        """The gaps of each gateway last handed out by :meth:`due_gaps`."""

    def taken(self, factory: str, gateway: str, session: str, seqs: Iterable[int]) -> None:
        """Samples this worker has written or dead-lettered."""
        found = self._session((factory, gateway, session))
        found.own.update(seqs)
        found.touched = self._clock()
        self._dirty.add((factory, gateway))

    def heard(self, receipt: StoreReceipt) -> None:
        """A receipt published by a worker (this one's own, retained, after a restart)."""
        for entry in receipt.sessions:
            found = self._session((receipt.factory, receipt.gateway, entry.session))
            ranges = SeqRanges(entry.ranges)
            if receipt.worker == self.worker:
                found.own.merge(ranges)
            elif (known := found.others.get(receipt.worker)) is None:
                found.others[receipt.worker] = ranges
            else:  # what was taken stays taken: a receipt's ranges only add
                known.merge(ranges)
            found.touched = max(found.touched, receipt.ts.timestamp())

    def due(self) -> list[tuple[str, bytes]]:
        """The receipts to publish now, as (topic, payload): one per gateway that had
        samples taken since the last call."""
        dirty, self._dirty = self._dirty, set()
        return [(stored_topic(f, g, self.worker), encode(self._receipt(f, g))) for f, g in dirty]

    def gaps(self) -> list[Gap]:
        """Every session with holes, the oldest hole first."""
        now = self._clock()
        found = [Gap(*key, missing, now - opened) for key, missing, opened in self._holes(now)]
        return sorted(found, key=lambda gap: -gap.oldest_s)

    def due_gaps(self) -> list[GatewayGaps]:
        """The gaps to write to the store now, per gateway, each handed out once: those of
        every gateway this worker had not told of yet, and those that changed since (more
        or fewer samples missing, or another oldest hole; not the holes ageing), with
        ``missing`` 0 for a gateway whose gaps closed."""
        now = self._clock()
        figures: dict[tuple[str, str], _Figure] = {key[:2]: (0, None) for key in self._sessions}
        for (factory, gateway, _), missing, opened in self._holes(now):
            total, oldest = figures[factory, gateway]
            first = opened if oldest is None else min(opened, oldest)
            figures[factory, gateway] = (total + missing, first)
        due, at = [], datetime.fromtimestamp(now, UTC)
        for (factory, gateway), figure in sorted(figures.items(), key=lambda item: item[0]):
            if self._written.get((factory, gateway)) != figure:
                self._written[factory, gateway] = figure
                missing, since = figure
                oldest_s = 0.0 if since is None else now - since
                due.append(GatewayGaps(factory, gateway, missing, oldest_s, at))
        return due

    def _holes(self, now: float) -> list[tuple[_Key, int, float]]:
        """Each session with holes: the numbers missing, and when its oldest hole was first
        seen (remembering, for each hole, when it was first seen)."""
        found = []
        for key, entry in self._sessions.items():
            holes = entry.union().holes()
            entry.seen = {hole: _first_seen(hole, entry.seen, now) for hole in holes}
            if holes:
                missing = sum(last - first + 1 for first, last in holes)
                found.append((key, missing, min(entry.seen.values())))
        return found

    def _session(self, key: _Key) -> _Session:
        found = self._sessions.get(key)
        if found is None:
            found = self._sessions[key] = _Session(touched=self._clock())
            self._forget_beyond_limit(key[0], key[1])
        return found

    def _forget_beyond_limit(self, factory: str, gateway: str) -> None:
        """Keep the ``MAX_RECEIPT_SESSIONS`` sessions of a gateway touched last."""
        mine = [k for k in self._sessions if k[:2] == (factory, gateway)]
        if len(mine) > MAX_RECEIPT_SESSIONS:
            mine.sort(key=lambda k: self._sessions[k].touched)
            for key in mine[: len(mine) - MAX_RECEIPT_SESSIONS]:
                del self._sessions[key]

    def _receipt(self, factory: str, gateway: str) -> StoreReceipt:
        sessions = sorted(
            ((k[2], s) for k, s in self._sessions.items() if k[:2] == (factory, gateway) and s.own),
            key=lambda item: -item[1].touched,
        )
        return StoreReceipt(
            factory=factory,
            gateway=gateway,
            worker=self.worker,
            ts=datetime.fromtimestamp(self._clock(), UTC),
            sessions=[
                SessionReceipt(session=name, ranges=entry.union().ranges()[-MAX_RECEIPT_RANGES:])
                for name, entry in sessions[:MAX_RECEIPT_SESSIONS]
            ],
        )


def _first_seen(hole: tuple[int, int], seen: dict[tuple[int, int], float], now: float) -> float:
    """When a hole was first seen: the earliest of the holes it is what is left of."""
    first, last = hole
    return min((t for (a, b), t in seen.items() if a <= last and b >= first), default=now)


class ReplayGuard:
    """Remembers the machine and time of each session's last ``memory`` numbers (at least:
    a power of two of them), as a 64-bit fingerprint in a ring of slots indexed by number:
    16 bytes a number, grown as the session's numbers spread, never beyond."""

    def __init__(self, memory: int = REPLAY_MEMORY) -> None:
        self.slots = 1 << max(0, memory - 1).bit_length()
        self._known: dict[_Key, _Ring] = {}

    def conflict(self, key: _Key, sample: SampleLike) -> str | None:
        """Why ``sample`` is not the sample first taken under its number (None: it is, the
        number is new, or it is older than what is remembered); a new number is
        remembered."""
        ring = self._known.get(key)
        if ring is None:
            ring = self._known[key] = _Ring(min(_FIRST_SLOTS, self.slots))
            if len(self._known) > REPLAY_SESSIONS:
                del self._known[next(iter(self._known))]
        seq, machine, ts = sample.seq, sample.machine, sample.ts
        fingerprint = hash((machine, ts))
        while True:
            slot = seq & ring.mask
            held = ring.seqs[slot]
            if held == seq:
                if ring.prints[slot] == fingerprint:
                    return None
                return (
                    f"seq {seq} was taken as another sample (another machine or time), "
                    f"sent again as machine={machine} ts={ts.isoformat()}"
                )
            if held > seq:  # the slot holds a later number: this one is older than the memory
                return None
            if held < 0 or ring.mask + 1 >= self.slots:
                break
            ring = self._known[key] = ring.grown(self.slots)  # the numbers spread: room
        ring.seqs[slot] = seq
        ring.prints[slot] = fingerprint
        return None


_FIRST_SLOTS: Final = 1024


class _Ring:
    """Numbers and fingerprints by slot ``seq & mask``; ``-1``: an empty slot."""

    __slots__ = ("mask", "prints", "seqs")

    def __init__(self, slots: int) -> None:
        self.mask = slots - 1
        self.seqs = array("q", [-1]) * slots
        self.prints = array("q", bytes(8 * slots))

    def grown(self, limit: int) -> "_Ring":
        """A ring with twice the slots (at most ``limit``), holding what this one holds."""
        bigger = _Ring(min(limit, 2 * (self.mask + 1)))
        for seq, fingerprint in zip(self.seqs, self.prints, strict=True):
            if seq >= 0:
                slot = seq & bigger.mask
                if seq > bigger.seqs[slot]:
                    bigger.seqs[slot], bigger.prints[slot] = seq, fingerprint
        return bigger
