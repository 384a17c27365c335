"""The live overview page at the API root: served without a key under a strict
Content-Security-Policy, and rendered by a real headless Chromium from a real ``kyoso api``
over a freshly simulated region."""

import contextlib
import http.client
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apikit import Region, build_region, running_api
from browser import chromium, png_rows, rendered
from ingestkit import wait_until
from services import free_port

from kyoso.contract.calendar import ShiftCalendar

DAYS = 2


def test_the_page_is_served_at_the_root_without_a_key(tmp_path: Path) -> None:
    region = build_region(tmp_path / "store.sqlite3", 1)
    with running_api(region, tmp_path) as api:
        response = api.client.get("/")
        schema = api.client.get("/openapi.json").json()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "http://" not in page
    assert "https://" not in page
    policy = dict(
        part.strip().split(" ", 1)
        for part in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["script-src"].startswith("'sha256-")  # the inline script only
    assert policy["style-src"].startswith("'sha256-")
    assert "unsafe" not in response.headers["content-security-policy"]
    assert "/" not in schema["paths"]


# --- in headless Chromium against the real server -----------------------------------------


@dataclass
class Server:
    base: str
    keys: dict[str, str]
    region: Region


def _create_key(keys: Path, scope: str) -> str:
    command = [sys.executable, "-m", "kyoso.cli", "api", "keys", "create", "--keys", str(keys)]
    created = subprocess.run(
        [*command, "--name", scope, "--scope", scope],
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip()


@contextlib.contextmanager
def _kyoso_api(workdir: Path, region: Region, env: dict[str, str]) -> Iterator[Server]:
    """``kyoso api`` over ``region`` on a free port, with an admin and a platform key, and
    ``env`` added to its environment, for the ``with`` block."""
    keys = workdir / "keys.sqlite3"
    made = {scope: _create_key(keys, scope) for scope in ("admin", "platform")}
    port = free_port()
    env = {
        **os.environ,
        "KYOSO_API_PORT": str(port),
        "KYOSO_API_SQLITE_PATH": str(region.path),
        "KYOSO_API_KEYS": str(keys),
        "KYOSO_API_BOOKINGS_PATH": str(workdir / "bookings.sqlite3"),
        "KYOSO_API_PROFILE_CACHE_PATH": str(workdir / "profiles.sqlite3"),
        "KYOSO_API_WEBHOOKS__PATH": str(workdir / "webhooks.sqlite3"),
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "kyoso.cli", "api"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(base + "/", timeout=2) as response:  # noqa: S310 (loopback)
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_until(up, what="kyoso api")
        yield Server(base, made, region)
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``kyoso api`` over a region whose simulated history ends about now, so it is fresh."""
    workdir = tmp_path_factory.mktemp("overview")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    region = build_region(
        workdir / "store.sqlite3", DAYS, origin=now - timedelta(days=DAYS), interval_s=60
    )
    env = {
        # The history is written once, not streamed: keep it fresh for the test's length.
        "KYOSO_API_CAPACITY__STALE_AFTER_S": "3600",
        # Chromium's virtual time runs a page's refreshes, 15 s apart, within a second, and
        # the tests one after another load the page with the same keys: the limits of a
        # key's rate are tested in tests/test_api_limits.py, not here.
        "KYOSO_API_LIMITS__RATE_PER_S": "1000",
        "KYOSO_API_LIMITS__BURST": "1000",
    }
    with _kyoso_api(workdir, region, env) as api:
        yield api


def _get(server: Server, path: str, scope: str) -> Any:
    request = urllib.request.Request(server.base + path)  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {server.keys[scope]}")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return json.load(response)


def _shared_capabilities(server: Server, horizon_h: int) -> set[str]:
    """The capabilities the API itself reports across the region."""
    return {
        p["process"]
        for p in _get(server, f"/v1/capacity?horizon_h={horizon_h}", "platform")["by_process"]
    }


def _factory_zones(server: Server) -> dict[str, str]:
    """Each factory's time zone, as the API describes its machines' shift calendars."""
    zones = {}
    for factory in server.region.simulations:
        machines = _get(server, f"/v1/factories/{factory}/machines", "admin")
        found = {m["calendar"]["timezone"] for m in machines}
        assert len(found) == 1, found
        zones[factory] = found.pop()
    return zones


def _start_of_day(zone: str, moment: datetime) -> datetime:
    """Midnight of ``moment``'s date in ``zone``."""
    local = ZoneInfo(zone)
    return datetime.combine(moment.astimezone(local).date(), datetime.min.time(), tzinfo=local)


def _elsewhere(zone: str, moment: datetime) -> str:
    """A browser time zone whose date differs from ``zone``'s at ``moment``, and for the hour
    after it unless the factory's midnight falls in that hour: the page must not take the
    browser's day for the factory's. UTC-12 or UTC+14 (no daylight saving): one of them is a
    day apart at any moment. Should the factory's day turn during the run, the browser may
    share its new day; the checks accept either of the factory's days."""
    candidates = ("Etc/GMT+12", "Pacific/Kiritimati")

    def apart(candidate: str, minutes: int) -> bool:
        later = moment + timedelta(minutes=minutes)
        browser, factory = (later.astimezone(ZoneInfo(z)).date() for z in (candidate, zone))
        return browser != factory

    for candidate in candidates:
        if apart(candidate, 0) and apart(candidate, 60):
            return candidate
    for candidate in candidates:
        if apart(candidate, 0):
            return candidate
    raise AssertionError(f"no browser time zone is a day apart from {zone} at {moment}")


@dataclass
class Recorder:
    """A forwarding HTTP proxy in front of the API: what the page really asked for."""

    base: str
    paths: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _recording(upstream: str) -> Iterator[Recorder]:
    """A proxy to ``upstream`` on a free loopback port for the ``with`` block."""
    target = urllib.parse.urlsplit(upstream)
    port = free_port()
    recorder = Recorder(f"http://127.0.0.1:{port}")

    class Forward(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            recorder.paths.append(self.path)
            connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
            try:
                skip = {"host", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                connection.request("GET", self.path, headers=headers)
                answer = connection.getresponse()
                body = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status)
            skip = {"connection", "content-length", "transfer-encoding", "date", "server"}
            for name, value in answer.getheaders():
                if name.lower() not in skip:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", port), Forward)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def test_chromium_renders_every_factory_and_its_capacity(server: Server, tmp_path: Path) -> None:
    started = time.monotonic()
    dom = chromium(tmp_path, "--dump-dom", f"{server.base}/#key={server.keys['admin']}")
    elements = rendered(dom)
    main = next(e for e in elements if e.get("id") == "overview")
    assert main["data-state"] == "ready", dom
    assert main["data-scope"] == "detail"
    assert server.keys["admin"] not in dom  # taken from the fragment, not left in the page

    factories = set(server.region.simulations)
    rows = {e["data-factory"]: e for e in elements if "data-factory" in e}
    assert set(rows) == factories
    assert all(row["data-offline"] == "false" for row in rows.values())
    assert sum("data-availability" in e for e in elements) == len(factories)

    capacity = {e["data-factory-capacity"] for e in elements if "data-factory-capacity" in e}
    assert capacity == factories
    cells = [e for e in elements if e["tag"] == "td" and "data-available" in e]
    # Two horizons per factory, every one with a figure; fresh data: something is available.
    assert len(cells) == 2 * len(factories)
    assert all(float(c["data-available"]) >= 0 for c in cells)
    assert sum(float(c["data-available"]) for c in cells) > 0
    by_process = {(e["data-process"], e["data-horizon"]) for e in elements if "data-process" in e}
    expected = {(p, str(h)) for h in (24, 168) for p in _shared_capabilities(server, h)}
    assert expected
    assert by_process == expected

    machines = {e["data-machine"] for e in elements if "data-machine" in e}
    assert machines == {
        f"{name}/{m.id}" for name, config in server.region.configs.items() for m in config.machines
    }

    screenshot = tmp_path / "overview.png"
    chromium(
        tmp_path,
        f"--screenshot={screenshot}",
        "--window-size=1280,1600",
        f"{server.base}/#key={server.keys['admin']}",
    )
    width, height, rows_seen = png_rows(screenshot.read_bytes())
    assert (width, height) == (1280, 1600)
    assert rows_seen > 100, "the screenshot looks blank"
    print(f"chromium: two runs in {time.monotonic() - started:.1f} s")


def test_the_page_asks_for_each_factorys_day_not_the_browsers(
    server: Server, tmp_path: Path
) -> None:
    """Today's KPIs are asked from midnight in the factory's time zone, in a browser a day
    away from it: the requests the API received say so, whenever the test runs."""
    zones = _factory_zones(server)
    before = datetime.now(UTC)
    elsewhere = {_elsewhere(zone, before) for zone in zones.values()}
    assert len(elsewhere) == 1  # one browser a day away from every factory
    with _recording(server.base) as proxy:
        chromium(
            tmp_path,
            "--dump-dom",
            f"{proxy.base}/#key={server.keys['admin']}",
            env={"TZ": elsewhere.pop()},
        )
    after = datetime.now(UTC)
    asked: dict[str, set[datetime]] = {}
    for path in proxy.paths:
        url = urllib.parse.urlsplit(path)
        found = re.fullmatch(r"/v1/factories/([^/]+)/kpis", url.path)
        if found:
            start = urllib.parse.parse_qs(url.query)["start"][0]
            asked.setdefault(found[1], set()).add(datetime.fromisoformat(start))
    assert set(asked) == set(zones), proxy.paths
    for factory, starts in asked.items():
        # The factory's date may turn during the run; either day is the factory's.
        days = {_start_of_day(zones[factory], moment) for moment in (before, after)}
        assert starts <= days, (factory, starts, days)


def test_the_page_shows_each_factorys_time_and_zone(server: Server, tmp_path: Path) -> None:
    """The factory's date, day start and zone on its row; the header's clock in its zone."""
    zones = _factory_zones(server)
    before = datetime.now(UTC)
    browser = _elsewhere(next(iter(zones.values())), before)
    dom = chromium(
        tmp_path, "--dump-dom", f"{server.base}/#key={server.keys['admin']}", env={"TZ": browser}
    )
    after = datetime.now(UTC)
    elements = rendered(dom)
    assert next(e for e in elements if e.get("id") == "overview")["data-state"] == "ready", dom
    clocks = {e["data-factory-time"]: e for e in elements if "data-factory-time" in e}
    assert set(clocks) == set(zones)
    for factory, cell in clocks.items():
        zone = zones[factory]
        assert cell["data-zone"] == zone
        days = {moment.astimezone(ZoneInfo(zone)).date() for moment in (before, after)}
        assert date.fromisoformat(cell["data-day"]) in days
        assert datetime.fromisoformat(cell["data-day-start"]) in {
            _start_of_day(zone, moment) for moment in (before, after)
        }
    text = re.sub(r"<[^>]+>", " ", dom)
    for zone in set(zones.values()):
        assert zone in text
    status = re.search(r'<p id="status"[^>]*>([^<]*)</p>', dom)
    assert status is not None
    assert "Updated" in status[1]
    assert all(zone in status[1] for zone in set(zones.values())), status[1]
    assert browser not in text  # nothing is shown in the browser's zone
    # Each machine's shift in progress, as its calendar has it, in the factory's time.
    shifts = {e["data-shift-of"]: e for e in elements if "data-shift-of" in e}
    for factory in zones:
        for machine in _get(server, f"/v1/factories/{factory}/machines", "admin"):
            calendar = ShiftCalendar.model_validate(machine["calendar"])
            expected = set()
            for moment in (before, after):
                found = calendar.shift_at(moment)
                expected.add("" if found is None else found[0].name)
            cell = shifts[f"{factory}/{machine['machine']}"]
            assert cell["data-shift"] in expected, (factory, machine["machine"])


def test_a_platform_key_sees_the_aggregated_capacity_only(server: Server, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", f"{server.base}/#key={server.keys['platform']}")
    elements = rendered(dom)
    main = next(e for e in elements if e.get("id") == "overview")
    assert main["data-state"] == "ready", dom
    assert main["data-scope"] == "aggregate"  # the 403s on machine detail are not errors
    notice = next(e for e in elements if e.get("id") == "machines-note")
    assert "hidden" not in notice
    assert "this browser's time" in dom  # no factory's zone is known: the header says whose
    assert {e["data-factory"] for e in elements if "data-factory" in e} == set(
        server.region.simulations
    )
    assert {e["data-factory-capacity"] for e in elements if "data-factory-capacity" in e} == set(
        server.region.simulations
    )
    assert not any("data-machine" in e for e in elements)


def test_the_page_refreshes_itself_with_etags(server: Server, tmp_path: Path) -> None:
    dom = chromium(
        tmp_path,
        "--dump-dom",
        f"{server.base}/#key={server.keys['admin']}",
        budget_ms=40_000,  # two refreshes, 15 s apart
    )
    main = next(e for e in rendered(dom) if e.get("id") == "overview")
    assert main["data-state"] == "ready"
    assert int(main["data-refreshes"]) >= 2, re.findall(r"<p id=.notice[^<]*", dom)
    assert int(main["data-not-modified"]) > 0  # unchanged answers came back as 304
    # The cache holds the last refresh's answers only, however long the page stays open.
    assert int(main["data-cached"]) <= int(main["data-asked"])


def test_a_wrong_key_asks_for_another(server: Server, tmp_path: Path) -> None:
    dom = chromium(tmp_path, "--dump-dom", f"{server.base}/#key=kyo_wrong_key")
    main = next(e for e in rendered(dom) if e.get("id") == "overview")
    assert main["data-state"] == "no-key"
    assert "was not accepted" in dom


def test_png_rows_tells_a_blank_image_from_a_drawn_one() -> None:
    def png(rows: list[bytes]) -> bytes:
        def chunk(kind: bytes, body: bytes) -> bytes:
            crc = zlib.crc32(kind + body)
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

        header = struct.pack(">IIBBBBB", 2, len(rows), 8, 2, 0, 0, 0)
        raw = b"".join(b"\x00" + row for row in rows)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))

    assert png_rows(png([b"\xff" * 6] * 3)) == (2, 3, 1)
    assert png_rows(png([bytes([i] * 6) for i in range(3)])) == (2, 3, 3)
