"""The publisher's backlog: older samples, sent oldest first at a bounded rate, in passes.

A *pass* walks the outbox in seq order up to a ceiling (the last seq numbered when it
began) and offers the rows due at each moment (``SqliteOutbox.pending(now=...)``): never
sent, or sent ``confirm_timeout_s`` or more ago without a store receipt. A pass begins at
every connection; once it is over, the next begins when a sent sample becomes due
(``SqliteOutbox.next_due``), so a sample the broker acknowledged but the store never
confirmed is sent again. A row in flight is skipped: its PUBACK, or the reconnect after
the link dropped, decides its fate.

The rate is a token bucket that holds one second's worth of ``replay_rate_samples_per_s``
(at least one sample, at most one batch) and is full at each connection.
"""

import logging
import math
from collections.abc import Callable, Container

from .outbox import OutboxRow, SqliteOutbox

__all__ = ["Backlog"]

log = logging.getLogger(__name__)


class Backlog:
    """The passes over one outbox; see the module docstring. Use it from one thread."""

    def __init__(
        self,
        outbox: SqliteOutbox,
        *,
        rate_samples_per_s: float,
        max_samples_per_batch: int,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        """``clock`` gives epoch seconds (what ``sent_at`` is in); ``monotonic`` paces."""
        self.outbox = outbox
        self._rate = rate_samples_per_s
        self._bucket = max(1, min(max_samples_per_batch, math.ceil(rate_samples_per_s)))
        self._clock, self._monotonic = clock, monotonic
        self._tokens = self._tokens_at = 0.0
        self._ceiling = self._after = -1
        self._done = True
        self._began = -math.inf  # clock() when the last pass began

    def connected(self, through: int) -> None:
        """Begin a pass over the samples numbered up to ``through``, with a full bucket."""
        self._tokens, self._tokens_at = float(self._bucket), self._monotonic()
        self._begin(through, self._clock())

    def next(self, claimed: Container[int], through: int) -> list[OutboxRow] | float | None:
        """The rows to send next, none of them in ``claimed`` (in flight) and within the
        rate; or the seconds to wait before asking again; or None: nothing to send until
        the outbox changes. ``through`` is the last seq numbered so far, the ceiling of a
        pass that begins now. Call :meth:`sent` after sending some of the rows."""
        while True:
            if self._done:
                now = self._clock()
                due = self.outbox.next_due(after=self._began)
                if due is None or due > now:
                    return None if due is None else due - now
                log.warning(
                    "samples sent %g s ago or more have no store receipt yet: sending them again",
                    self.outbox.config.confirm_timeout_s,
                )
                self._begin(through, now)
            at = self._monotonic()
            self._tokens = min(self._bucket, self._tokens + (at - self._tokens_at) * self._rate)
            self._tokens_at = at
            rows = self.outbox.pending(
                self._bucket, after=self._after, through=self._ceiling, now=self._clock()
            )
            if not rows:
                self._done = True
                log.info("backlog replayed")
                continue
            fresh = [row for row in rows if row.seq not in claimed]
            if not fresh:
                self._after = rows[-1].seq
            elif len(fresh) > self._tokens:
                return (len(fresh) - self._tokens) / self._rate
            else:
                return fresh

    def sent(self, count: int, last: int) -> None:
        """``count`` of the rows :meth:`next` gave, up to seq ``last``, went out."""
        self._tokens -= count
        self._after = last

    def _begin(self, through: int, at: float) -> None:
        self._ceiling, self._after, self._done, self._began = through, -1, False, at
