"""Reading OPC UA servers: one :class:`OpcuaSource` per server (a machine's control).

A session runs in the background, apart from the polls: it opens the secure channel and
the session (Basic256Sha256 with certificates and a user's password if configured),
resolves every field's browse path (once per session: node ids may change when a server
restarts), creates one subscription with a monitored item per node, and keeps the latest
DataValue of each. A poll reads that cache and never waits for the network. A field whose
node the server refuses to monitor is read by each poll instead (bounded by
``timeout_s``), as every field is in ``mode: poll``; the fallback is logged.

What it promises, as the other sources do: a value that cannot be read is *missing* with a
reason (no session and why: unreachable, timeout, login or certificate refused, circuit
open; a Bad status code, by name; no value since the session started; a node not found; a
value not mapped), never a value from a session that is gone: when the session is lost
(server restart, network cut: asyncua's watchdog probes the server every ``timeout_s``),
the cache is emptied at once. The session then reconnects by itself with a backoff from
``reconnect_min_s`` doubling to ``reconnect_max_s``, creating a new session, resolving the
browse paths again and re-creating the subscription; after ``failures_to_open`` failed
attempts in a row the circuit breaker waits ``open_s`` before the next one.

Alarms come as events (kyoso/gateway/opcua_alarms.py): the same subscription monitors the
alarm events of one node, and ``ConditionRefresh`` brings those already active.
"""

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError

from .breaker import CircuitBreaker, CircuitState
from .modbus_decode import Value
from .opcua_alarms import ActiveAlarms, is_refresh_end, subscribe_alarms
from .opcua_config import (
    NodeRef,
    OpcuaConfig,
    OpcuaFieldConfig,
    convert,
    stacklight_state,
    umati_state,
)
from .opcua_errors import (
    NODE_CODES,
    OpcuaMissingReason,
    SetupError,
    classify,
    status_name,
    status_reason,
)
from .source import Missing, Polled

log = logging.getLogger(__name__)

Input = tuple[str, str]
"""One node a field reads: (field name, role); a plain node's role is ``value``."""


@dataclass(slots=True)
class OpcuaStats:
    """Counters of one source, for metrics and tests; they only grow."""

    polls: int = 0
    sessions: int = 0
    """Sessions opened: the first, and one after each loss."""
    losses: int = 0
    failed_connects: int = 0
    notifications: int = 0
    events: int = 0
    """Alarm events received."""
    reads: int = 0
    """Reads of polled nodes (mode poll, or the fallback)."""
    fallbacks: int = 0
    """Sessions in which a node the configuration subscribes to had to be polled."""
    errors: Counter[str] = field(default_factory=Counter)
    circuit_opens: int = 0


class _Handler:
    """Subscription callbacks of one session; a stale session's are ignored."""

    def __init__(self, source: "OpcuaSource", session: int) -> None:
        self.source = source
        self.session = session

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        self.source._notified(self.session, node, data.monitored_item.Value)

    def event_notification(self, event: Any) -> None:
        self.source._alarmed(self.session, event)

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        if not status.Status.is_good():
            self.source._lose(self.session, Missing(
                OpcuaMissingReason.SESSION_LOST, f"subscription {status.Status.name}"
            ))  # fmt: skip


class OpcuaSource:
    """One OPC UA server as a :class:`~kyoso.gateway.source.Source`; see the module
    docstring for what it promises. The session task starts with the first poll."""

    def __init__(self, config: OpcuaConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.name = config.endpoint
        self.stats = OpcuaStats()
        self.breaker = CircuitBreaker.configured(config, clock)
        self.inputs: dict[Input, NodeRef] = {
            (name, role): ref
            for name, spec in config.fields.items()
            for role, ref in spec.inputs().items()
        }
        self.polled: set[Input] = set()
        """Inputs each poll reads (mode poll, or refused by the subscription)."""
        self.connected = asyncio.Event()
        """Set while a session is open (tests and metrics wait on it)."""
        self._cache: dict[Input, ua.DataValue | Missing] = {}
        self._down = Missing(OpcuaMissingReason.NOT_CONNECTED, "connecting")
        self._client: Client | None = None
        self._nodes: dict[Input, Node] = {}
        self._watching: dict[ua.NodeId, list[Input]] = {}
        """A monitored node's inputs (fields may share a node)."""
        self._session = 0
        self._alarms = ActiveAlarms()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._polling = asyncio.Lock()

    @property
    def watched(self) -> frozenset[ua.NodeId]:
        """The nodes of this session's monitored items (each change is one notification)."""
        return frozenset(self._watching) - {self._nodes[i].nodeid for i in self.polled}

    # -- polls ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the session task (the first poll does, if nobody did)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"opcua {self.name}")

    async def poll(self) -> Polled:
        """Every field from the cache (polled nodes read now); never raises for a server
        fault, never waits for the network in ``mode: subscribe``."""
        self.start()
        async with self._polling:
            self.stats.polls += 1
            if self._client is None:
                down = self._down
                if self.breaker.state is CircuitState.OPEN and self.breaker.remaining_s() > 0:
                    left = f"{self.breaker.remaining_s():.1f} s left; last: {down}"
                    down = Missing(OpcuaMissingReason.CIRCUIT_OPEN, left)
                self.stats.errors[down.key] += 1
                return Polled({}, dict.fromkeys(self.config.fields, down))
            if self.polled:
                await self._read_polled(self._client)
            return self._read()

    async def _read_polled(self, client: Client) -> None:
        inputs = sorted(self.polled & self._nodes.keys())
        if not inputs:
            return
        if not self.breaker.allow():
            left = Missing(
                OpcuaMissingReason.CIRCUIT_OPEN, f"{self.breaker.remaining_s():.1f} s left"
            )
            self._cache.update(dict.fromkeys(inputs, left))
            return
        self.stats.reads += 1
        try:
            async with asyncio.timeout(self.config.timeout_s):
                values = await client.read_attributes([self._nodes[i] for i in inputs])
        except Exception as exc:  # any failure of a read is its reason
            missing = classify(exc)
            self._cache.update(dict.fromkeys(inputs, missing))
            if self.breaker.failure():
                self.stats.circuit_opens += 1
            return
        self.breaker.success()
        self._cache.update(zip(inputs, values, strict=True))

    def _read(self) -> Polled:
        values: dict[str, Value] = {}
        missing: dict[str, Missing] = {}
        for name, spec in self.config.fields.items():
            result = self._field(name, spec)
            if isinstance(result, Missing):
                missing[name] = result
                self.stats.errors[result.key] += 1
            else:
                values[name] = result
        return Polled(values, missing)

    def _field(self, name: str, spec: OpcuaFieldConfig) -> Value | Missing:
        if spec.preset in ("faults", "fault_code"):
            return self._alarm_field(name, spec.preset == "faults")
        raw: dict[str, object] = {}
        for role in spec.inputs():
            got = self._cache.get((name, role), Missing(OpcuaMissingReason.NO_VALUE))
            if isinstance(got, Missing):
                return got
            status = got.StatusCode or ua.StatusCode()  # none given is Good
            if not status.is_good() and not status.is_uncertain():
                return Missing(OpcuaMissingReason.BAD_STATUS, status.name)
            raw[role] = got.Value.Value if got.Value is not None else None
        if spec.preset == "stacklight":
            return stacklight_state(raw)
        result = umati_state(raw) if spec.preset == "state" else convert(raw["value"], spec)
        if result is None:
            shown = ", ".join(f"{role} {value!r}" for role, value in raw.items())
            return Missing(OpcuaMissingReason.UNMAPPED, shown)
        return result

    def _alarm_field(self, name: str, count: bool) -> Value | Missing:
        refused = self._cache.get((name, "events"))
        return refused if isinstance(refused, Missing) else self._alarms.value(count)

    # -- the session ------------------------------------------------------------------------

    def _notified(self, session: int, node: Node, value: ua.DataValue) -> None:
        # The first values come while the session is still being opened: its cache takes
        # them. A session that is gone has another number.
        if session != self._session:
            return
        self.stats.notifications += 1
        for key in self._watching.get(node.nodeid, ()):
            self._cache[key] = value

    def _alarmed(self, session: int, event: Any) -> None:
        if session != self._session:
            return
        self.stats.events += 1
        if is_refresh_end(event):
            self._alarms.known = True
        else:
            self._alarms.apply(event)

    def _refreshed(self, session: int) -> None:
        """``timeout_s`` after ConditionRefresh answered: a server that sends no refresh end
        has sent its retained conditions by now."""
        if session == self._session:
            self._alarms.known = True

    def _lose(self, session: int, why: Missing) -> None:
        """The session is gone: no value of it is served from now on."""
        if session != self._session:
            return
        self._down = why
        self._client = None
        self._cache.clear()
        self.connected.clear()
        self._lost.set()

    async def _run(self) -> None:
        delay = self.config.reconnect_min_s
        while True:
            if not self.breaker.allow():
                await asyncio.sleep(self.breaker.remaining_s())
                continue
            client = self._new_client()
            try:
                await self._open(client)
            except asyncio.CancelledError:
                await self._quiet_disconnect(client)
                raise
            except Exception as exc:  # every failure is a reason to retry
                self._down = classify(exc)
                self.stats.failed_connects += 1
                if self.breaker.failure():
                    self.stats.circuit_opens += 1
                log.warning("opcua %s: cannot open a session (%s); retry in %g s",
                            self.name, self._down, delay)  # fmt: skip
                await self._quiet_disconnect(client)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            delay = self.config.reconnect_min_s
            self.breaker.success()
            try:
                await self._lost.wait()
            finally:
                await self._quiet_disconnect(client)
            self.stats.losses += 1
            log.warning("opcua %s: %s; reconnecting", self.name, self._down)
            await asyncio.sleep(delay)

    def _new_client(self) -> Client:
        config = self.config
        client = Client(
            config.endpoint, timeout=config.timeout_s, watchdog_intervall=config.timeout_s
        )
        client.application_uri = config.security.application_uri
        client.name = client.description = "Kyoso gateway"
        return client

    async def _open(self, client: Client) -> None:
        """Connect, resolve and subscribe; raises on any failure (nothing is served yet)."""
        config = self.config
        self._session += 1
        session = self._session
        self._lost.clear()
        self._cache.clear()
        self._alarms = ActiveAlarms()
        security = config.security
        for path in (security.certificate, security.private_key, security.server_certificate):
            if path is not None and not path.is_file():
                raise SetupError(Missing(OpcuaMissingReason.SECURITY, f"no file {path}"))
        if config.user is not None:
            client.set_user(config.user)
            try:
                secret = config.secret()  # read now: a changed password file takes effect
            except (OSError, IndexError) as exc:
                detail = f"cannot read {config.password_file}: {exc}"
                raise SetupError(Missing(OpcuaMissingReason.LOGIN, detail)) from exc
            if secret is not None:
                client.set_password(secret)
        async with asyncio.timeout(config.timeout_s * 2):
            if security.policy == "Basic256Sha256":
                assert security.certificate is not None
                assert security.private_key is not None
                await client.set_security(
                    SecurityPolicyBasic256Sha256,
                    certificate=str(security.certificate),
                    private_key=str(security.private_key),
                    server_certificate=(
                        str(security.server_certificate) if security.server_certificate else None
                    ),
                    mode=getattr(ua.MessageSecurityMode, security.mode),
                )
            await client.connect()

        async def lost(exc: Exception) -> None:
            self._lose(session, Missing(OpcuaMissingReason.SESSION_LOST, str(classify(exc))))

        client.connection_lost_callback = lost
        self._nodes = await self._resolve(client)
        await self._subscribe(client, session)
        if self._lost.is_set():
            raise ConnectionError(str(self._down))
        self._client = client
        self.connected.set()
        self.stats.sessions += 1
        log.info("opcua %s: session open (%d nodes, %d polled)",
                 self.name, len(self._nodes), len(self.polled))  # fmt: skip

    async def _resolve(self, client: Client) -> dict[Input, Node]:
        """Each input's node; one not found is missing with its reason for this session."""
        namespaces: dict[str, int] = {}
        nodes: dict[Input, Node] = {}
        async with asyncio.timeout(self.config.timeout_s * 2):
            for key, ref in self.inputs.items():
                if ref.node_id is not None:
                    nodes[key] = client.get_node(ref.node_id)
                    continue
                path = []
                for step in ref.path:
                    index = step.namespace
                    if isinstance(index, str):
                        if index not in namespaces:
                            array = await client.get_namespace_array()
                            namespaces.update((uri, i) for i, uri in enumerate(array))
                        if index not in namespaces:
                            self._cache[key] = Missing(
                                OpcuaMissingReason.NOT_FOUND, f"the server has no namespace {index}"
                            )
                            break
                        index = namespaces[index]
                    path.append(ua.QualifiedName(step.name, index))
                else:
                    try:
                        nodes[key] = await client.nodes.root.get_child(path)
                    except UaStatusCodeError as exc:
                        self._cache[key] = Missing(
                            OpcuaMissingReason.NOT_FOUND, f"{ref}: {status_name(exc.code)}"
                        )
        self._watching = {}
        for key, node in nodes.items():
            if key[1] != "events":
                self._watching.setdefault(node.nodeid, []).append(key)
        return nodes

    async def _subscribe(self, client: Client, session: int) -> None:
        """One subscription: a monitored item per node (mode subscribe) and the alarm
        events; nodes the server refuses to monitor are polled, alarms it refuses missing."""
        config = self.config
        events = [k for k in self._nodes if k[1] == "events"]
        data = [k for k in self._nodes if k[1] != "events"]
        self.polled = set(data) if config.mode == "poll" else set()
        if config.mode == "poll" and not events:
            return
        async with asyncio.timeout(config.timeout_s * 2):
            try:
                subscription = await client.create_subscription(
                    config.publishing_interval_ms, _Handler(self, session)
                )
            except UaStatusCodeError as exc:
                name = status_name(exc.code)
                log.warning("opcua %s: subscriptions refused (%s): polling every node",
                            self.name, name)  # fmt: skip
                self.polled = set(data)
                refused = Missing(OpcuaMissingReason.SERVER_ERROR, f"no subscription: {name}")
                self._cache.update(dict.fromkeys(events, refused))
                self.stats.fallbacks += 1
                return
            if config.mode == "subscribe":
                await self._monitor(subscription, data)
            if events:
                try:
                    await subscribe_alarms(client, subscription, self._nodes[events[0]])
                    loop = asyncio.get_running_loop()
                    loop.call_later(config.timeout_s, self._refreshed, session)
                except UaStatusCodeError as exc:
                    name = status_name(exc.code)
                    refused = Missing(status_reason(name), f"alarm events: {name}")
                    self._cache.update(dict.fromkeys(events, refused))
        if self.polled and config.mode == "subscribe":
            self.stats.fallbacks += 1
            log.warning("opcua %s: the server refused to monitor %s: polling them",
                        self.name, sorted(f"{f}.{r}" for f, r in self.polled))  # fmt: skip

    async def _monitor(self, subscription: Subscription, keys: list[Input]) -> None:
        """A monitored item per node, by sampling interval; a refused one is polled."""
        by_interval: dict[float, list[Input]] = {}
        for key in keys:
            interval = self.config.fields[key[0]].sampling_interval_ms
            by_interval.setdefault(
                self.config.default_sampling_ms if interval is None else interval, []
            ).append(key)
        for interval, group in by_interval.items():
            try:
                results = await subscription.subscribe_data_change(
                    [self._nodes[k] for k in group], sampling_interval=ua.Double(interval)
                )
            except UaStatusCodeError as exc:
                results = [ua.StatusCode(ua.UInt32(exc.code))] * len(group)
            for key, result in zip(group, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    continue
                if result.name in NODE_CODES:
                    self._cache[key] = Missing(OpcuaMissingReason.NOT_FOUND, result.name)
                    del self._nodes[key]
                else:
                    self.polled.add(key)

    async def _quiet_disconnect(self, client: Client) -> None:
        client.connection_lost_callback = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.timeout_s):
                await client.disconnect()

    async def aclose(self) -> None:
        """Stop the session task and close the session."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        client, self._client = self._client, None
        self.connected.clear()
        if client is not None:
            await self._quiet_disconnect(client)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
