"""Fair use of the capacity API: how often each key may ask, and how many expensive answers
it may have computed at once, so that one tenant cannot slow down the others.

Both limits are per API key (the :class:`~kyoso.api.keys.Principal`'s key id), on every
route that needs one; ``/healthz``, ``/readyz``, ``/metrics``, the overview page and the
documents need none and are never limited.

- **Rate**: a token bucket per key, full at ``burst`` tokens and refilled at ``rate_per_s``.
  Each request takes a token; with none left the answer is 429 with ``Retry-After``, the
  whole seconds until a token is back (at least 1). A refused request takes no token, so
  a client that honours ``Retry-After`` is served then.
- **Expensive requests** (the routes the app names: KPI reports over windows of up to 92
  days, capacity, the region, search and cover, which compute when their figures are not
  cached): at most ``max_concurrent`` of one key and ``max_concurrent_total`` of all keys
  run at once. One beyond waits up to ``max_wait_s`` for a slot (never in an unbounded
  queue: the rate bounds how many wait), else 429 with ``Retry-After: 1``. The bound of all
  keys keeps worker threads (the store's, ``asyncio.to_thread``'s, which authentication
  needs too) for everyone else; a key's own bound keeps one tenant from taking them all.

Why a dependency and not a middleware: the key is known only once it is authenticated,
which is the ``Caller`` dependency; this one depends on it, and FastAPI solves it once per
request for both. Memory is one bucket and one semaphore per key that has asked (the key
store bounds their number). Counts for ``/metrics`` are kept here: 429s by scope kind and
reason (``rate``, ``concurrency``), expensive requests running now and at most so far.
"""

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

from fastapi import HTTPException, Request, status

from .deps import Caller
from .keys import Principal, ScopeKind
from .limits_config import RequestLimits
from .schemas import Problem

__all__ = ["LIMITED", "REASONS", "Limiter", "Reason", "RequestLimits"]

Reason = Literal["rate", "concurrency"]
"""Why a request was refused: too many per second, or too many expensive ones at once."""
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

LIMITED: Final[dict[int | str, dict[str, Any]]] = {
    429: {
        "model": Problem,
        "description": "Too many requests of this key, or expensive ones at once: retry later.",
        "headers": {
            "Retry-After": {
                "description": "Whole seconds to wait before asking again.",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }
}
"""The 429 answer, as the OpenAPI document of every limited route shows it."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class Limiter:
    """The limits of one app: token buckets and slots per key, in its event loop.

    ``expensive`` are the endpoints (route functions) whose requests take a slot;
    ``clock`` is monotonic seconds (a test freezes it)."""

    def __init__(
        self,
        limits: RequestLimits,
        *,
        expensive: Collection[Callable[..., Any]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._expensive = frozenset(expensive)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._all = asyncio.Semaphore(limits.max_concurrent_total)
        self.rejected: Counter[tuple[ScopeKind, Reason]] = Counter()
        """429s by the key's scope kind and the limit reached."""
        self.running: Counter[ScopeKind] = Counter()
        """Expensive requests running now, by scope kind."""
        self.peak: Counter[ScopeKind] = Counter()
        """The most expensive requests of one scope kind that have run at once."""

    def take(self, caller: Principal) -> None:
        """Take a token of ``caller``'s bucket; 429 when it has none."""
        now, limits = self._clock(), self.limits
        bucket = self._buckets.setdefault(caller.key_id, _Bucket(limits.burst, now))
        bucket.tokens = min(limits.burst, bucket.tokens + (now - bucket.at) * limits.rate_per_s)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return
        wait_s = (1 - bucket.tokens) / limits.rate_per_s
        raise self._refuse(
            caller, "rate", math.ceil(wait_s), f"more than {limits.rate_per_s:g} requests/s"
        )

    @contextlib.asynccontextmanager
    async def slot(self, caller: Principal) -> AsyncIterator[None]:
        """Run an expensive request of ``caller`` within the bounds, or 429 after waiting
        ``max_wait_s`` for a slot."""
        own = self._slots.setdefault(caller.key_id, asyncio.Semaphore(self.limits.max_concurrent))
        whose = "this key's"
        try:
            async with asyncio.timeout(self.limits.max_wait_s):
                await own.acquire()
                whose = "all keys'"
                try:
                    await self._all.acquire()
                except BaseException:
                    own.release()
                    raise
        except TimeoutError:
            raise self._refuse(
                caller, "concurrency", 1, f"{whose} expensive requests are all running"
            ) from None
        kind = caller.scope.kind
        self.running[kind] += 1
        self.peak[kind] = max(self.peak[kind], self.running[kind])
        try:
            yield
        finally:
            self.running[kind] -= 1
            self._all.release()
            own.release()

    def _refuse(
        self, caller: Principal, reason: Reason, retry_after_s: int, why: str
    ) -> HTTPException:
        self.rejected[caller.scope.kind, reason] += 1
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many requests: {why}; retry later",
            headers={"Retry-After": str(max(1, retry_after_s))},
        )

    async def admit(self, request: Request, caller: Caller) -> AsyncIterator[None]:
        """The dependency of every route with a key: a token, and a slot while an
        expensive route's function runs."""
        self.take(caller)
        route = request.scope.get("route")
        if getattr(route, "endpoint", None) in self._expensive:
            async with self.slot(caller):
                yield
        else:
            yield
