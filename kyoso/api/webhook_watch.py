"""What a webhook subscription watches, seen in the figures the API serves.

One look (:class:`Look`) reads each figure once for every subscription, as the event stream
does: the regional capacity per horizon (:meth:`CapacityService.region`, what
``/v1/capacity`` shows), a factory's own capacity, and each factory's live view
(:meth:`CapacityService.view`). :func:`observe` turns them into what one subscription may
know, each value with the event it means when it differs from the last look's; the hub
(:mod:`kyoso.api.webhooks`) compares and keeps them.

What is watched:

- ``capacity.threshold``: whether the available hours of ``process`` (region-wide, or at
  ``factory``) over ``horizon_h`` reach ``min_available_h``: for a platform or admin key the
  shared machines only, as ``/v1/capacity`` sums them; for a factory key all of its own.
- ``factory.offline`` / ``factory.online``: the factory's offline flag, as
  ``/v1/factories`` shows it.
- ``machine.down`` / ``machine.up``: a watched machine cannot work now, for the reason
  its capacity is withdrawn or unattainable: ``offline`` (stale, or its factory offline),
  ``unreadable``, or ``down`` (broken down for ``minor_stop_max_s`` or more: a minor stop
  is no event).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from kyoso.capacity import aggregate
from kyoso.capacity.aggregate import FactoryCapacity
from kyoso.contract import Process

from .deps import in_hours
from .keys import Scope, ScopeKind
from .service import CapacityService, FactoryView, MachineView
from .webhook_store import WebhookSpec

__all__ = ["LOOK_AT_MOST_S", "Look", "Seen", "look_interval_s", "observe"]

LOOK_AT_MOST_S: Final = 0.1
"""Watchers (the event stream, the webhooks) look at the figures at most this often,
whatever ``view_ttl_s``."""

_T = TypeVar("_T")


def look_interval_s(service: CapacityService) -> float:
    """How often to look: as often as the live views are read again."""
    return max(service.rules.view_ttl_s, LOOK_AT_MOST_S)


class Look:
    """The figures of one moment, each read once however many subscriptions need it."""

    def __init__(self, service: CapacityService) -> None:
        self.service = service
        self._read: dict[tuple[Any, ...], Any] = {}

    async def _once(self, key: tuple[Any, ...], read: Callable[[], Awaitable[_T]]) -> _T:
        if key not in self._read:
            self._read[key] = await read()
        found: _T = self._read[key]
        return found

    async def factories(self) -> list[str]:
        return await self._once(("factories",), self.service.factories)

    async def region(self, horizon_h: float) -> list[FactoryCapacity]:
        horizon = timedelta(hours=horizon_h)
        return await self._once(("region", horizon), lambda: self.service.region(horizon))

    async def capacity(self, factory: str, horizon_h: float) -> FactoryCapacity:
        horizon = timedelta(hours=horizon_h)
        read = lambda: self.service.capacity(factory, horizon)  # noqa: E731
        return await self._once(("capacity", factory, horizon), read)

    async def view(self, factory: str) -> FactoryView:
        return await self._once(("view", factory), lambda: self.service.view(factory))


@dataclass(frozen=True, slots=True)
class Seen:
    """One watched value, and the event it means when it is not the last look's."""

    value: bool | str | None
    """What is compared (kept as JSON in the subscription's state)."""
    type: str
    subject: str | None
    """What the event is about, for every subscription told of it in the same look (they
    share its id); None: this subscription's own event."""
    data: dict[str, Any]


def _when(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def _threshold(scope: Scope, spec: WebhookSpec, look: Look) -> Seen:
    assert spec.process is not None  # the schema's rule, as the next
    assert spec.min_available_h is not None
    if scope.kind is ScopeKind.FACTORY:
        assert scope.factory is not None
        chosen = [await look.capacity(scope.factory, spec.horizon_h)]
        shared_only = False
    else:
        found = await look.region(spec.horizon_h)
        chosen = [c for c in found if spec.factory is None or c.factory == spec.factory]
        shared_only = True
    process = Process(spec.process)
    sums = aggregate.by_process(chosen, shared_only=shared_only, process=process)
    available = in_hours(sums[0].total.figures.available_s) if sums else 0.0
    above = available >= spec.min_available_h
    data = {
        "direction": "appeared" if above else "gone",
        "process": spec.process,
        "factory": spec.factory,
        "horizon_h": spec.horizon_h,
        "min_available_h": spec.min_available_h,
        "available_h": available,
        "as_of": _when(aggregate.as_of(chosen, look.service.now())),
    }
    return Seen(above, "capacity.threshold", None, data)


def _unable(view: FactoryView, machine: MachineView, minor_stop_max_s: float) -> str | None:
    """Why the machine cannot work now (None: it can)."""
    if view.offline or machine.stale:
        return "offline"
    if machine.unreadable:
        return "unreadable"
    if machine.down_for_s is not None and machine.down_for_s >= minor_stop_max_s:
        return "down"
    return None


async def observe(scope: Scope, spec: WebhookSpec, look: Look) -> dict[str, Seen]:
    """What a key of ``scope`` subscribed with ``spec`` is watching, now. A factory or
    machine the key may not see (another factory's; a machine not shared, for a platform
    key) or no longer described is not seen: nothing is told of it."""
    seen: dict[str, Seen] = {}
    events = set(spec.events)
    if "capacity.threshold" in events:
        seen["threshold"] = await _threshold(scope, spec, look)
    own = scope.factory if scope.kind is ScopeKind.FACTORY else None
    if events & {"factory.offline", "factory.online"}:
        known = set(await look.factories())
        watched = [f for f in (own or spec.factory,) if f] or sorted(known)
        for factory in (f for f in watched if f in known):
            view = await look.view(factory)
            data: dict[str, Any] = {"factory": factory, "as_of": _when(view.as_of)}
            if view.offline:
                newest = None if view.newest is None else _when(view.newest)
                kind, data = "factory.offline", {**data, "newest_sample": newest}
            else:
                kind = "factory.online"
            seen[f"offline:{factory}"] = Seen(view.offline, kind, f"factory:{factory}", data)
    if events & {"machine.down", "machine.up"}:
        for factory, name in spec.machines:
            if (own is not None and factory != own) or factory not in await look.factories():
                continue
            view = await look.view(factory)
            machine = view.machines.get(name)
            if machine is None:
                continue  # withdrawn: nothing is known of it
            if scope.kind is ScopeKind.PLATFORM and not machine.description.sharing.capacity:
                continue
            reason = _unable(view, machine, look.service.rules.minor_stop_max_s)
            data = {"factory": factory, "machine": name, "as_of": _when(view.as_of)}
            if reason is None:
                kind = "machine.up"
            else:
                kind, data = "machine.down", {**data, "reason": reason}
            subject = f"machine:{factory}/{name}"
            seen[f"down:{factory}/{name}"] = Seen(reason, kind, subject, data)
    return seen
