"""``kyoso api`` as deployed: the real server over HTTP, and capacity snapshots written
into the real InfluxDB for the dashboards."""

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from apikit import build_region
from ingestkit import wait_until
from services import InfluxDB, free_port

from kyoso.api.bookings import BookingStore
from kyoso.api.service import CapacityService
from kyoso.api.snapshots import CapacitySnapshots
from kyoso.capacity.rules import CapacityRules
from kyoso.influx.client import InfluxConfig, InfluxWriter
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.store import SqliteStore

pytestmark = pytest.mark.integration


def test_snapshots_land_in_the_shared_capacity_database(influxdb: InfluxDB, tmp_path: Path) -> None:
    sato = [load_factory(p) for p in shipped_factories() if "sato" in p.name]
    region = build_region(tmp_path / "store.sqlite3", 2, configs=sato)
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    clock = region.end.timestamp() + 30

    async def snapshot() -> int:
        async with (
            SqliteStore(region.path) as store,
            InfluxWriter(InfluxConfig(url=influxdb.url, database_prefix=prefix)) as writer,
        ):
            bookings = BookingStore(tmp_path / "bookings.sqlite3")
            service = CapacityService(store, bookings, CapacityRules(), clock=lambda: clock)
            snapshots = CapacitySnapshots(service, writer, 60)
            await writer.ensure_database(snapshots.database)
            try:
                return await snapshots.snapshot()
            finally:
                bookings.close()

    written = asyncio.run(snapshot())
    database = f"{prefix}capacity"
    try:
        rows = influxdb.query(
            "SELECT count(available_h) FROM capacity GROUP BY horizon, process", database
        )["results"][0]["series"]
        status = influxdb.query(
            "SELECT machines, offline, gateways_online FROM factory_status", database
        )["results"][0]["series"][0]
    finally:
        influxdb.drop_database(database)
    machines = sato[0].machines
    per_process = len([(m.id, c.process) for m in machines for c in m.capabilities])
    assert written == 2 * per_process + 1
    assert {r["tags"]["horizon"] for r in rows} == {"24h", "7d"}
    assert sum(r["values"][0][1] for r in rows) == 2 * per_process
    assert status["values"][0][1:] == [len(machines), False, 1]


def test_kyoso_api_serves_the_capacity_over_http(tmp_path: Path) -> None:
    region = build_region(tmp_path / "store.sqlite3", 1)
    keys = tmp_path / "keys.sqlite3"
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "kyoso.cli",
            "api",
            "keys",
            "create",
            "--keys",
            str(keys),
            "--name",
            "platform",
            "--scope",
            "platform",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    port = free_port()
    env = {
        **os.environ,
        "KYOSO_API_PORT": str(port),
        "KYOSO_API_SQLITE_PATH": str(region.path),
        "KYOSO_API_KEYS": str(keys),
        "KYOSO_API_BOOKINGS_PATH": str(tmp_path / "bookings.sqlite3"),
        "KYOSO_API_PROFILE_CACHE_PATH": str(tmp_path / "profiles.sqlite3"),
        "KYOSO_API_WEBHOOKS__PATH": str(tmp_path / "webhooks.sqlite3"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "kyoso.cli", "api"], env=env, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str, *, with_key: bool = True) -> tuple[int, bytes]:
        request = urllib.request.Request(base + path)  # noqa: S310 (loopback)
        if with_key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    try:
        wait_until(lambda: get("/openapi.json", with_key=False)[0] == 200, what="the API")
        status, body = get("/v1/factories")
        assert status == 200
        assert b'"factory":"okada-machining"' in body
        assert b'"offline":true' in body  # the history ended weeks ago
        assert get("/v1/factories", with_key=False)[0] == 401
        status, metrics = get("/metrics", with_key=False)  # for Prometheus, like /healthz
        assert status == 200
        assert b'route="/v1/factories",status="401"' in metrics
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        assert server.stderr is not None
        server.stderr.close()
