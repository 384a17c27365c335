"""Test harness of the webhooks: HTTP receivers on loopback that record what arrives, and
``kyoso api`` in its own process over a fresh copy of a simulated region, its webhooks
allowed to loopback receivers (tests/test_api_webhooks.py and
tests/test_api_webhook_subscriptions.py)."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikit import GATEWAY, Region, build_region, copy_region, online
from ingestkit import wait_until
from services import free_port

from kyoso.api.keys import ApiKeyStore, parse_scope
from kyoso.contract import MachineState
from kyoso.store import SqliteStore

DAYS = 4
OKADA = "okada-machining"
SATO = "sato-sheetmetal"
SCOPES = ("admin", "platform", f"factory:{OKADA}", f"factory:{SATO}")
WAIT_S = 60.0
"""Every wait's bound: generous, as CI's cores are busy; nothing is asserted of durations."""


# --- receivers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


class Receiver:
    """An HTTP server on loopback that records every POST and answers each path with the
    statuses it is given, in turn (the last one again and again; 200 by default)."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._answers: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver._answer(self.path)
                with receiver._lock:
                    receiver.arrivals.append(Arrival(self.path, dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def answer(self, path: str, *statuses: int) -> None:
        with self._lock:
            self._answers[path] = list(statuses)

    def _answer(self, path: str) -> int:
        with self._lock:
            queue = self._answers.get(path, [200])
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def at(self, path: str) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class DeadReceiver:
    """Accepts connections and never answers (a hung receiver)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.held.append(connection)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/hook"

    def close(self) -> None:
        self._socket.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


# --- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh_region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    """The shipped factories' history up to now, so that the server finds them online."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    path = tmp_path_factory.mktemp("region") / "store.sqlite3"
    return build_region(path, DAYS, origin=now - timedelta(days=DAYS), interval_s=300)


class ApiServer:
    """``kyoso api`` in its own process over a copy of the region, with webhooks allowed to
    loopback receivers; stopped and started again on the same files."""

    def __init__(self, region: Region, workdir: Path, **webhooks: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.region = copy_region(region, workdir)
        keys = workdir / "keys.sqlite3"
        with ApiKeyStore(keys, create=True) as store:
            self.keys = {s: store.create(s.replace(":", "-"), parse_scope(s)).key for s in SCOPES}
        self.port = free_port()
        settings = {"allow_private_targets": "true", "retry_base_s": "0.2", **webhooks}
        self.env = {
            **os.environ,
            "KYOSO_API_PORT": str(self.port),
            "KYOSO_API_SQLITE_PATH": str(self.region.path),
            "KYOSO_API_KEYS": str(keys),
            "KYOSO_API_BOOKINGS_PATH": str(workdir / "bookings.sqlite3"),
            "KYOSO_API_PROFILE_CACHE_PATH": str(workdir / "profiles.sqlite3"),
            "KYOSO_API_WEBHOOKS__PATH": str(workdir / "webhooks.sqlite3"),
            # The history is written once, not streamed: keep it fresh for the test's length.
            "KYOSO_API_CAPACITY__STALE_AFTER_S": "3600",
            "KYOSO_API_CAPACITY__MIN_HISTORY_H": "1",
            **{f"KYOSO_API_WEBHOOKS__{k.upper()}": v for k, v in settings.items()},
        }
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kyoso.cli", "api"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                return self.client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=WAIT_S, what="kyoso api")

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            assert self._process.wait(30) == 0
            self._process = None

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self.client.close()

    def ask(self, method: str, path: str, scope: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[scope]}"}
        return self.client.request(method, path, headers=headers, json=body)

    def subscribe(self, scope: str, **body: Any) -> dict[str, Any]:
        made = self.ask("POST", "/v1/webhooks", scope, body)
        assert made.status_code == 201, made.text
        created: dict[str, Any] = made.json()
        return created

    def deliveries(self, scope: str, webhook: str) -> list[dict[str, Any]]:
        found = self.ask("GET", f"/v1/webhooks/{webhook}/deliveries", scope)
        assert found.status_code == 200, found.text
        log: list[dict[str, Any]] = found.json()
        return log

    def set_online(self, factory: str, up: bool) -> None:
        """Write the factory's gateway status into the store, as the ingest would."""

        async def write() -> None:
            async with SqliteStore(self.region.path) as store:
                now = datetime.now(UTC)
                await store.write_status(online(factory, now, "online" if up else "offline"))

        asyncio.run(write())

    def set_state(self, factory: str, machine: str, state: MachineState) -> None:
        """Write the machine's next sample, 5 minutes of ``state``, as the ingest would."""

        async def write() -> None:
            async with SqliteStore(self.region.path) as store:
                latest = (await store.latest_samples(factory))[machine].sample
                following = latest.model_copy(
                    update={
                        "seq": latest.seq + 1,
                        "ts": latest.ts + timedelta(seconds=300),
                        "interval_s": 300.0,
                        "state": state,
                        "durations_s": {state: 300.0},
                    }
                )
                await store.write_samples(factory, GATEWAY, "history", [following])

        asyncio.run(write())


@pytest.fixture
def server(fresh_region: Region, tmp_path: Path) -> Iterator[ApiServer]:
    """A server of the test's own; its slow receiver's attempt is cut after 60 s."""
    started = ApiServer(fresh_region, tmp_path / "api", timeout_s="60")
    try:
        started.start()
        yield started
    finally:
        started.close()
