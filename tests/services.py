"""Real Mosquitto and InfluxDB for the tests, on free loopback ports in temporary directories.

Each service writes its own configuration into a working directory, starts the Debian binary
with it, and waits until the service really answers (an MQTT 5 CONNACK from Mosquitto,
``204`` from InfluxDB's ``/ping``). ``stop()`` then ``start()`` brings the service back on the
same ports with the same data directory, so tests can take a service away for a while.

Only processes started here are ever signalled, through their own ``Popen`` handles.
A missing binary is an error naming the Debian package to install; these tests never skip.

The HTTP helpers use :mod:`http.client` from the standard library: they talk to 127.0.0.1
directly, so ``http_proxy`` and friends in the environment cannot reroute them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "InfluxDB",
    "InfluxDBError",
    "MissingBinaryError",
    "Mosquitto",
    "ServiceError",
    "ServiceStartError",
    "find_binary",
    "free_port",
    "mqtt_connack",
]

LOOPBACK = "127.0.0.1"

# Debian puts daemons in /usr/sbin, which is not on every user's PATH.
_SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin")

TomlValue = str | int | float | bool


class ServiceError(RuntimeError):
    """A test service could not be found, started or used."""


class MissingBinaryError(ServiceError):
    """The daemon's executable is not installed."""


class ServiceStartError(ServiceError):
    """The daemon exited or never became ready; the message ends with its log."""


class InfluxDBError(ServiceError):
    """InfluxDB answered an HTTP request with an error."""

    def __init__(self, message: str, status: int, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def find_binary(name: str, package: str) -> str:
    """Return the path of ``name`` from PATH or the system directories, else raise."""
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in _SYSTEM_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise MissingBinaryError(
        f"'{name}' was not found on PATH or in {', '.join(_SYSTEM_DIRS)}. "
        f"The integration tests need a real {name}: install the Debian package with "
        f"`sudo apt-get install -y {package}` (or run `bash .ci/run`, which installs it)."
    )


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
# Independent of the global generator, which tests and simulators seed.
_random = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the daemons use, so a port in TIME_WAIT counts as free, as it will be.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that is free now and not handed out before.

    The port is checked by binding to it. It is preferably chosen *below* the kernel's
    ephemeral range: services here are stopped and restarted on the same port, and while one
    is down a client's outgoing connection could otherwise be given that very port as its
    local port (even connect itself to it). Falls back to binding port 0.
    """
    ephemeral_low, _ = _ephemeral_range()
    with _handed_out_lock:
        if ephemeral_low > 20000:
            for _ in range(200):
                port = _random.randrange(15000, ephemeral_low)
                if port not in _handed_out and _bindable(host, port):
                    _handed_out.add(port)
                    return port
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise ServiceError(f"no free TCP port found on {host}")


def _port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class _Service:
    """A daemon started from a config file in a working directory, stoppable and restartable."""

    name = "service"
    startup_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, workdir: Path | None, host: str) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix=f"kyoso-{self.name}-")) if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        # Everything the daemon prints (and, for Mosquitto, its log) goes to this file;
        # it is appended to across restarts so a failing test can show the whole story.
        self.log_path = self.workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # --- subclass hooks -------------------------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """Called once the service is ready, on every start."""

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def start(self) -> None:
        """Start the daemon and wait until it answers; raise with its log tail if it cannot."""
        if self.running:
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self._reap()
        command = self._command()
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"\n===== kyoso tests: starting {' '.join(command)}\n".encode())
        self._log_file.flush()
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._environment(),
            )
        except OSError:
            self._reap()
            raise
        try:
            self._wait_until_ready(self._process, command)
            self._after_ready()
        except BaseException:
            self.stop()  # never leave a half-started daemon behind
            raise

    def _wait_until_ready(self, process: subprocess.Popen[bytes], command: list[str]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = process.poll()
            if code is not None:
                raise ServiceStartError(
                    f"{self.name} exited with code {code} during start-up "
                    f"({' '.join(command)}); last lines of {self.log_path}:\n{self.log_tail()}"
                )
            # Alive after the answer too, so it is unlikely to have come from something else
            # that took the port while our daemon was failing to bind it.
            if self._ready() and process.poll() is None:
                return
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"{self.name} did not become ready within {self.startup_timeout:.0f} s "
                    f"({' '.join(command)}); last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float | None = None) -> None:
        """Terminate the daemon (SIGTERM, then SIGKILL after ``timeout``) and wait for it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the daemon, as a crash would: no clean shutdown, no final save."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._reap()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the daemon and remove the working directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(log unreadable: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _reap(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._process = None
        if self._process is None and self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def http_get(url: str) -> tuple[int, str]:
    """GET a loopback URL: (status, body), error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def mqtt_connack(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
) -> ReasonCode | None:
    """Connect with MQTT 5 (paho-mqtt 2.x) and return the CONNACK reason code, or None.

    None means no CONNACK arrived (nothing listening, or the connection dropped). The client
    disconnects again at once.
    """
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"kyoso-probe-{uuid.uuid4().hex[:12]}",
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    connack: list[ReasonCode] = []

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        connack.append(reason_code)

    client.on_connect = on_connect
    if username is not None:
        client.username_pw_set(username, password)
    try:
        client.connect(host, port, keepalive=10)
    except OSError:
        return None
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while not connack and time.monotonic() < deadline:
            time.sleep(0.01)
        return connack[0] if connack else None
    finally:
        # Sends DISCONNECT if connected; either way the network thread then finishes.
        client.disconnect()
        client.loop_stop()


class Mosquitto(_Service):
    """A Mosquitto 2 broker on a free loopback port.

    ``extra_config`` lines are appended to mosquitto.conf, e.g. ``password_file /path`` and
    ``acl_file /path`` for access-control tests (then pass ``allow_anonymous=False`` and,
    to check readiness with a real login, ``probe_username``/``probe_password``).
    """

    name = "mosquitto"
    stop_timeout = 10.0

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        allow_anonymous: bool = True,
        persistence: bool = False,
        max_queued_messages: int = 0,
        extra_config: Sequence[str] = (),
        probe_username: str | None = None,
        probe_password: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.binary = find_binary("mosquitto", "mosquitto")
        super().__init__(workdir, host)
        self.port = free_port(host) if port is None else port
        self.allow_anonymous = allow_anonymous
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.extra_config = tuple(extra_config)
        self.probe_username = probe_username
        self.probe_password = probe_password
        self.startup_timeout = startup_timeout
        self.config_path = self.workdir / "mosquitto.conf"
        self.persistence_dir = self.workdir / "persistence"
        self.config_path.write_text(self.config_text())

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def config_text(self) -> str:
        lines = [
            "# Written by tests/services.py for one test session.",
            # Defaults below apply to the single listener we define.
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
        ]
        if os.geteuid() == 0:
            # Started as root, Mosquitto switches to the 'mosquitto' user after loading the
            # config, and can then no longer open the log or persistence files in our
            # root-owned temporary directory (2.0.11 just logs an error and keeps running).
            # 'user root' keeps it as root; it prints a warning about that, which is harmless.
            lines.append("user root")
        if self.persistence:
            # Sessions and queued messages survive stop()/start() (saved on clean shutdown
            # and every autosave_interval seconds; kill() loses what was not saved yet).
            lines += [
                "persistence true",
                f"persistence_location {self.persistence_dir}/",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        lines += [
            # Unlimited (0) by default: a persistent session's QoS 1 messages queued while
            # its client is offline are never silently dropped by the broker, so tests see
            # exactly what the clients did. Pass a limit to test overflow behaviour.
            f"max_queued_messages {self.max_queued_messages}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.extra_config:
            lines.append("# extra_config")
            lines += self.extra_config
        return "\n".join(lines) + "\n"

    def _command(self) -> list[str]:
        if self.persistence:
            self.persistence_dir.mkdir(exist_ok=True)
        return [self.binary, "-c", str(self.config_path)]

    def _ready(self) -> bool:
        if not _port_accepts(self.host, self.port):
            return False
        reason = mqtt_connack(
            self.host, self.port, username=self.probe_username, password=self.probe_password
        )
        if reason is None:
            return False
        if self.allow_anonymous or self.probe_username is not None:
            if reason.is_failure:
                raise ServiceStartError(
                    f"mosquitto refused the readiness probe's MQTT 5 connection: {reason}; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            return True
        # Anonymous clients are refused and we have no login: any CONNACK shows the broker
        # is up and speaking MQTT 5.
        return True


class InfluxDB(_Service):
    """An InfluxDB 1.x (Debian's influxd 1.6) on free loopback ports.

    ``url`` is the HTTP API. With ``auth_enabled=True`` the first start creates the admin
    user (``admin_username``/``admin_password``), and the helpers log in as it unless given
    other credentials. ``overrides`` maps config sections (``""`` for top-level keys) to
    settings that replace or extend the generated config, e.g. ``{"http": {"max-body-size":
    1000}}``.
    """

    name = "influxd"
    # influxd waits for running queries and writes on SIGTERM; then we SIGKILL.
    stop_timeout = 30.0

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        rpc_port: int | None = None,
        auth_enabled: bool = False,
        admin_username: str = "admin",
        admin_password: str = "kyoso-test-admin",  # noqa: S107 - a throwaway test instance
        overrides: Mapping[str, Mapping[str, TomlValue]] | None = None,
        startup_timeout: float = 60.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.binary = find_binary("influxd", "influxdb")
        super().__init__(workdir, host)
        self.port = free_port(host) if port is None else port
        self.rpc_port = free_port(host) if rpc_port is None else rpc_port
        self.auth_enabled = auth_enabled
        self.admin_username = admin_username
        self.admin_password = admin_password
        self.overrides = {section: dict(values) for section, values in (overrides or {}).items()}
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.config_path = self.workdir / "influxdb.conf"
        self._admin_created = False
        self.config_path.write_text(self.config_text())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def config_sections(self) -> dict[str, dict[str, TomlValue]]:
        sections: dict[str, dict[str, TomlValue]] = {
            "": {
                # Debian's 1.6.7 build renamed upstream's 'reporting-disabled' to
                # 'reporting-enabled' (default false); influxd ignores unknown keys, so we set
                # both and never phone home, whichever build runs.
                "reporting-enabled": False,
                "reporting-disabled": True,
                # The RPC (backup/restore) service: default ':8088' on every interface.
                "bind-address": f"{self.host}:{self.rpc_port}",
            },
            "meta": {"dir": str(self.workdir / "meta"), "logging-enabled": True},
            "data": {
                "dir": str(self.workdir / "data"),
                "wal-dir": str(self.workdir / "wal"),
                "query-log-enabled": True,
            },
            # No _internal database written every 10 s: less noise, nothing to clean up.
            "monitor": {"store-enabled": False},
            "http": {
                "enabled": True,
                "bind-address": f"{self.host}:{self.port}",
                "auth-enabled": self.auth_enabled,
                "log-enabled": True,
                "pprof-enabled": False,
                "unix-socket-enabled": False,
                "https-enabled": False,
            },
            "logging": {"format": "logfmt", "level": "info", "suppress-logo": True},
            # Continuous queries run only if a test creates them.
            "continuous_queries": {"enabled": True, "log-enabled": True},
            "subscriber": {"enabled": False},
        }
        for section, values in self.overrides.items():
            sections.setdefault(section, {}).update(values)
        return sections

    def config_text(self) -> str:
        out = ["# Written by tests/services.py for one test session."]
        for section, values in self.config_sections().items():
            if section:
                out.append(f"\n[{section}]")
            out += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        # graphite, collectd, opentsdb and udp listeners are off unless configured, which we
        # never do; ifql (1.6 only) is off by default.
        return "\n".join(out) + "\n"

    def _command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_path)]

    def _environment(self) -> dict[str, str]:
        # INFLUXDB_* variables override the config file in influxd; keep the caller's out.
        return {key: value for key, value in os.environ.items() if not key.startswith("INFLUXDB_")}

    def _ready(self) -> bool:
        try:
            status, _ = self._request("GET", "/ping", timeout=1.0)
        except (OSError, http.client.HTTPException):
            return False
        return status == 204

    def _after_ready(self) -> None:
        if self.auth_enabled and not self._admin_created:
            # InfluxDB 1.x lets an unauthenticated request create the first user, which must
            # be an admin; the user lives in the meta dir and survives restarts.
            statement = (
                f"CREATE USER {_identifier(self.admin_username)} WITH PASSWORD "
                f"{_string_literal(self.admin_password)} WITH ALL PRIVILEGES"
            )
            self.query(statement, username="", password="")
            self._admin_created = True

    # --- HTTP helpers ---------------------------------------------------------------------

    def ping(self) -> bool:
        """True when ``/ping`` answers 204 now."""
        return self._ready()

    def query(
        self,
        q: str,
        db: str | None = None,
        *,
        epoch: str | None = None,
        username: str | None = None,
        password: str | None = None,
        check: bool = True,
    ) -> dict[str, Any]:
        """Run InfluxQL statements (POST /query) and return the decoded JSON answer.

        Raises :class:`InfluxDBError` on an HTTP error and, when ``check``, if any statement
        failed. ``epoch`` (``"ns"``, ``"ms"``, ``"s"``...) returns times as integers instead of
        RFC 3339 strings. Credentials default to the admin user when auth is enabled; pass
        ``username=""`` to send none.
        """
        params = {"q": q}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        status, body = self._request(
            "POST",
            "/query",
            body=urlencode(params).encode(),
            content_type="application/x-www-form-urlencoded",
            username=username,
            password=password,
        )
        text = body.decode(errors="replace")
        if status != 200:
            raise InfluxDBError(f"InfluxDB query {q!r} failed: HTTP {status}: {text}", status, text)
        answer: dict[str, Any] = json.loads(text)
        if check:
            errors = [r["error"] for r in answer.get("results", []) if "error" in r]
            if "error" in answer:
                errors.append(answer["error"])
            if errors:
                raise InfluxDBError(f"InfluxDB query {q!r} failed: {errors}", status, text)
        return answer

    def write(
        self,
        db: str,
        lines: str | Iterable[str],
        *,
        precision: str = "ns",
        rp: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        """Write line protocol (POST /write); raise :class:`InfluxDBError` unless 204."""
        payload = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        status, body = self._request(
            "POST",
            f"/write?{urlencode(params)}",
            body=payload.encode(),
            content_type="text/plain; charset=utf-8",
            username=username,
            password=password,
        )
        if status != 204:
            text = body.decode(errors="replace")
            raise InfluxDBError(
                f"InfluxDB write to {db!r} failed: HTTP {status}: {text}", status, text
            )

    def create_database(self, name: str) -> None:
        self.query(f"CREATE DATABASE {_identifier(name)}")

    def drop_database(self, name: str) -> None:
        self.query(f"DROP DATABASE {_identifier(name)}")

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        headers: dict[str, str] = {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if username is None and self.auth_enabled:
            username, password = self.admin_username, self.admin_password
        if username:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        connection = http.client.HTTPConnection(
            self.host, self.port, timeout=self.request_timeout if timeout is None else timeout
        )
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid TOML basic string for everything we write.
    return json.dumps(value)


def _identifier(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string_literal(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
