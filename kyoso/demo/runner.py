"""``kyoso demo``: the whole system in one process, with nothing else installed.

What runs, all on one asyncio loop (the broker in its own child process):

1. an **embedded MQTT 5 broker** (:mod:`kyoso.demo.broker`), or an external one;
2. the **shipped demo factories** (:mod:`kyoso.simulators`): Modbus TCP servers on free
   ports and current clamps publishing to the broker;
3. a **backfill**: the week before now (or what is missing of it since the last run), as
   the gateways would have published it (:mod:`kyoso.simulators.history`, one sample per
   machine every 5 minutes), made in a worker process and written straight into the store
   newest day first while everything else already runs (:mod:`kyoso.demo.backfill`);
4. **one gateway per factory** (:class:`kyoso.gateway.agent.Gateway`) reading the machines
   over Modbus and the clamps over MQTT, publishing to the broker;
5. the **ingest** (:class:`kyoso.ingest.service.Ingest`) subscribing to the broker and
   writing the **embedded store** (SQLite), or an external InfluxDB;
6. the **capacity API** with its overview page (:mod:`kyoso.api`), on uvicorn.

The live data takes the production path: gateways publish MQTT, the ingest subscribes.
Everything lives in the data directory (store, dead letters, outboxes, API keys, bookings)
and is kept for the next run, which a lock keeps to one demo at a time; Ctrl-C stops
everything cleanly at any point, during the start included. The demo's API keys are
kept in plain text in ``<data dir>/demo-keys.json`` (mode 0600) so that the page can be
opened again: a demo convenience, not how a deployment keeps keys.
"""

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn

from kyoso.api.app import create_app
from kyoso.api.bookings import BookingStore
from kyoso.api.keys import ApiKeyStore, parse_scope
from kyoso.api.service import CapacityService
from kyoso.capacity.rules import CapacityRules
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.i18n import DEFAULT, Lang, text
from kyoso.influx.client import InfluxConfig
from kyoso.ingest.config import IngestSettings, MqttConfig
from kyoso.ingest.deadletter import DeadLetterStore
from kyoso.ingest.service import Ingest
from kyoso.simulators.config import FactoryConfig, load_factory, shipped_factories
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.history import history_descriptions
from kyoso.simulators.runner import SimClock, Simulation, SimulationOptions
from kyoso.store import SqliteStore, Store
from kyoso.store.choice import StoreChoice, store_for
from kyoso.store.influx import InfluxStore

from .backfill import Backfill, BackfillProgress
from .broker import EmbeddedBroker, EmbeddedBrokerError

__all__ = ["DemoError", "DemoInfo", "DemoOptions", "run_demo"]

log = logging.getLogger(__name__)

GATEWAY = "gw-01"
DEMO_CACHE_TTL_S = 3.0


class DemoError(RuntimeError):
    """The demo cannot start (a port is taken, say); the message says why."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """How to run the demo; ``kyoso demo --help`` explains each."""

    data_dir: Path = Path("kyoso-demo")
    host: str = "127.0.0.1"
    api_port: int = 8000
    mqtt_port: int = 0
    broker: tuple[str, int] | None = None
    """An external broker instead of the embedded one."""
    influx: InfluxConfig | None = None
    """An external InfluxDB instead of the embedded store."""
    backfill: timedelta = timedelta(days=7)
    poll_interval_s: float = 1.0
    publish_interval_s: float = 10.0
    factories: list[Path] = field(default_factory=shipped_factories)


@dataclass(frozen=True, slots=True)
class DemoInfo:
    """Where the running demo answers."""

    api_url: str
    broker: str
    keys: dict[str, str]
    factories: list[str]
    protocols: dict[str, int]
    """How many of the demo's machines are read through each source kind."""
    history: BackfillProgress
    data_dir: Path


def _keys(data_dir: Path) -> tuple[ApiKeyStore, dict[str, str]]:
    """The demo's key store, with an admin and a platform key (made on the first run)."""
    saved = data_dir / "demo-keys.json"
    store = ApiKeyStore(data_dir / "api-keys.sqlite3", create=True)
    keys: dict[str, str] = json.loads(saved.read_text()) if saved.exists() else {}
    valid = all(store.authenticate(k) is not None for k in keys.values())
    if not keys or not valid:
        keys = {
            scope: store.create(f"demo-{scope}", parse_scope(scope)).key
            for scope in ("admin", "platform")
        }
        saved.write_text(json.dumps(keys, indent=2))
        saved.chmod(0o600)
    return store, keys


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Hold the data directory for this demo; :class:`DemoError` if another one has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "demo.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DemoError(
                f"{data_dir} is in use by another kyoso demo: stop that one, or give this "
                "one its own --data-dir"
            ) from None
        yield


def _store(options: DemoOptions) -> InfluxStore | SqliteStore:
    """The embedded store in the data directory, or the external InfluxDB."""
    if options.influx is not None:
        return store_for(StoreChoice(store="influxdb", influx=options.influx))
    choice = StoreChoice(store="sqlite", sqlite_path=options.data_dir / "store.sqlite3")
    return store_for(choice, synchronous="normal")  # a demo: a crash, not a power cut


@contextlib.asynccontextmanager
async def _broker(options: DemoOptions) -> AsyncIterator[tuple[str, int]]:
    if options.broker is not None:
        yield options.broker
        return
    async with EmbeddedBroker(
        options.data_dir / "broker", host=options.host, port=options.mqtt_port
    ) as broker:
        yield broker.host, broker.port


async def run_demo(
    options: DemoOptions,
    stop: asyncio.Event,
    on_ready: Callable[[DemoInfo], None] | None = None,
) -> None:
    """Run the demo until ``stop`` is set (or the API server stops on a signal).

    Raises :class:`DemoError` when its data directory is in use or a port it needs is taken
    (before starting anything). ``stop`` set during the start ends it there."""
    configs: list[FactoryConfig] = [load_factory(p) for p in options.factories]
    with _locked(options.data_dir):
        try:  # the API's port first: a taken one stops the demo before anything else starts
            api_socket = socket.create_server((options.host, options.api_port))
        except OSError as exc:
            raise DemoError(
                f"the API cannot listen on {options.host}:{options.api_port}: {exc}"
            ) from exc
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(api_socket.close)
            starting = asyncio.create_task(
                _start(stack, options, configs, api_socket, stop, on_ready=on_ready)
            )
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # stopped while starting: unwind what has started
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return
            stopping.cancel()
            await starting.result().wait(stop)


@dataclass(slots=True)
class _Running:
    """The started demo: what stops it, in order."""

    info: DemoInfo
    server: uvicorn.Server
    api: "asyncio.Task[None]"
    backfill: "asyncio.Task[None]"
    gateways: list["asyncio.Task[None]"]
    ingest: "_IngestRun"

    async def wait(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` (or the API server stopped on a signal), then stop in order."""
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({self.api, waiter}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # the server stopped on a signal: stop the rest too
        self.server.should_exit = True
        self.backfill.cancel()  # what it wrote is in the ledger; the next run goes on
        # In order, so nothing is left in between: the gateways deliver what they hold to
        # the broker, the ingest takes it from the broker and stores it, then the rest.
        await asyncio.gather(self.api, waiter, self.backfill, *self.gateways,
                             return_exceptions=True)  # fmt: skip
        await self.ingest.stop_when_quiet()
        for task in [*self.gateways, self.ingest.task]:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s failed", task.get_name(), exc_info=task.exception())


async def _start(
    stack: contextlib.AsyncExitStack,
    options: DemoOptions,
    configs: list[FactoryConfig],
    api_socket: socket.socket,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[DemoInfo], None] | None,
) -> _Running:
    """Start every part, each unwound by ``stack``; the history fills in the background.
    The API first: ``on_ready`` hears of it before the simulators start (an OPC UA server
    alone takes seconds to load on a Raspberry Pi), and the page shows the factories
    coming online."""
    try:
        host, port = await stack.enter_async_context(_broker(options))
    except EmbeddedBrokerError as exc:
        raise DemoError(f"{exc} (--mqtt-port 0 picks a free port)") from exc
    store: Store = await stack.enter_async_context(_store(options))
    clock = SimClock()
    window = (clock.start - options.backfill.total_seconds(), clock.start)
    sim_options = SimulationOptions(
        backfill_s=options.backfill.total_seconds(),
        host=options.host,
        ephemeral_ports=True,
        mqtt_host=host,
        mqtt_port=port,
    )
    sim = Simulation(configs, clock, sim_options)
    for factory in sim.factories.values():
        for description in history_descriptions(factory.config, window[0], gateway=GATEWAY):
            await store.write_description(description)
    keys, made = _keys(options.data_dir)
    stack.callback(keys.close)
    bookings = BookingStore(options.data_dir / "bookings.sqlite3")
    stack.callback(bookings.close)
    backfill = Backfill(
        store, options.factories, window, ledger=options.data_dir / "history.json", gateway=GATEWAY
    )
    # Figures a few seconds old at most: the page is watched live, by one person.
    service = CapacityService(
        store,
        bookings,
        CapacityRules(cache_ttl_s=DEMO_CACHE_TTL_S),
        backfilling=lambda: backfill.progress.running,
    )
    backfill.written = functools.partial(service.forget, history=True)
    await backfill.plan(list(sim.factories))  # before any live sample arrives
    history = asyncio.create_task(backfill.run(), name="backfill")
    stack.push_async_callback(_cancelled, history)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service, keys),
            host=options.host,
            port=options.api_port,
            log_config=None,
            access_log=False,
        )
    )
    api = asyncio.create_task(server.serve(sockets=[api_socket]), name="api")
    stack.push_async_callback(_cancelled, api)
    while not server.started and not api.done():
        await asyncio.wait({api}, timeout=0.05)
    info = DemoInfo(
        api_url=f"http://{options.host}:{api_socket.getsockname()[1]}",
        broker=f"{host}:{port}",
        keys=made,
        factories=[c.factory for c in configs],
        protocols=dict(Counter(m.source.kind for c in configs for m in c.machines)),
        history=backfill.progress,
        data_dir=options.data_dir,
    )
    if on_ready is not None and not api.done():
        on_ready(info)
    await stack.enter_async_context(sim)
    gateways, ingest = _components(options, sim, store, (host, port), stop)
    for task in [*gateways, ingest.task]:  # done by then, unless the start was cut short
        stack.push_async_callback(_cancelled, task)
    return _Running(info, server, api, history, gateways, ingest)


async def _cancelled(task: "asyncio.Task[None]") -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class _IngestRun:
    """The demo's ingest, stopped only once the broker has nothing more for it."""

    def __init__(self, settings: IngestSettings, store: Store) -> None:
        self._stop = asyncio.Event()
        self._dead_letters = DeadLetterStore(settings.dead_letter_path)
        self.ingest = Ingest(settings, store, self._dead_letters)
        self.task = asyncio.create_task(self._run(), name="ingest")

    async def _run(self) -> None:
        try:
            await self.ingest.run(self._stop)
        finally:
            self._dead_letters.close()

    async def stop_when_quiet(self, quiet_s: float = 0.5, at_most_s: float = 10.0) -> None:
        """Stop once no message arrived for ``quiet_s`` (the gateways' last deliveries have
        come through the broker, which keeps nothing across a restart), then wait for the
        ingest to store and acknowledge what it received."""
        deadline = time.monotonic() + at_most_s
        seen = -1
        while time.monotonic() < deadline:
            received = sum(self.ingest.stats.received.values())
            if received == seen:
                break
            seen = received
            await asyncio.sleep(quiet_s)
        self._stop.set()
        await asyncio.gather(self.task, return_exceptions=True)


def _components(
    options: DemoOptions,
    sim: Simulation,
    store: Store,
    broker: tuple[str, int],
    stop: asyncio.Event,
) -> tuple[list["asyncio.Task[None]"], _IngestRun]:
    """The gateways, running until ``stop``, and the ingest."""
    host, port = broker
    gateways = []
    for name, factory in sim.factories.items():
        config = gateway_config(
            factory.config,
            sim.endpoints.get(name, {}),
            gateway=GATEWAY,
            broker={"host": host, "port": port},
            outbox_path=options.data_dir / f"outbox-{name}.sqlite3",
            sensor_broker={"host": host, "port": port},
            poll_interval_s=options.poll_interval_s,
            publish_interval_s=options.publish_interval_s,
        )
        gateway = Gateway(GatewayConfig.model_validate(config))
        gateways.append(asyncio.create_task(gateway.run(stop), name=f"gateway-{name}"))
    settings = IngestSettings(
        mqtt=MqttConfig(host=host, port=port, client_id="kyoso-demo-ingest"),
        store="influxdb" if options.influx is not None else "sqlite",
        dead_letter_path=options.data_dir / "dead-letters.sqlite3",
    )
    return gateways, _IngestRun(settings, store)


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop``. Installed with :func:`signal.signal`, so that
    uvicorn, which takes the signals while it serves, gives them back and raises the one it
    stopped on again: it then reaches ``stop`` as well."""
    loop = asyncio.get_running_loop()

    def handler(*_: Any) -> None:
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def guide(info: DemoInfo, lang: Lang = DEFAULT) -> str:
    """What the demo prints once it runs, in ``lang``."""
    admin, platform = info.keys["admin"], info.keys["platform"]
    values = {
        "overview": f"{info.api_url}/#key={admin}",
        "docs": f"{info.api_url}/docs",
        "curl": (
            f"curl -H 'Authorization: Bearer {platform}' '{info.api_url}/v1/capacity?horizon_h=24'"
        ),
        "broker": info.broker,
        "factories": ", ".join(info.factories),
        "machines": ", ".join(
            text("demo.protocol", lang, kind=text(f"demo.kind.{kind}", lang), count=count)
            for kind, count in sorted(info.protocols.items())
        ),
        "history": _history(info.history, lang),
        "data": info.data_dir.resolve(),
    }
    lines = (
        "running",
        "overview",
        "docs",
        "capacity",
        "broker",
        "factories",
        "machines",
        "history",
        "data",
    )
    said = [text(f"demo.{line}", lang, **values) for line in (*lines, "stop")]
    return "\n".join(["", *said, ""])


def _history(progress: BackfillProgress, lang: Lang) -> str:
    if progress.complete:
        return text("demo.history_complete", lang)
    return text("demo.history_filling", lang, days=f"{progress.todo_s / 86400:.1f}")
