"""Delivery: each queued message to its channel through apprise, retried until it goes.

A recipient's channels are apprise URLs (``mailtos://``, ``line://``, ``slack://``,
``json://``...). Each channel of each recipient is delivered on its own, so a LINE outage
does not send the e-mail twice. A message that fails stays in the outbox and is tried again
after ``retry_base_s``, doubling to ``retry_max_s``; after ``max_attempts`` it is marked
failed and logged as an error (it stays in the state file): never dropped unsaid. Messages
held by quiet hours that fall due together go as one digest per channel.
"""

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import apprise

from .config import AlertsConfig, Recipient
from .errors import DeliveryError
from .messages import digest
from .state import AlertState, Queued

__all__ = ["AppriseNotifier", "Courier", "Notifier", "channel_of"]

logger = logging.getLogger(__name__)


def channel_of(url: str) -> str:
    """The name a channel is kept under in the state file: a digest of its URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class Notifier(Protocol):
    """Sends one message to one channel; raises :class:`DeliveryError` when it did not go."""

    async def send(self, url: str, title: str, body: str) -> None: ...


class AppriseNotifier:
    """Sends through apprise's asynchronous notify."""

    async def send(self, url: str, title: str, body: str) -> None:
        scheme = urlsplit(url).scheme
        notifier = apprise.Apprise()
        if not notifier.add(url):
            raise DeliveryError(f"{scheme}://: not a URL apprise can use")
        # The body is plain text: apprise turns its lines into HTML where a channel wants it.
        result = await notifier.async_notify(
            body=body, title=title, body_format=apprise.NotifyFormat.TEXT
        )
        if not result:
            raise DeliveryError(f"{scheme}://: {result.status.name.lower()}")


@dataclass(frozen=True, slots=True)
class _Batch:
    """What goes to one channel in one attempt: one message, or a digest of held ones."""

    url: str
    title: str
    body: str
    messages: list[Queued]


class Courier:
    """Delivers what the outbox holds when it falls due."""

    def __init__(
        self,
        config: AlertsConfig,
        state: AlertState,
        notifier: Notifier,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._state = state
        self._notifier = notifier
        self._clock = clock
        self.delivered = 0
        """Messages delivered since start."""
        self.failures = 0
        """Attempts that failed since start."""

    def _recipient(self, owner: str, name: str) -> Recipient | None:
        factory = self._config.factories.get(owner)
        found = [r for r in factory.recipients if r.name == name] if factory else []
        return found[0] if found else None

    def _batches(self, due: list[Queued]) -> list[_Batch]:
        """Each due message alone, or with the others quiet hours held for its channel."""
        batches: list[_Batch] = []
        held: dict[tuple[str, str, str], list[Queued]] = {}
        for message in due:
            recipient = self._recipient(message.owner, message.recipient)
            urls = {} if recipient is None else _urls(recipient)
            url = urls.get(message.channel)
            if recipient is None or url is None:
                logger.error(
                    "message %d to %s of %s: that channel is no longer configured: given up",
                    message.id,
                    message.recipient,
                    message.owner,
                )
                self._state.retry([message.id], self._clock(), "channel removed", failed=True)
            elif message.held:
                held.setdefault((message.owner, message.recipient, url), []).append(message)
            else:
                batches.append(_Batch(url, message.title, message.body, [message]))
        for (owner, name, url), messages in held.items():
            if len(messages) == 1:
                [one] = messages
                batches.append(_Batch(url, one.title, one.body, messages))
                continue
            recipient = self._recipient(owner, name)
            assert recipient is not None
            title, body = digest(owner, [(m.title, m.body) for m in messages], recipient.lang)
            batches.append(_Batch(url, title, body, messages))
        return batches

    async def deliver(self) -> int:
        """Send every message due now, the channels at once; the number delivered."""
        batches = self._batches(self._state.due(self._clock()))
        outcomes = await asyncio.gather(*(self._attempt(b) for b in batches))
        return sum(outcomes)

    async def _attempt(self, batch: _Batch) -> int:
        ids = [m.id for m in batch.messages]
        timeout_s = self._config.delivery.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._notifier.send(batch.url, batch.title, batch.body)
        except (DeliveryError, TimeoutError) as exc:
            error = str(exc) or f"no answer within {timeout_s} s"
            self.failures += 1
            self._retry(batch, ids, error)
            return 0
        self._state.delivered(ids)
        self.delivered += len(ids)
        return len(ids)

    def _retry(self, batch: _Batch, ids: list[int], error: str) -> None:
        rules = self._config.delivery
        attempts = 1 + max(m.attempts for m in batch.messages)
        who = f"{batch.messages[0].recipient} of {batch.messages[0].owner}"
        if attempts >= rules.max_attempts:
            logger.error(
                "%d message(s) to %s not delivered after %d attempts, given up: %s",
                len(ids),
                who,
                attempts,
                error,
            )
            self._state.retry(ids, self._clock(), error, failed=True)
            return
        wait_s = min(rules.retry_base_s * 2 ** (attempts - 1), rules.retry_max_s)
        logger.warning(
            "%d message(s) to %s not delivered (attempt %d): %s; again in %.0f s",
            len(ids),
            who,
            attempts,
            error,
            wait_s,
        )
        self._state.retry(ids, self._clock() + wait_s, error, failed=False)


def _urls(recipient: Recipient) -> dict[str, str]:
    return {channel_of(u.get_secret_value()): u.get_secret_value() for u in recipient.urls}
