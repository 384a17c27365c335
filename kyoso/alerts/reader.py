"""What the alerts read of a factory, through the Kyoso API with the factory's own key.

The alerts are a client of the API like any other: they see what a ``factory:<id>`` key
sees, and nothing of another factory but the cover candidates the API offers it. The reader
is synchronous (``httpx.Client``) and run in a worker thread by the engine, so one look's
requests never hold up the delivery of messages.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from .errors import ApiReadError

__all__ = [
    "ApiReader",
    "Cover",
    "FactoryNow",
    "GatewayNow",
    "MachineNow",
    "Order",
]


@dataclass(frozen=True, slots=True)
class MachineNow:
    """A machine as the factory's key sees it now."""

    machine: str
    name: str
    processes: tuple[str, ...]
    state: str | None
    """Its state at the latest sample (``down``, ``running``...); None: no sample."""
    withdrawn: str | None
    """Why its capacity is withdrawn, if it is for want of evidence: offline, unreadable."""
    down_since: datetime | None = None
    """Down now: when the stop began, by its samples, as the API says."""


@dataclass(frozen=True, slots=True)
class GatewayNow:
    """A gateway's last status."""

    gateway: str
    online: bool
    since: datetime
    """Online: when it connected; offline: when it was last heard."""


@dataclass(frozen=True, slots=True)
class FactoryNow:
    """One look at a factory."""

    factory: str
    offline: bool
    """Its capacity is withdrawn: no gateway heard recently."""
    timezone: str | None
    """Its machines' calendar's time zone (the first machine's); None: no machine."""
    machines: Mapping[str, MachineNow]
    gateways: tuple[GatewayNow, ...]
    available_h: Mapping[str, float]
    """Available hours per process over the horizon asked."""


@dataclass(frozen=True, slots=True)
class Order:
    """Work promised on a machine: a booking the factory declared, or a confirmed hold."""

    machine: str
    ref: str | None
    """The order's reference (a hold's ``order_ref``); None: a booking."""
    start: datetime
    end: datetime
    hours: float | None
    """Hours of work; None: all its planned time (a booking without hours)."""


@dataclass(frozen=True, slots=True)
class Cover:
    """Who could take the work a machine will miss, for one of its processes."""

    process: str
    hours: float
    candidates: tuple[tuple[str, float], ...]
    """(factory, its available hours of the process), best first."""


_WITHDRAWN = ("offline", "unreadable")


class ApiReader:
    """Reads the API through ``client`` (its ``base_url`` the API's)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _get(self, key: str, path: str, **params: Any) -> Any:
        try:
            response = self._client.get(
                path, params=params, headers={"Authorization": f"Bearer {key}"}
            )
        except httpx.HTTPError as exc:
            raise ApiReadError(f"GET {path}: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", "")
            except ValueError:
                detail = response.text[:200]
            raise ApiReadError(
                f"GET {path}: {response.status_code} {detail}".rstrip(), response.status_code
            )
        return response.json()

    def factory(self, factory: str, key: str, horizon_h: float) -> FactoryNow:
        """The factory now: its flag, machines, gateways and capacity over ``horizon_h``."""
        [listed] = [f for f in self._get(key, "/v1/factories") if f["factory"] == factory] or [None]
        if listed is None:
            raise ApiReadError(f"the key of {factory} does not see it in /v1/factories")
        base = f"/v1/factories/{factory}"
        machines = self._get(key, f"{base}/machines")
        gateways = self._get(key, f"{base}/gateways")
        capacity = self._get(key, f"{base}/capacity", horizon_h=horizon_h)
        reasons = {m["machine"]: m["reasons"] for m in capacity.get("machines") or []}
        return FactoryNow(
            factory=factory,
            offline=listed["offline"],
            timezone=machines[0]["calendar"]["timezone"] if machines else None,
            machines={
                m["machine"]: MachineNow(
                    machine=m["machine"],
                    name=m["name"],
                    processes=tuple(dict.fromkeys(c["process"] for c in m["capabilities"])),
                    state=m["state"],
                    withdrawn=next(
                        (r for r in reasons.get(m["machine"], []) if r in _WITHDRAWN), None
                    ),
                    down_since=(
                        None if m["down_since"] is None else datetime.fromisoformat(m["down_since"])
                    ),
                )
                for m in machines
            },
            gateways=tuple(
                GatewayNow(
                    g["gateway"], g["status"] == "online", datetime.fromisoformat(g["since"])
                )
                for g in gateways
            ),
            available_h={p["process"]: p["available"] for p in capacity["by_process"]},
        )

    def orders(
        self, factory: str, key: str, machines: list[str], now: datetime, within_h: float
    ) -> list[Order]:
        """The bookings and confirmed holds of ``machines`` that have not ended and start
        within ``within_h`` of ``now``."""
        if not machines:
            return []
        until = now + timedelta(hours=within_h)
        found: list[Order] = []
        for machine in machines:
            declared = self._get(key, f"/v1/factories/{factory}/machines/{machine}/bookings")
            found.extend(
                Order(machine, None, *_window(b), b["hours"]) for b in declared["bookings"]
            )
        for hold in self._get(key, "/v1/holds", factory=factory, status="confirmed", limit=500):
            if hold["machine"] in machines:
                found.append(
                    Order(hold["machine"], hold["order_ref"], *_window(hold), hold["hours"])
                )
        return sorted(
            (o for o in found if o.end > now and o.start < until),
            key=lambda o: (o.machine, o.start),
        )

    def cover(self, factory: str, key: str, machine: str) -> list[Cover]:
        """Who could take the work ``machine`` will miss; none when the API has nothing to
        cover (409: the machine works again)."""
        path = "/v1/search/cover"
        try:
            answer = self._get(key, path, factory=factory, machine=machine)
        except ApiReadError as exc:
            if exc.status == 409:
                return []
            raise
        return [
            Cover(
                c["process"],
                c["hours"],
                tuple((k["factory"], k["available"]) for k in c["candidates"]),
            )
            for c in answer
        ]


def _window(item: Mapping[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(item["start"]), datetime.fromisoformat(item["end"])
