"""Test harness of the capacity API: a region of simulated factories with known ground truth
in the embedded store, the service over it at a fixed clock, keys of every scope."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from fastapi.testclient import TestClient

from kyoso.api.app import create_app
from kyoso.api.bookings import BookingStore
from kyoso.api.keys import ApiKeyStore, parse_scope
from kyoso.api.service import CapacityService
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import GatewayStatus
from kyoso.simulators.config import FactoryConfig, load_factory, shipped_factories
from kyoso.simulators.history import history_descriptions, history_samples
from kyoso.simulators.runner import FactorySimulation
from kyoso.store import SqliteStore

GATEWAY = "gw-01"
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
) -> Iterator[Api]:
    """The API over ``region`` with the clock at ``now`` (default: 30 s after its end)."""
    moment = (now or region.end + timedelta(seconds=30)).timestamp()
    keys = ApiKeyStore(workdir / "keys.sqlite3", create=True)
    scopes = ["admin", "platform", *(f"factory:{f}" for f in region.simulations)]
    made = {scope: keys.create(scope.replace(":", "-"), parse_scope(scope)).key for scope in scopes}
    store = SqliteStore(region.path)
    bookings = BookingStore(workdir / "bookings.sqlite3")
    service = CapacityService(store, bookings, rules or CapacityRules(), clock=lambda: moment)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    app = create_app(service, keys, lifespan=lifespan)
    try:
        with TestClient(app) as client:
            yield Api(client, service, made)
    finally:
        bookings.close()
        keys.close()
