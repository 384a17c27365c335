"""The ingest's InfluxDB client: line protocol writes and InfluxQL reads over the v1 HTTP API.

Only ``POST /write?db=&rp=&precision=ns`` and ``/query`` are used, the subset that InfluxDB
1.x serves natively, 2.x through its v1 compatibility API (token, DBRP mapping) and 3.x
through its v1 compatibility endpoints. Credentials: 1.x user and password as HTTP basic
auth; 2.x/3.x a token as ``Authorization: Token``. Layout and schema: docs/storage.md.

What :meth:`InfluxWriter.write` promises, for the lines it is given:

- **Every line is accounted for.** It returns only when each line is either written or
  listed in :attr:`WriteResult.rejected` with the server's reason, so the caller can
  dead-letter exactly those and acknowledge the rest. On a ``400`` partial write InfluxDB
  keeps the good lines of a batch; lines it names (``unable to parse '<line>': why``) are
  rejected at once; lines dropped without being named (``field type conflict``, ``dropped=N``)
  are found by re-sending halves of the batch, which is safe because a point written twice
  is the same point. ``413`` splits the batch in halves too; a single line still too large
  is rejected.
- **Transient failures are retried** (connection errors, 408, 429, 5xx): exponential
  backoff with jitter from ``initial_backoff_s`` to ``max_backoff_s``, or exactly the
  ``Retry-After`` the server asks for (seconds or an HTTP date), for at most
  ``max_retry_time_s``; then :class:`InfluxRetryableError` (with the ``Retry-After``, if
  any): acknowledge nothing, retry later. With ``max_retry_time_s`` 0 the writer makes one
  attempt and leaves the retries to its caller (the ingest does: it owns their timing).
- ``401``/``403`` raise :class:`InfluxAuthError` at once: alarm, acknowledge nothing, do
  not dead-letter (the data is fine, the credentials are not).
- A missing database (``404``) is created with ``CREATE DATABASE`` when
  ``create_databases`` allows, and the write retried once; otherwise, like every request
  that cannot succeed as configured (unknown retention policy, other 4xx), it raises
  :class:`InfluxPermanentError`.

Why threads: :mod:`http.client` keeps this dependency-free and handles keep-alive, chunked
and TLS correctly. Writes are few large requests, so a small dedicated pool
(``max_concurrent_requests`` threads, kept-alive connections) costs little; line joining and
gzip run in those threads, off the event loop. A cancelled call stops waiting at once, while
its request finishes in the background within ``timeout_s``. ``http_proxy`` is not honoured.
"""

import asyncio
import email.utils
import gzip
import http.client
import ipaddress
import json
import logging
import random
import re
import ssl
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "InfluxAuthError",
    "InfluxConfig",
    "InfluxError",
    "InfluxPermanentError",
    "InfluxQueryError",
    "InfluxRetryableError",
    "InfluxWriter",
    "RejectedLine",
    "WriteResult",
    "influxql_identifier",
]

log = logging.getLogger(__name__)


class InfluxConfig(BaseModel):
    """Where InfluxDB is, how to log in, and how to batch and retry writes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    url: str = Field(
        default="http://127.0.0.1:8086",
        description="Base URL of the HTTP API (http or https); a path prefix is kept.",
    )
    username: str | None = Field(default=None, description="InfluxDB 1.x user (basic auth).")
    password: SecretStr | None = Field(default=None, description="Password of the 1.x user.")
    token: SecretStr | None = Field(
        default=None, description="2.x/3.x API token, sent as 'Authorization: Token'."
    )
    database_prefix: str = Field(
        default="kyoso_",
        pattern=r"^[a-z0-9_]{0,32}$",
        description="A factory's database is <prefix><factory>.",
    )
    retention_policy: str | None = Field(
        default=None, min_length=1, description="rp of every write; None: the default one."
    )
    gzip: bool | Literal["auto"] = Field(
        default="auto",
        description="Compress write bodies and ask for compressed answers; auto: unless"
        " InfluxDB is on this machine (a loopback host), where it only costs CPU.",
    )
    gzip_level: int = Field(default=1, ge=1, le=9, description="1 is fastest.")
    timeout_s: float = Field(default=10.0, gt=0, description="Socket timeout per request.")
    max_batch_lines: int = Field(default=5000, ge=1, description="Lines per write request.")
    max_batch_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Uncompressed bytes per write request."
    )
    initial_backoff_s: float = Field(default=0.5, gt=0, description="First retry delay.")
    max_backoff_s: float = Field(default=30.0, gt=0, description="Longest retry delay.")
    max_retry_time_s: float = Field(
        default=60.0, ge=0, description="Give up retrying a request after this long."
    )
    max_concurrent_requests: int = Field(default=4, ge=1, description="HTTP threads.")
    create_databases: bool = Field(
        default=True, description="CREATE DATABASE when a write finds none (needs admin)."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http://host[:port] or https://host[:port]")
        return url

    @model_validator(mode="after")
    def _one_login(self) -> Self:
        if self.token is not None and self.username is not None:
            raise ValueError("give either token or username/password, not both")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        return self


class InfluxError(Exception):
    """Root of the errors of this module."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InfluxRetryableError(InfluxError):
    """InfluxDB was unreachable or overloaded for longer than ``max_retry_time_s``."""

    def __init__(self, message: str, status: int | None, retry_after_s: float | None) -> None:
        super().__init__(message, status)
        self.retry_after_s = retry_after_s
        """What the server asked for last (``Retry-After``), if anything."""


class InfluxPermanentError(InfluxError):
    """A request that cannot succeed as configured: retrying will not help."""


class InfluxQueryError(InfluxPermanentError):
    """An InfluxQL statement failed."""


class InfluxAuthError(InfluxError):
    """401/403: the credentials are wrong or lack a privilege. Alarm; acknowledge nothing."""


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """A line InfluxDB refused, with its reason; dead-letter it."""

    index: int
    """Position in the ``lines`` given to the call."""
    line: str
    reason: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of the lines of one call: ``written`` + ``len(rejected)`` == len(lines)."""

    written: int
    rejected: tuple[RejectedLine, ...] = ()
    requests: int = 0
    """Write requests made, retries and splits included."""


def influxql_identifier(name: str) -> str:
    """A double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    retry_after: str | None

    @property
    def text(self) -> str:
        """The error message: 1.x ``{"error": ...}``, 2.x ``{"message": ...}``, or the body."""
        raw = self.body.decode(errors="replace").strip()
        try:
            answer = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(answer, dict):
            message = answer.get("error", answer.get("message"))
            if isinstance(message, str):
                return message
        return raw


@dataclass(slots=True)
class _Tally:
    written: int = 0
    requests: int = 0
    rejected: list[RejectedLine] = field(default_factory=list)

    def reject(self, item: tuple[int, str], reason: str) -> None:
        self.rejected.append(RejectedLine(item[0], item[1], reason))


_Batch = list[tuple[int, str]]
_DROPPED = re.compile(r"\s*dropped=(\d+)\s*$")
_UNPARSABLE = "unable to parse '"


def _unparsable(text: str, lines: set[str]) -> dict[str, str]:
    """Lines that an error names as ``unable to parse '<line>': <reason>``, with the reason."""
    named: dict[str, str] = {}
    for segment in text.split("\n"):  # 1.x joins one message per unparsable line
        start = segment.find(_UNPARSABLE)
        if start < 0:
            continue
        rest = segment[start + len(_UNPARSABLE) :]
        end = rest.find("': ")
        while end >= 0:  # the line itself may contain "': "
            if rest[:end] in lines:
                named[rest[:end]] = "unable to parse: " + rest[end + 3 :]
                break
            end = rest.find("': ", end + 1)
    return named


def _loopback(host: str) -> bool:
    """Whether ``host`` (a URL's hostname) names this machine: ``localhost`` or a loopback
    address."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: another machine, as far as is known here
        return False


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _announced(on_send: Callable[[], object], send: Callable[[], _Response]) -> _Response:
    on_send()
    return send()


def _retryable(response: _Response) -> bool:
    if response.status in (408, 429):
        return True
    if response.status == 500 and "retention policy not found" in response.text:
        return False  # 1.x answers a configuration error with 500
    return response.status >= 500 and response.status not in (501, 505)


class InfluxWriter:
    """Writes line protocol to one InfluxDB and queries it; ``async with`` closes it."""

    def __init__(self, config: InfluxConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._gzip = config.gzip is True or (config.gzip == "auto" and not _loopback(self._host))
        self._headers: dict[str, str] = {"Accept-Encoding": "gzip" if self._gzip else "identity"}
        if config.token is not None:
            self._headers["Authorization"] = f"Token {config.token.get_secret_value()}"
        elif config.username is not None:
            secret = config.password.get_secret_value() if config.password else ""
            basic = b64encode(f"{config.username}:{secret}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        self._pool = ThreadPoolExecutor(config.max_concurrent_requests, "influx-http")
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop taking requests and close idle connections; running ones end on their own."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # --- writes ---------------------------------------------------------------------------

    async def write(self, database: str, lines: Sequence[str]) -> WriteResult:
        """Write ``lines`` (one point each) to ``database``; see the module's promises."""
        tally = _Tally()
        batch: _Batch = []
        for item in enumerate(lines):
            text = item[1]
            if not text or "\n" in text or "\r" in text:
                tally.reject(item, "not a single line of line protocol")
            elif not text.isascii() and not _utf8(text):
                tally.reject(item, "not valid Unicode text (lone surrogates)")
            else:
                batch.append(item)
        for chunk in self._chunks(batch):
            await self._resolve(database, chunk, tally)
        if tally.rejected:
            log.warning("%d of %d lines refused by %s", len(tally.rejected), len(lines), database)
        rejected = tuple(sorted(tally.rejected, key=lambda r: r.index))
        return WriteResult(tally.written, rejected, tally.requests)

    def _chunks(self, batch: _Batch) -> list[_Batch]:
        chunks: list[_Batch] = [[]]
        size = 0
        for item in batch:
            n = (len(item[1]) if item[1].isascii() else len(item[1].encode())) + 1
            if chunks[-1] and (
                len(chunks[-1]) >= self.config.max_batch_lines
                or size + n > self.config.max_batch_bytes
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += n
        return [chunk for chunk in chunks if chunk]

    async def _resolve(self, database: str, batch: _Batch, tally: _Tally) -> None:
        """Send one batch and account for each of its lines, splitting where needed."""
        response = await self._post_lines(database, [text for _, text in batch], tally)
        if 200 <= response.status < 300:
            tally.written += len(batch)
            return
        if response.status == 413:
            if len(batch) == 1:
                tally.reject(batch[0], f"HTTP 413, line too large: {response.text}")
                return
            log.info("413 from %s: splitting %d lines in halves", database, len(batch))
            rest = batch
        elif response.status in (400, 422):
            text = response.text
            named = _unparsable(_DROPPED.sub("", text), {line for _, line in batch})
            for item in batch:
                if item[1] in named:
                    tally.reject(item, named[item[1]])
            rest = [item for item in batch if item[1] not in named]
            dropped_match = _DROPPED.search(text)
            dropped = int(dropped_match.group(1)) if dropped_match else None
            if not rest:
                return
            if text.startswith("partial write:") and dropped == 0 and named:
                tally.written += len(rest)  # only the named lines failed
                return
            if len(rest) == 1 or (dropped is not None and dropped >= len(rest)):
                for item in rest:
                    tally.reject(item, text)
                return
            # Some lines were dropped without being named: find them by halves.
        else:
            raise InfluxPermanentError(
                f"write to {database!r}: HTTP {response.status}: {response.text}", response.status
            )
        half = len(rest) // 2
        await self._resolve(database, rest[:half], tally)
        await self._resolve(database, rest[half:], tally)

    async def _post_lines(self, database: str, lines: list[str], tally: _Tally) -> _Response:
        params = {"db": database, "precision": "ns"}
        if self.config.retention_policy is not None:
            params["rp"] = self.config.retention_policy
        send = partial(self._send_lines, f"{self._base}/write?{urlencode(params)}", lines)
        response = await self._call(f"write to {database!r}", send, tally)
        if response.status == 404 and "database not found" in response.text:
            if not self.config.create_databases:
                raise InfluxPermanentError(f"database {database!r} does not exist", 404)
            try:
                await self.ensure_database(database)
            except InfluxAuthError as exc:
                raise InfluxPermanentError(
                    f"database {database!r} does not exist and may not be created: {exc}", 404
                ) from exc
            response = await self._call(f"write to {database!r}", send, tally)
        return response

    def _send_lines(self, path: str, lines: list[str]) -> _Response:
        body = "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._gzip:
            body = gzip.compress(body, compresslevel=self.config.gzip_level)
            headers["Content-Encoding"] = "gzip"
        return self._exchange("POST", path, body, headers)

    # --- queries --------------------------------------------------------------------------

    async def query(
        self,
        database: str | None,
        influxql: str,
        params: Mapping[str, Any] | None = None,
        *,
        epoch: Literal["ns", "u", "ms", "s"] | None = "ns",
    ) -> list[dict[str, Any]]:
        """Run InfluxQL; one dict per row (columns plus the series' GROUP BY tags).

        ``params`` binds ``$name`` placeholders (never format values into the text).
        Times are integers in ``epoch`` units, or RFC 3339 strings with ``epoch=None``.
        Raises :class:`InfluxQueryError` if any statement fails.
        """
        each = await self.query_each(database, influxql, params, epoch=epoch)
        return [row for rows in each for row in rows]

    async def query_each(
        self,
        database: str | None,
        influxql: str,
        params: Mapping[str, Any] | None = None,
        *,
        epoch: Literal["ns", "u", "ms", "s"] | None = "ns",
        on_send: Callable[[], object] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """:meth:`query` of several statements (``;`` between them) in one request: the
        rows of each, in their order. A missing database fails the whole request with
        ``not executed`` (InfluxDB 1.x), not ``database not found``. ``on_send`` is called
        (in a pool thread) as the request is sent, after any wait for a free thread; again
        at each retry."""
        form: dict[str, str] = {"q": influxql}
        if database is not None:
            form["db"] = database
        if epoch is not None:
            form["epoch"] = epoch
        if params:
            form["params"] = json.dumps(params)
        words = influxql.upper().split()
        read_only = bool(words) and words[0] in ("SELECT", "SHOW") and "INTO" not in words
        if read_only:  # GET is what 1.x asks for reads, and all v1-compatible APIs serve it
            send = partial(self._exchange, "GET", f"{self._base}/query?{urlencode(form)}", None, {})
        else:
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            body = urlencode(form).encode()
            send = partial(self._exchange, "POST", f"{self._base}/query", body, headers)
        if on_send is not None:
            send = partial(_announced, on_send, send)
        response = await self._call("query", send, _Tally())
        if response.status != 200:
            raise InfluxQueryError(
                f"query {influxql[:200]!r}: HTTP {response.status}: {response.text}",
                response.status,
            )
        answer = json.loads(response.body)
        errors = [r["error"] for r in answer.get("results", []) if "error" in r]
        if "error" in answer:
            errors.append(answer["error"])
        if errors:
            raise InfluxQueryError(f"query {influxql[:200]!r} failed: {'; '.join(errors)}", 200)
        each: list[list[dict[str, Any]]] = []
        for result in answer.get("results", []):
            rows: list[dict[str, Any]] = []
            for series in result.get("series", []):
                tags = series.get("tags") or {}
                for values in series.get("values", []):
                    rows.append({**tags, **dict(zip(series["columns"], values, strict=True))})
            each.append(rows)
        return each

    async def ensure_database(self, name: str) -> None:
        """``CREATE DATABASE`` (a no-op if it exists); needs admin rights on 1.x."""
        await self.query(None, f"CREATE DATABASE {influxql_identifier(name)}")

    # --- HTTP -----------------------------------------------------------------------------

    async def _call(self, what: str, send: Callable[[], _Response], tally: _Tally) -> _Response:
        """Run ``send`` in the pool until the answer is not transient, or the time is up."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.max_retry_time_s
        backoff = self.config.initial_backoff_s
        while True:
            if self._closed:
                raise InfluxPermanentError(f"{what}: the writer is closed")
            tally.requests += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                response = await loop.run_in_executor(self._pool, send)
            except ssl.SSLCertVerificationError as exc:
                raise InfluxPermanentError(f"{what}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status
                if status in (401, 403):
                    raise InfluxAuthError(f"{what}: HTTP {status}: {response.text}", status)
                if not _retryable(response):
                    return response
                problem = f"HTTP {status}: {response.text}"
                retry_after = _retry_after_s(response.retry_after)
            wait = retry_after if retry_after is not None else backoff * random.uniform(0.5, 1)
            if time.monotonic() + wait > deadline:
                raise InfluxRetryableError(f"{what}: giving up: {problem}", status, retry_after)
            log.warning("%s failed (%s); retrying in %.2f s", what, problem, wait)
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, self.config.max_backoff_s)

    def _connect(self) -> http.client.HTTPConnection:
        timeout = self.config.timeout_s
        if self._https:
            context = ssl.create_default_context()
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> _Response:
        """One request, in a pool thread, on a kept-alive connection when one is idle."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        reused = connection is not None
        while True:
            if connection is None:
                connection = self._connect()
            try:
                connection.request(method, path, body, {**self._headers, **headers})
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                if reused:  # the server may have closed an idle connection: one fresh try
                    connection, reused = None, False
                    continue
                raise
            break
        if response.getheader("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        if response.will_close or self._closed:
            connection.close()
        else:
            with self._lock:
                self._idle.append(connection)
        return _Response(response.status, data, response.getheader("Retry-After"))
