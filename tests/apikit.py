"""Test harness of the capacity API: a region of simulated factories with known ground truth
in the embedded store, the service over it at a fixed clock, keys of every scope."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.testclient import TestClient

from kyoso.api.app import create_app
from kyoso.api.bookings import BookingStore
from kyoso.api.keys import ApiKeyStore, parse_scope
from kyoso.api.limits import RequestLimits
from kyoso.api.service import CapacityService
from kyoso.api.webhook_config import WebhookSettings
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import GatewayStatus
from kyoso.simulators.config import FactoryConfig, load_factory, shipped_factories
from kyoso.simulators.history import history_descriptions, history_samples
from kyoso.simulators.runner import FactorySimulation
from kyoso.store import SqliteStore

GATEWAY = "gw-01"
UNLIMITED = RequestLimits(
    rate_per_s=1e9, burst=10**9, max_concurrent=10**6, max_concurrent_total=10**6
)
"""Limits no test of the API's other behaviour reaches (tests/test_api_limits.py has its own)."""
ORIGIN = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
"""Start of every simulated region's history."""


@dataclass
class Region:
    """Simulated factories' history in a SQLite store, and their behaviour models."""

    path: Path
    origin: datetime
    end: datetime
    simulations: dict[str, FactorySimulation]

    @property
    def configs(self) -> dict[str, FactoryConfig]:
        return {name: sim.config for name, sim in self.simulations.items()}


def build_region(
    path: Path,
    days: float,
    *,
    interval_s: float = 300.0,
    configs: list[FactoryConfig] | None = None,
    origin: datetime = ORIGIN,
) -> Region:
    """Write ``days`` of history of the shipped (or given) factories from ``origin`` into a
    new SQLite store at ``path``, with descriptions and an online status per gateway."""
    configs = configs or [load_factory(p) for p in shipped_factories()]
    end = origin + timedelta(days=days)
    simulations = {c.factory: FactorySimulation(c, origin.timestamp()) for c in configs}

    async def load() -> None:
        async with SqliteStore(path, synchronous="normal") as store:
            for name, sim in simulations.items():
                samples = history_samples(
                    sim, origin.timestamp(), end.timestamp(), interval_s=interval_s
                )
                for machine_samples in samples.values():
                    await store.write_samples(name, GATEWAY, "history", machine_samples)
                for description in history_descriptions(
                    sim.config, origin.timestamp(), gateway=GATEWAY
                ):
                    await store.write_description(description)
                await store.write_status(online(name, origin))

    asyncio.run(load())
    return Region(path, origin, end, simulations)


def copy_region(region: Region, workdir: Path) -> Region:
    """The region in a copy of its store under ``workdir``, for a test to change."""
    copy = workdir / "store.sqlite3"
    copy.write_bytes(region.path.read_bytes())
    return Region(copy, region.origin, region.end, region.simulations)


def online(
    factory: str, at: datetime, status: Literal["online", "offline"] = "online"
) -> GatewayStatus:
    """A gateway status of the region's gateway."""
    reason: Literal["connected", "connection_lost"] = (
        "connected" if status == "online" else "connection_lost"
    )
    return GatewayStatus(
        factory=factory,
        gateway=GATEWAY,
        session="history",
        status=status,
        ts=at,
        reason=reason,
    )


@dataclass
class Clocks:
    """A wall clock and a monotonic one that a test moves (together, with :meth:`advance`)."""

    wall: datetime
    ticks: float = 0.0

    def now(self) -> float:
        return self.wall.timestamp()

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.ticks += seconds


@dataclass
class Api:
    """A running app (in-process) over a region, with a key of each scope."""

    client: TestClient
    service: CapacityService
    keys: dict[str, str]
    """Key by scope: ``admin``, ``platform``, ``factory:<id>`` of every factory."""

    def headers(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}


@contextlib.contextmanager
def running_api(
    region: Region,
    workdir: Path,
    *,
    now: datetime | None = None,
    rules: CapacityRules | None = None,
    clocks: "Clocks | None" = None,
    limits: RequestLimits = UNLIMITED,
    webhooks: WebhookSettings | None = None,
) -> Iterator[Api]:
    """The API over ``region`` with the clock at ``now`` (default: 30 s after its end), or
    on ``clocks`` that the test moves (the request limiter's too); no request limits unless
    ``limits`` are given; webhooks in memory, to public addresses only, unless ``webhooks``
    says otherwise."""
    moment = (now or region.end + timedelta(seconds=30)).timestamp()
    keys = ApiKeyStore(workdir / "keys.sqlite3", create=True)
    scopes = ["admin", "platform", *(f"factory:{f}" for f in region.simulations)]
    made = {scope: keys.create(scope.replace(":", "-"), parse_scope(scope)).key for scope in scopes}
    store = SqliteStore(region.path)
    bookings = BookingStore(workdir / "bookings.sqlite3")
    service = CapacityService(
        store,
        bookings,
        rules or CapacityRules(),
        clock=(lambda: moment) if clocks is None else clocks.now,
        monotonic=time.monotonic if clocks is None else clocks.monotonic,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    monotonic = time.monotonic if clocks is None else clocks.monotonic
    app = create_app(
        service, keys, lifespan=lifespan, limits=limits, monotonic=monotonic, webhooks=webhooks
    )
    try:
        with TestClient(app) as client:
            yield Api(client, service, made)
    finally:
        bookings.close()
        keys.close()


def get_json(api: Api, path: str, scope: str = "admin", **params: Any) -> Any:
    """The JSON body of a GET that must succeed."""
    response = api.client.get(path, params=params, headers=api.headers(scope))
    assert response.status_code == 200, response.text
    return response.json()
