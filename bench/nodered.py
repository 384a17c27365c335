"""The plain Node-RED flow the ingest is compared with: installed from npm, run, measured.

``bench/nodered/`` holds what is committed: ``package.json`` and ``package-lock.json``
(Node-RED and node-red-contrib-influxdb, exact versions that run on Debian 12's Node.js
18), ``flow.json`` (mqtt in, MQTT 5, QoS 1, persistent session -> function -> join ->
influx batch; its comment node says what it does not do) and ``settings.js`` (no editor,
no HTTP port, no credentials key). :func:`install` copies the two package files into
``bench/.cache/nodered/`` (outside git) and runs ``npm ci`` there, once: a later run whose
package files are unchanged reuses it.

:func:`measure` runs the flow the way ``bench/ingest.py`` runs the Kyoso ingest: Node-RED
starts once to make its persistent session and stops; the workload is published while it
is stopped (the broker queues it for the session); Node-RED starts again and finds it
waiting. It is timed from its first received batch to its last written one, both stamped
by the flow itself (``node.warn`` lines in its log: ``kyoso-bench first|written|failed``),
and every point is counted in InfluxDB afterwards, polling until all are there or nothing
has moved for a while.

    .venv/bin/python bench/nodered.py        # install (or reuse) and print the versions
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from influx_raw import request
from procstat import cpu_seconds, rss_mib

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "nodered"
CACHE = HERE / ".cache" / "nodered"
FLOW = PACKAGE / "flow.json"
SETTINGS = PACKAGE / "settings.js"
_PACKAGE_FILES = ("package.json", "package-lock.json")
_STAMP = ".kyoso-bench-installed"
_EVENT = re.compile(r"kyoso-bench (first|written|failed) (\d+) (\d+)")
_CONNECTED = "Connected to broker"
DATABASE = "nodered"
"""The one database the flow writes every factory into."""


@dataclass(frozen=True)
class Installed:
    """Node-RED ready to run from ``folder``."""

    folder: Path
    install_s: float | None
    """How long ``npm ci`` took; None when a previous install was reused."""

    @property
    def red_js(self) -> Path:
        return self.folder / "node_modules" / "node-red" / "red.js"

    def versions(self) -> dict[str, str]:
        """Node.js, Node-RED and node-red-contrib-influxdb as installed."""
        found = {"node": _node_version()}
        for name in ("node-red", "node-red-contrib-influxdb"):
            manifest = self.folder / "node_modules" / name / "package.json"
            found[name] = json.loads(manifest.read_text())["version"]
        return found


def node_binary() -> str:
    """Debian's ``node`` (package nodejs)."""
    found = shutil.which("node") or shutil.which("nodejs")
    if found is None:
        raise RuntimeError("node is not installed (Debian package nodejs)")
    return found


def _node_version() -> str:
    made = subprocess.run([node_binary(), "--version"], capture_output=True, text=True, check=True)
    return made.stdout.strip().lstrip("v")


def install(cache: Path = CACHE) -> Installed:
    """``npm ci`` of ``bench/nodered/`` into ``cache``, unless done already for the same
    package files."""
    digest = hashlib.sha256()
    for name in _PACKAGE_FILES:
        digest.update((PACKAGE / name).read_bytes())
    stamp = cache / "node_modules" / _STAMP
    if stamp.is_file() and stamp.read_text() == digest.hexdigest():
        return Installed(cache, None)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (Debian package npm)")
    cache.mkdir(parents=True, exist_ok=True)
    for name in _PACKAGE_FILES:
        shutil.copyfile(PACKAGE / name, cache / name)
    started = time.monotonic()
    made = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
        cwd=cache,
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        raise RuntimeError(f"npm ci failed in {cache}:\n{made.stdout[-2000:]}{made.stderr[-3000:]}")
    elapsed = time.monotonic() - started
    stamp.write_text(digest.hexdigest())
    return Installed(cache, elapsed)


@dataclass
class _Log:
    """Node-RED's output, read as it grows."""

    path: Path
    offset: int = 0
    first_ms: int | None = None
    written: int = 0
    written_ms: int | None = None
    failed: int = 0
    connected: bool = False

    def read(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1  # only whole lines
        self.offset += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            if _CONNECTED in line:
                self.connected = True
            if not (event := _EVENT.search(line)):
                continue
            kind, count, stamp_ms = event[1], int(event[2]), int(event[3])
            if kind == "first" and self.first_ms is None:
                self.first_ms = stamp_ms
            elif kind == "written":
                self.written, self.written_ms = count, stamp_ms
            elif kind == "failed":
                self.failed = count

    def tail(self) -> str:
        return self.path.read_text(errors="replace")[-3000:]


def _start(
    installed: Installed, workdir: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    userdir = workdir / "nodered"
    userdir.mkdir(exist_ok=True)
    command = [
        node_binary(),
        str(installed.red_js),
        "--settings",
        str(SETTINGS),
        "--userDir",
        str(userdir),
        str(FLOW),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=out, cwd=userdir
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def count_points(influx_port: int, database: str) -> int:
    query = urlencode({"db": database, "q": "SELECT count(seq) FROM samples"})
    _, body = request(influx_port, "GET", f"/query?{query}")
    series = json.loads(body)["results"][0].get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def _session(installed: Installed, workdir: Path, env: dict[str, str], log: _Log) -> None:
    """Start Node-RED until it is connected, then stop it: its persistent session (with the
    subscription: no unsubscribe on stop) stays on the broker."""
    process = _start(installed, workdir, env, log.path)
    try:
        deadline = time.monotonic() + 60
        while not log.connected:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Node-RED did not connect to the broker:\n{log.tail()}")
            time.sleep(0.05)
            log.read()
        time.sleep(1.0)  # its SUBSCRIBE follows the CONNACK
    finally:
        _stop(process)


def _until_stored(
    process: subprocess.Popen[bytes],
    log: _Log,
    count: Callable[[], int],
    total: int,
    *,
    stall_s: float,
    timeout_s: float,
) -> tuple[float, int]:
    """Wait for the first batch, then until ``total`` points are in InfluxDB or nothing has
    moved for ``stall_s``; Node-RED's CPU seconds in between, and the time (ms since the
    epoch) the bench saw the last points stored, for when the flow's own count of written
    points never says so."""
    deadline = time.monotonic() + timeout_s
    while log.first_ms is None:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Node-RED received nothing:\n{log.tail()}")
        time.sleep(0.02)
        log.read()
    cpu0 = cpu_seconds(process.pid)
    stored, checked, moved = 0, 0.0, time.monotonic()
    progress = (0, 0, 0)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        log.read()
        now = time.monotonic()
        if log.written + log.failed >= total or now - checked >= 1.0:
            stored, checked = count(), now
            if stored >= total:
                break
        if (log.written, log.failed, stored) != progress:
            progress, moved = (log.written, log.failed, stored), now
        elif now - moved > stall_s:
            break  # nothing has moved for a while: the shortfall is reported
    seen_ms = time.time_ns() // 1_000_000
    cpu = cpu_seconds(process.pid) - cpu0
    # The flow logs a batch once InfluxDB took it: the line may come after the count.
    until = time.monotonic() + 5.0
    while log.written + log.failed < stored and time.monotonic() < until:
        time.sleep(0.05)
        log.read()
    return cpu, seen_ms


def measure(
    installed: Installed,
    *,
    workdir: Path,
    broker_port: int,
    influx_port: int,
    total: int,
    queue: Callable[[], object],
    stall_s: float = 30.0,
    timeout_s: float = 600.0,
) -> dict[str, float]:
    """Node-RED over ``total`` samples that ``queue()`` publishes while it is stopped, into
    the database :data:`DATABASE`: seconds from its first received batch to its last
    written one, CPU seconds, RSS, points written and failed (its own counts), stored and
    missing (InfluxDB's)."""
    request(
        influx_port,
        "POST",
        "/query",
        urlencode({"q": f'CREATE DATABASE "{DATABASE}"'}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    env = {
        "KYOSO_BENCH_BROKER_PORT": str(broker_port),
        "KYOSO_BENCH_INFLUX_PORT": str(influx_port),
        "KYOSO_BENCH_DATABASE": DATABASE,
        "KYOSO_BENCH_CLIENT_ID": f"bench-nodered-{os.getpid()}",
    }
    log = _Log(workdir / "nodered.log")
    log.path.touch()
    _session(installed, workdir, env, log)
    queue()
    process = _start(installed, workdir, env, log.path)
    try:
        cpu, seen_ms = _until_stored(
            process,
            log,
            lambda: count_points(influx_port, DATABASE),
            total,
            stall_s=stall_s,
            timeout_s=timeout_s,
        )
        rss = rss_mib(process.pid)
    finally:
        _stop(process)
    stored = count_points(influx_port, DATABASE)
    assert log.first_ms is not None
    last_ms = log.written_ms if log.written >= stored and log.written_ms else seen_ms
    return {
        "elapsed": max(last_ms - log.first_ms, 1) / 1000,
        "cpu": cpu,
        "rss": rss,
        "written": log.written,
        "failed": log.failed,
        "stored": stored,
        "missing": total - stored,
    }


def main() -> int:
    installed = install()
    how = (
        f"npm ci in {installed.install_s:.1f} s"
        if installed.install_s is not None
        else "already installed"
    )
    print(f"Node-RED in {installed.folder} ({how}): {installed.versions()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
