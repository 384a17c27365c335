"""Webhook deliveries: where a receiver may be, how a request is signed, and the dispatcher
that sends pending deliveries until each is answered 2xx or has had its attempts.

**Targets** (the SSRF guard): a receiver's host is resolved and every address it resolves to
must be public (``is_global``), the URL ``https``; with ``allow_private_targets``, loopback,
private and link-local addresses are admitted too, over ``http`` as well. The check runs when
a subscription is made and again before every attempt, and the request goes to the address
that was checked (the host name still in ``Host`` and TLS SNI), so a name that later
resolves elsewhere (DNS rebinding) reaches nothing it should not. Redirects are not
followed: a 3xx is a failed attempt.

**Signature**: ``Kyoso-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
with the subscription's secret, made anew at every attempt; ``Kyoso-Webhook-Id`` is the
event's id, the same at every attempt (a receiver drops the ones it has).

**Attempts**: one per subscription in flight at a time, ``max_concurrent`` in all, each
bounded by ``timeout_s`` from resolving to the status line (the body is never read): a slow
or dead receiver holds one connection, never the API or another receiver. A failed attempt
(no answer, or any status but 2xx) is tried again after ``retry_base_s`` times 3 per attempt
made (up to ``retry_max_s``, or the receiver's ``Retry-After`` if longer), each with +-25 %
jitter so that receivers coming back are not hit all at once; after ``max_attempts`` the
delivery is failed.
"""

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from kyoso import __version__

from .webhook_config import WebhookSettings
from .webhook_store import DeliveryStatus, Due, WebhookStore

__all__ = [
    "ID_HEADER",
    "SIGNATURE_HEADER",
    "Dispatcher",
    "Target",
    "TargetRefusedError",
    "sign",
    "target",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "Kyoso-Signature"
ID_HEADER: Final = "Kyoso-Webhook-Id"
_POLL_S: Final = 1.0
"""Deliveries another process (a replica) writes are found within this long."""
_PURGE_EVERY_S: Final = 3600.0
_RETRY_FACTOR: Final = 3.0


class TargetRefusedError(ValueError):
    """A receiver URL deliveries may not go to; the message says why."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked receiver: the URL to connect to (its host replaced by the address that
    was checked) and what keeps the request addressed to the host named."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def sign(secret: str, body: bytes, at: int) -> str:
    """The ``Kyoso-Signature`` value of ``body`` sent at ``at`` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def _refused(address: str, allow_private: bool) -> str | None:
    """Why deliveries may not go to ``address`` (None: they may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a link-local v6 carries its zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is not a host's address"
    if ip.is_global or allow_private:
        return None
    kind = "loopback" if ip.is_loopback else "link-local" if ip.is_link_local else "private"
    return f"{ip} is a {kind} address (webhooks go to public addresses)"


async def target(url: str, *, allow_private: bool) -> Target:
    """Where ``url`` may be delivered to now; :class:`TargetRefusedError` says why not."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TargetRefusedError(f"not a URL: {exc}") from None
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise TargetRefusedError("the URL must be https://host/...")
    if parsed.userinfo:
        raise TargetRefusedError("no credentials in the URL: deliveries are signed instead")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            parsed.host, port, type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError):
        raise TargetRefusedError(f"{parsed.host} does not resolve") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    for address in addresses:
        why = _refused(address, allow_private)
        if why is not None:
            raise TargetRefusedError(f"{parsed.host} resolves to {why}")
    if parsed.scheme == "http" and any(_refused(a, False) is None for a in addresses):
        private_only = " (http goes to private addresses only)" if allow_private else ""
        raise TargetRefusedError(f"the URL must be https{private_only}")
    pinned = parsed.copy_with(host=addresses[0])
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    return Target(pinned, {"Host": parsed.netloc.decode("ascii")}, extensions)


def _retry_after_s(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` in seconds from ``now`` (seconds or an HTTP date); None: none."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    with contextlib.suppress(TypeError, ValueError):
        return email.utils.parsedate_to_datetime(value).timestamp() - now
    return None


@dataclass(frozen=True, slots=True)
class _Outcome:
    status_code: int | None
    error: str | None
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Dispatcher:
    """Sends what the store has pending until :meth:`run` is cancelled; an attempt cut by
    the cancellation stays pending (and is made again after a restart): at least once."""

    def __init__(self, store: WebhookStore, settings: WebhookSettings) -> None:
        self._store = store
        self._settings = settings
        self._wake = asyncio.Event()
        self._busy: set[str] = set()

    def wake(self) -> None:
        """Look for due deliveries now (new ones were written)."""
        self._wake.set()

    def _delay_s(self, attempts: int, retry_after_s: float | None = None) -> float:
        """How long to wait after ``attempts`` failed attempts (jittered)."""
        settings = self._settings
        backoff = settings.retry_base_s * _RETRY_FACTOR ** (attempts - 1)
        jittered = min(backoff, settings.retry_max_s) * random.uniform(0.75, 1.25)
        return min(max(jittered, retry_after_s or 0.0), settings.retry_max_s)

    async def run(self) -> None:
        settings = self._settings
        client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: requests go where checked
            timeout=settings.timeout_s,
            limits=httpx.Limits(max_connections=settings.max_concurrent),
            headers={"User-Agent": f"Kyoso-Webhooks/{__version__}"},
        )
        purged = -_PURGE_EVERY_S
        async with client, asyncio.TaskGroup() as group:
            while True:
                self._wake.clear()
                wait = _POLL_S
                try:
                    if time.monotonic() - purged >= _PURGE_EVERY_S:
                        purged = time.monotonic()
                        before = time.time() - settings.log_retention_days * 86400
                        await asyncio.to_thread(self._store.purge, before)
                    wait = await self._start_due(client, group)
                except Exception:  # the loop's boundary: the store failed; try again
                    log.exception("webhook deliveries: reading the pending ones failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)

    async def _start_due(self, client: httpx.AsyncClient, group: asyncio.TaskGroup) -> float:
        """Start the attempts due now; how long until the next one is due, at most."""
        now = time.time()
        limit = self._settings.max_concurrent
        if len(self._busy) < limit:
            busy = set(self._busy)
            for due in await asyncio.to_thread(self._store.due, now, busy, limit - len(busy)):
                self._busy.add(due.subscription)
                group.create_task(self._attempt(client, due))
        if len(self._busy) >= limit:
            return _POLL_S  # an attempt ending wakes the loop
        upcoming = await asyncio.to_thread(self._store.next_due, set(self._busy))
        return _POLL_S if upcoming is None else min(_POLL_S, max(upcoming - now, 0.01))

    async def _attempt(self, client: httpx.AsyncClient, due: Due) -> None:
        try:
            try:
                outcome = await self._post(client, due)
            except Exception as exc:  # an attempt's boundary: counted, tried again later
                log.exception("webhook %s: an attempt failed unexpectedly", due.subscription)
                outcome = _Outcome(None, f"internal error: {type(exc).__name__}")
            at = time.time()
            attempts = due.attempts + 1
            status: DeliveryStatus
            if outcome.delivered:
                status, next_at = "delivered", None
            elif attempts >= self._settings.max_attempts:
                status, next_at = "failed", None
            else:
                status, next_at = "pending", at + self._delay_s(attempts, outcome.retry_after_s)
            if not outcome.delivered:
                log.info(
                    "webhook %s: attempt %d of event %s failed (%s)%s",
                    due.subscription,
                    attempts,
                    due.event_id,
                    outcome.error,
                    "; no more attempts" if status == "failed" else "",
                )
            await asyncio.to_thread(
                self._store.attempted,
                due.seq,
                status=status,
                status_code=outcome.status_code,
                error=outcome.error,
                at=at,
                next_attempt_at=next_at,
            )
        except Exception:  # the store failed: the delivery stays pending, tried again
            log.exception("webhook %s: recording an attempt failed", due.subscription)
        finally:
            self._busy.discard(due.subscription)
            self._wake.set()

    async def _post(self, client: httpx.AsyncClient, due: Due) -> _Outcome:
        timeout_s = self._settings.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                where = await target(due.url, allow_private=self._settings.allow_private_targets)
                headers = {
                    **where.headers,
                    "Content-Type": "application/json",
                    ID_HEADER: due.event_id,
                    SIGNATURE_HEADER: sign(due.secret, due.body, int(time.time())),
                }
                request = client.build_request(
                    "POST",
                    where.url,
                    content=due.body,
                    headers=headers,
                    extensions=where.extensions,
                )
                response = await client.send(request, stream=True)
                await response.aclose()  # the status is the answer; the body is not read
        except TimeoutError:
            return _Outcome(None, f"no answer within {timeout_s:g} s")
        except TargetRefusedError as exc:
            return _Outcome(None, f"refused target: {exc}")
        except httpx.HTTPError as exc:
            return _Outcome(None, f"{type(exc).__name__}: {exc}"[:300])
        code = response.status_code
        error = None if 200 <= code < 300 else f"answered {code}"
        retry_after = _retry_after_s(response.headers.get("retry-after"), time.time())
        return _Outcome(code, error, retry_after if code in (429, 503) else None)
