"""Webhooks: events posted to the receivers API keys subscribe, at least once.

:class:`WebhookHub` is the API process's one webhook component (``app.state.webhooks``):
it keeps the subscriptions (:mod:`.webhook_store`), looks at the figures for every
subscription at once (:mod:`.webhook_watch`), as often as the event stream does, and writes
an event for each subscription whose watched value changed; its dispatcher
(:mod:`.webhook_delivery`) posts them. Other features send their own events with
:meth:`WebhookHub.emit`.

A subscription's first look is taken when it is made: it is told of changes from then on,
never of the state it was made in (``GET /v1/capacity`` and ``/v1/factories`` tell that).
What each subscription last saw is kept with it, in the same transaction as the events
it causes, so a restart neither repeats an event nor misses a change made while the API was
down.

API replicas may share the store's file (on one host): one of them, the holder of a lock
on it, watches and delivers; the others serve the routes and write emitted events, which
it sends. Subscriptions of a revoked API key are deleted, with their pending deliveries,
within :data:`~kyoso.api.keys.CACHE_TTL_S` (as long as a revoked key may still be used).
"""

import asyncio
import contextlib
import fcntl
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Final, Self, get_args

from .holds import Hold
from .keys import CACHE_TTL_S, ApiKeyStore, Principal, ScopeKind
from .service import CapacityService
from .webhook_config import WebhookSettings
from .webhook_delivery import Dispatcher
from .webhook_schemas import EventType
from .webhook_store import Delivery, Event, Subscription, WebhookSpec, WebhookStore
from .webhook_watch import Look, look_interval_s, observe

__all__ = ["EVENT_VERSION", "Audience", "WebhookHub"]

log = logging.getLogger(__name__)

EVENT_VERSION: Final = 1
"""The ``version`` of every event body: a receiver checks it before reading ``data``."""
EVENT_TYPES: Final = frozenset(get_args(EventType))
_LEAD_RETRY_S: Final = 5.0
"""A replica not delivering tries to take the store's lock this often."""


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may be told of an emitted event.

    ``factory``: the factory it is about; that factory's keys are told, and a subscription
    filtered on another factory is not. ``regional``: the platform and admin keys are told
    too (only what ``/v1/capacity`` may show them: shared capacity, no machine of a factory
    that does not share it); with ``key_ids``, only those of them (the platform key that
    placed a hold, say)."""

    factory: str | None = None
    regional: bool = False
    key_ids: frozenset[str] | None = None

    def admits(self, sub: Subscription, event_type: str, data: Mapping[str, Any]) -> bool:
        scope, spec = sub.scope, sub.spec
        if event_type not in spec.events:
            return False
        if scope.kind is ScopeKind.FACTORY:
            if scope.factory != self.factory:
                return False
        elif not self.regional or (self.key_ids is not None and sub.key_id not in self.key_ids):
            return False
        if spec.factory is not None and spec.factory != self.factory:
            return False
        process = data.get("process")
        return spec.process is None or process is None or process == spec.process


class WebhookHub:
    """Subscriptions, the watcher and the dispatcher; an async context manager that runs
    them (the app's lifespan enters it)."""

    def __init__(
        self,
        settings: WebhookSettings,
        service: CapacityService,
        keys: ApiKeyStore,
    ) -> None:
        self.settings = settings
        self._service = service
        self._keys = keys
        self._store: WebhookStore | None = None
        self._dispatcher: Dispatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock_file: IO[bytes] | None = None
        self._known: tuple[tuple[int, int], list[Subscription]] | None = None

    async def __aenter__(self) -> Self:
        self._store = store = await asyncio.to_thread(WebhookStore, self.settings.path)
        self._dispatcher = Dispatcher(store, self.settings)
        self._task = asyncio.create_task(self._lead(), name="webhooks")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lock_file is not None:
            self._lock_file.close()  # the lock goes with it: another replica takes over
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> WebhookStore:
        if self._store is None:
            raise RuntimeError("the webhook hub is not running (enter it first)")
        return self._store

    # --- for the routes -------------------------------------------------------------------

    async def subscribe(self, caller: Principal, spec: WebhookSpec) -> tuple[Subscription, bool]:
        """A new subscription of the caller's key, what it watches seen now; and whether it
        was stored (not when the key has ``max_subscriptions_per_key`` already)."""
        seen = await observe(caller.scope, spec, Look(self._service))
        sub = Subscription(
            id=f"wh_{secrets.token_hex(12)}",
            key_id=caller.key_id,
            scope=caller.scope,
            spec=spec,
            secret=f"whsec_{secrets.token_urlsafe(32)}",
            state={key: s.value for key, s in seen.items()},
            created_at=time.time(),
        )
        limit = self.settings.max_subscriptions_per_key
        return sub, await asyncio.to_thread(self.store.add, sub, limit)

    async def subscriptions(self, caller: Principal) -> list[Subscription]:
        return await asyncio.to_thread(self.store.subscriptions, caller.key_id)

    async def subscription(self, caller: Principal, sub_id: str) -> Subscription | None:
        """The caller's subscription ``sub_id``; None for another key's, as for none."""
        return await asyncio.to_thread(self.store.subscription, sub_id, caller.key_id)

    async def unsubscribe(self, caller: Principal, sub_id: str) -> bool:
        return await asyncio.to_thread(self.store.delete, sub_id, caller.key_id)

    async def deliveries(self, caller: Principal, sub_id: str, limit: int) -> list[Delivery] | None:
        """The caller's subscription's latest deliveries, newest first (None: no such)."""
        if await self.subscription(caller, sub_id) is None:
            return None
        return await asyncio.to_thread(self.store.deliveries, sub_id, limit)

    # --- for other features ---------------------------------------------------------------

    async def emit(self, event_type: str, data: Mapping[str, Any], audience: Audience) -> str:
        """Send an event to every subscription of ``event_type`` whose key ``audience``
        admits (and whose ``factory`` and ``process`` filters it passes); its id.

        For the API's own features (holds, orders): e.g. after a hold is stored,
        ``await hub.emit("hold.created", {"hold": ..., "factory": f, "process": p, ...},
        Audience(factory=f, regional=True))``, with the hub from ``request.app.state.webhooks``.
        ``event_type`` must be one of :data:`~kyoso.api.webhook_schemas.EventType` (add a new
        one there, so that subscriptions can ask for it and the document lists it), or
        ValueError; ``data`` must be JSON (TypeError otherwise) and, like the body it goes
        into, tell only what every admitted key may see. The events are written pending
        before this returns, in one transaction (a store failure raises and writes none);
        they are posted in the background, at least once, in no guaranteed order. With no
        subscriber it writes nothing and the event is gone."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}: add it to EventType first")
        event = self._event(event_type, data)
        subs = [s for s in await self._subscriptions() if audience.admits(s, event_type, data)]
        if subs:
            await asyncio.to_thread(
                self.store.record,
                {},
                [(s.id, event) for s in subs],
                now=time.time(),
                max_pending=self.settings.max_pending_per_subscription,
            )
            if self._dispatcher is not None:
                self._dispatcher.wake()
        return event.id

    async def tell_hold(self, event_type: EventType, hold: Hold) -> str:
        """Tell the hold's factory and the platform key that placed it of a change to the
        hold (``hold.created``, ``hold.confirmed``, ``hold.released``, ``hold.expired``)."""
        data = {
            "hold": hold.id,
            "factory": hold.factory,
            "machine": hold.machine,
            "process": hold.process,
            "order_ref": hold.order_ref,
            "status": hold.status,
            "start": hold.start.isoformat(),
            "end": hold.end.isoformat(),
            "hours": hold.hours,
            "expires_at": hold.expires_at.isoformat(),
        }
        audience = Audience(hold.factory, regional=True, key_ids=frozenset({hold.placed_by}))
        return await self.emit(event_type, data, audience)

    async def _tell_expiries(self) -> None:
        """Tell of the holds that expired since the last look (whichever call found them),
        each once: marked told after its events are written (at least once, then)."""
        holds = self._service.bookings.holds
        expired = await asyncio.to_thread(holds.untold_expiries, self._service.now())
        for hold in expired:
            await self.tell_hold("hold.expired", hold)
        if expired:
            await asyncio.to_thread(holds.told, [h.id for h in expired])

    # --- watching -------------------------------------------------------------------------

    def _event(self, event_type: str, data: Mapping[str, Any]) -> Event:
        event_id = f"evt_{secrets.token_hex(12)}"
        created = datetime.fromtimestamp(time.time(), UTC).isoformat().replace("+00:00", "Z")
        body = {
            "id": event_id,
            "type": event_type,
            "created": created,
            "version": EVENT_VERSION,
            "data": dict(data),
        }
        return Event(event_id, event_type, json.dumps(body, separators=(",", ":")).encode())

    async def _subscriptions(self) -> list[Subscription]:
        """Every subscription, read again only when the store changed."""
        version = await asyncio.to_thread(self.store.version)
        if self._known is None or self._known[0] != version:
            self._known = (version, await asyncio.to_thread(self.store.subscriptions))
        return self._known[1]

    async def look(self) -> int:
        """Look at the figures once for every subscription; write an event for each value
        that changed since its last look (a value seen for the first time, a factory
        described since, say, is only kept). How many events were written."""
        subs = await self._subscriptions()
        if not subs:
            return 0  # nothing is computed for nobody
        look = Look(self._service)
        shared: dict[tuple[str, str], Event] = {}  # one event per subject and look
        states: dict[str, dict[str, Any]] = {}
        deliveries: list[tuple[str, Event]] = []
        for sub in subs:
            try:
                seen = await observe(sub.scope, sub.spec, look)
            except Exception:  # one subscription's failure is not the others'
                log.exception("webhook %s: looking at its figures failed", sub.id)
                continue
            state = dict(sub.state)
            for key, now in seen.items():
                if key in state and state[key] == now.value:
                    continue
                if key in state:  # a change, not a first sight
                    subject = None if now.subject is None else (now.type, now.subject)
                    event = None if subject is None else shared.get(subject)
                    if event is None:
                        event = self._event(now.type, now.data)
                        if subject is not None:
                            shared[subject] = event
                    deliveries.append((sub.id, event))
                state[key] = now.value
            if state != sub.state:
                states[sub.id] = state
        if states:
            max_pending = self.settings.max_pending_per_subscription
            await asyncio.to_thread(
                self.store.record, states, deliveries, now=time.time(), max_pending=max_pending
            )
        if deliveries and self._dispatcher is not None:
            self._dispatcher.wake()
        return len(deliveries)

    async def _drop_revoked(self) -> None:
        holders = {s.key_id for s in await self._subscriptions()}
        if not holders:
            return
        keys = await asyncio.to_thread(self._keys.list_keys)
        gone = holders & {k.key_id for k in keys if k.revoked_at is not None}
        if gone:
            dropped = await asyncio.to_thread(self.store.delete_keys, gone)
            log.info("webhooks: deleted %d subscriptions of revoked keys", dropped)

    async def _watch(self) -> None:
        step = look_interval_s(self._service)
        checked = -CACHE_TTL_S
        while True:
            try:
                if time.monotonic() - checked >= CACHE_TTL_S:
                    checked = time.monotonic()
                    await self._drop_revoked()
                await self.look()
                await self._tell_expiries()
            except Exception:  # the loop's boundary: the next look tries again
                log.exception("webhooks: a look at the figures failed")
            await asyncio.sleep(step)

    def _take_lead(self) -> bool:
        """Whether this process is the one to watch and deliver (it holds the file's lock,
        or the store is in memory: its own)."""
        if self.settings.path is None:
            return True
        lock = self.settings.path.with_name(self.settings.path.name + ".lock")
        handle = lock.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    async def _lead(self) -> None:
        while not self._take_lead():  # noqa: ASYNC110 (another process holds it: no event)
            await asyncio.sleep(_LEAD_RETRY_S)
        assert self._dispatcher is not None
        async with asyncio.TaskGroup() as group:
            group.create_task(self._dispatcher.run(), name="webhook-deliveries")
            group.create_task(self._watch(), name="webhook-watcher")
