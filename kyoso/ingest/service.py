"""The ingest: contract messages from MQTT into the store, at least once, nothing lost.

Flow: paho's thread decodes each message (:mod:`kyoso.ingest.consumer`) and hands it to the
event loop, which appends it to the open **batch**. A batch closes at ``max_samples``
samples or ``max_delay_s`` after its first message, and up to ``max_in_flight`` closed
batches are written at once. Writing a batch:

1. **Refused messages** (the contract's reasons, plus ``implausible_time`` for a timestamp
   too far ahead of now or too old) go to the dead-letter store, one letter per message or
   per refused sample of it; the other samples of the same message are written.
2. **Samples** are grouped by (factory, gateway, session) and written with one concurrent
   call per group (an InfluxDB store turns a batch into one request per factory).
3. **Descriptions, withdrawals and statuses** are written one by one in arrival order, and a
   batch starts them only when the previous batch finished its own, so the store's "last
   status written" is the broker's order.
4. A description or withdrawal of a machine that another gateway describes is refused
   (``not_owner``): a gateway describes and withdraws its own machines only.
5. Samples or messages the store refuses (:class:`~kyoso.store.Refusal`,
   :class:`~kyoso.store.StoreRefusedError`) are dead-lettered with reason ``store``; a
   sequence number sent again with another sample (:class:`~.receipts.ReplayGuard`) with
   reason ``replay_conflict``.
6. The batch's samples are **taken** (:mod:`kyoso.ingest.receipts`): the receipts telling
   the gateways to delete them from their outboxes go out within ``receipts.interval_s``.
   Receipts of the other workers only update what this one knows of the gaps. Each
   gateway's gaps are written to the store as they change, by a task of their own, off
   this path (:meth:`Ingest._write_gaps`).

Only then are the batch's messages acknowledged, and batches are acknowledged in the order
they were received (MQTT asks PUBACKs in receive order). A store failure (unreachable,
overloaded, credentials refused, anything but a refusal of one message) is retried with
exponential backoff for as long as it lasts: nothing is acknowledged meanwhile, so the
broker keeps the messages, and ``/readyz`` reports not ready. A write repeated after a
crash or a retry stores the same points (the store is idempotent).

With a ``sparkplug`` mapping, Sparkplug B messages go to the host application
(:mod:`kyoso.ingest.sparkplug`) before any batch: it hands back the samples, statuses and
descriptions they make, as a gateway's messages, then the message itself to acknowledge.
"""

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from prometheus_client import Histogram

from kyoso.contract import ContractError, GatewayStatus, MachineDescription, StoreReceipt
from kyoso.contract.wire import SampleLike, WireBatch
from kyoso.store import (
    SampleGroup,
    Store,
    StoreAuthError,
    StoreRefusedError,
    StoreUnavailableError,
)

from .config import IngestSettings
from .consumer import Incoming, MqttConsumer
from .deadletter import DeadLetterStore
from .receipts import Receipts, ReplayGuard
from .sparkplug import SparkplugHost

__all__ = ["Ingest", "IngestStats"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_Letter = tuple[str, str, str, bytes]
_Groups = dict[tuple[str, str, str], list[tuple[Incoming, SampleLike]]]
"""Samples by (factory, gateway, session), each with the message that carried it."""


@dataclass(slots=True)
class IngestStats:
    """Counters for metrics and health; read from the event loop's thread."""

    received: Counter[str] = field(default_factory=Counter)
    """Messages by kind: samples, machines, status, refused."""
    samples_received: int = 0
    samples_written: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    """Letters by reason."""
    store_retries: int = 0
    store_errors: Counter[str] = field(default_factory=Counter)
    """Failed store calls by error type."""
    acked: int = 0
    receipts_published: int = 0
    batch_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "kyoso_ingest_batch_seconds",
            "From a batch closing to its last write (retries included).",
            registry=None,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
    )


@dataclass(slots=True)
class _Batch:
    messages: list[Incoming] = field(default_factory=list)
    samples: int = 0
    written: bool = False
    after: "asyncio.Future[None] | None" = None
    """The previous batch's control writes (descriptions, statuses)."""
    control_done: "asyncio.Future[None] | None" = None


class Ingest:
    """One ingest worker: ``await run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        settings: IngestSettings,
        store: Store,
        dead_letters: DeadLetterStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: the Sparkplug host's (when its samples close)."""
        self.settings = settings
        self.store = store
        self.dead_letters = dead_letters
        self.sparkplug: SparkplugHost | None = None
        if settings.sparkplug is not None:
            self.sparkplug = SparkplugHost(settings.sparkplug, self._receive, clock)
        self.consumer = MqttConsumer(settings.mqtt, self._receive, self.sparkplug)
        if self.sparkplug is not None:
            self.sparkplug.publish = self.consumer.publish
        self.stats = IngestStats()
        self.receipts = Receipts(settings.worker)
        self._replays = ReplayGuard()
        self._owners: dict[str, dict[str, str]] = {}
        """Per factory, the gateway describing each machine (read from the store once)."""
        self._open = _Batch()
        self._timer: asyncio.TimerHandle | None = None
        self._queue: asyncio.Queue[_Batch] = asyncio.Queue()
        self._unacked: deque[_Batch] = deque()
        self._last_control: asyncio.Future[None] | None = None
        self._failing_since: float | None = None
        self._stopping = False
        self._drained = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, drain_timeout_s: float = 30.0) -> None:
        """Consume until ``stop`` is set, then write and acknowledge what was received
        (within ``drain_timeout_s``; the rest the broker redelivers) and disconnect."""
        workers = [
            asyncio.create_task(self._work(), name=f"ingest-writer-{i}")
            for i in range(self.settings.batch.max_in_flight)
        ]
        workers.append(asyncio.create_task(self._publish_receipts(), name="ingest-receipts"))
        workers.append(asyncio.create_task(self._write_gaps(), name="ingest-gaps"))
        if self.sparkplug is not None:
            workers.append(asyncio.create_task(self.sparkplug.run(), name="ingest-sparkplug"))
        await self.consumer.start()
        try:
            await stop.wait()
            self._stopping = True
            self._seal()
            self._drained.clear()
            if self._unacked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), drain_timeout_s)
        finally:
            self._stopping = True
            self._send_receipts()
            await self.consumer.stop()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        log.info("ingest stopped; %d messages acknowledged", self.stats.acked)

    # --- health ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected to the broker, and the store takes writes."""
        return self.consumer.connected and self._failing_since is None

    @property
    def pending_messages(self) -> int:
        """Received and not yet acknowledged."""
        return sum(len(b.messages) for b in self._unacked) + len(self._open.messages)

    def lag_s(self) -> float:
        """Age of the oldest message received and not yet acknowledged (0 if none)."""
        oldest = self._unacked[0] if self._unacked else self._open
        return time.time() - oldest.messages[0].received if oldest.messages else 0.0

    def store_failing_s(self) -> float:
        """For how long store writes have been failing (0 when they succeed)."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    # --- batching -------------------------------------------------------------------------

    def _receive(self, incoming: Incoming) -> None:
        if self._stopping:  # not acknowledged: the broker sends it again next time
            return
        if incoming.sparkplug and not incoming.cleared and incoming.error is None:
            if self.sparkplug is not None:
                self.sparkplug.receive(incoming)  # it gives the message back once read
                return
            incoming = replace(incoming, error=ContractError("topic", "no Sparkplug mapping"))
        self.stats.received[_kind(incoming)] += 1
        self.stats.samples_received += incoming.samples
        batch = self._open
        batch.messages.append(incoming)
        batch.samples += incoming.samples
        if batch.samples >= self.settings.batch.max_samples:
            self._seal()
        elif len(batch.messages) == 1:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.settings.batch.max_delay_s, self._seal)

    def _seal(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._open
        if not batch.messages:
            return
        self._open = _Batch()
        batch.after = self._last_control
        batch.control_done = asyncio.get_running_loop().create_future()
        self._last_control = batch.control_done
        self._unacked.append(batch)
        self._queue.put_nowait(batch)

    async def _work(self) -> None:
        while True:
            batch = await self._queue.get()
            started = time.monotonic()
            delay = self.settings.batch.retry_min_s
            while True:
                try:
                    await self._write(batch)
                    break
                except Exception:  # the dead-letter file failed, say: keep the batch
                    log.exception("writing a batch failed; retrying in %.1f s", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.settings.batch.retry_max_s)
            self.stats.batch_seconds.observe(time.monotonic() - started)
            batch.written = True
            self._acknowledge()

    async def _publish_receipts(self) -> None:
        while True:
            await asyncio.sleep(self.settings.receipts.interval_s)
            self._send_receipts()

    async def _write_gaps(self) -> None:
        """Every ``receipts.interval_s``, each gateway's gaps that changed into the store
        (for the API's gateway view). A failing store is retried by :meth:`_persist`, this
        task waiting meanwhile, not the samples; a refusal (permanent) is logged and the
        gateway's gaps are written again once they change."""
        while True:
            await asyncio.sleep(self.settings.receipts.interval_s)
            for gaps in self.receipts.due_gaps():
                name = f"the gaps of {gaps.factory}/{gaps.gateway}"
                args = (gaps.factory, gaps.gateway, gaps.missing, gaps.oldest_s, gaps.at)
                try:
                    await self._persist(name, partial(self.store.write_gaps, *args))
                except StoreRefusedError as exc:
                    log.warning("the store refused %s: %s", name, exc)

    def _send_receipts(self) -> None:
        """Publish the receipts with new samples (kept for later while disconnected)."""
        if not self.consumer.connected:
            return
        for topic, payload in self.receipts.due():
            if self.consumer.publish(topic, payload):
                self.stats.receipts_published += 1
            else:
                log.warning("publishing the receipt on %s failed; the next one covers it", topic)

    def _acknowledge(self) -> None:
        while self._unacked and self._unacked[0].written:
            for incoming in self._unacked.popleft().messages:
                if self.consumer.ack(incoming):
                    self.stats.acked += 1
        if not self._unacked:
            self._drained.set()

    # --- writing --------------------------------------------------------------------------

    async def _write(self, batch: _Batch) -> None:
        letters, groups, control = self._sort(batch.messages)
        await self._dead_letter(letters)
        await self._dead_letter(await self._write_samples(groups))
        for incoming in batch.messages:  # written or dead-lettered: taken
            if isinstance(message := incoming.message, WireBatch):
                seqs = (sample.seq for sample in message.samples)
                self.receipts.taken(message.factory, message.gateway, message.session, seqs)
        assert batch.control_done is not None
        try:
            if batch.after is not None:
                await batch.after
            await self._dead_letter([x for m in control if (x := await self._control(m))])
        finally:
            if not batch.control_done.done():
                batch.control_done.set_result(None)

    def _sort(self, messages: list[Incoming]) -> tuple[list[_Letter], _Groups, list[Incoming]]:
        """Refused messages and samples (as letters), samples by (factory, gateway, session),
        and the descriptions, withdrawals and statuses to write in order."""
        letters: list[_Letter] = []
        groups: _Groups = {}
        control: list[Incoming] = []
        now = time.time()
        for incoming in messages:
            message = incoming.message
            if incoming.error is not None:
                letters.append(_letter(incoming, incoming.error.reason, str(incoming.error)))
            elif isinstance(message, WireBatch):
                self._sort_samples(incoming, message, now, groups, letters)
            elif isinstance(message, StoreReceipt):
                self.receipts.heard(message)
            elif isinstance(message, MachineDescription | GatewayStatus):
                when = message.updated_at if isinstance(message, MachineDescription) else message.ts
                problem = self._implausible(when, now, past=False)
                if problem is None:
                    control.append(incoming)
                else:
                    letters.append(_letter(incoming, "implausible_time", problem))
            elif incoming.withdrawn is not None:
                control.append(incoming)
        return letters, {key: pairs for key, pairs in groups.items() if pairs}, control

    def _sort_samples(
        self,
        incoming: Incoming,
        message: WireBatch,
        now: float,
        groups: _Groups,
        letters: list[_Letter],
    ) -> None:
        """The samples of ``message`` into its session's group, or as letters when refused."""
        key = (message.factory, message.gateway, message.session)
        group, conflict_of = groups.setdefault(key, []), self._replays.conflict
        moment, problem = None, None  # a batch's samples often share their ts
        for sample in message.samples:
            if sample.ts is not moment:
                moment = sample.ts
                problem = self._implausible(moment, now, past=True)
            if problem is not None:
                letters.append(_letter(incoming, "implausible_time", _about(sample, problem)))
            elif (conflict := conflict_of(key, sample)) is not None:
                letters.append(_letter(incoming, "replay_conflict", conflict))
            else:
                group.append((incoming, sample))

    async def _write_samples(self, groups: _Groups) -> list[_Letter]:
        """Every sample of the batch in one store call; the refused ones as letters."""
        if not groups:
            return []
        items = list(groups.values())
        batch = [
            SampleGroup(
                factory,
                gateway,
                session,
                [sample for _, sample in pairs],
                received_at=datetime.fromtimestamp(max(m.received for m, _ in pairs), UTC),
            )
            for (factory, gateway, session), pairs in groups.items()
        ]
        refusals = await self._persist("samples", lambda: self.store.write_batch(batch))
        self.stats.samples_written += sum(len(g.samples) for g in batch) - len(refusals)
        return [
            _letter(
                items[r.group][r.index][0], "store", _about(items[r.group][r.index][1], r.reason)
            )
            for r in refusals
        ]

    async def _control(self, incoming: Incoming) -> _Letter | None:
        """Write one description, withdrawal or status; its dead letter if refused."""
        message, store = incoming.message, self.store
        call: Callable[[], Awaitable[None]]
        claim: tuple[str, str, str] | None = None
        if incoming.withdrawn is not None:
            factory, gateway, machine = claim = incoming.withdrawn
            call = lambda: store.remove_description(factory, machine)  # noqa: E731
        elif isinstance(message, MachineDescription):
            claim = (message.factory, message.gateway, message.machine)
            call = lambda: store.write_description(message)  # noqa: E731
        elif isinstance(message, GatewayStatus):
            call = lambda: store.write_status(message)  # noqa: E731
        else:
            return None
        if claim is not None and (owner := await self._owner(claim)) is not None:
            _, gateway, machine = claim
            return _letter(
                incoming,
                "not_owner",
                f"machine {machine} is described by gateway {owner}, not {gateway}",
            )
        try:
            await self._persist(incoming.topic, call)
        except StoreRefusedError as exc:
            return _letter(incoming, "store", str(exc))
        if claim is not None:
            factory, gateway, machine = claim
            owners = self._owners[factory]
            if incoming.withdrawn is not None:
                owners.pop(machine, None)
            else:
                owners[machine] = gateway
        return None

    async def _owner(self, claim: tuple[str, str, str]) -> str | None:
        """The other gateway that describes the machine now, if one does: only the gateway
        describing a machine may describe it again or withdraw it (the first claimant
        keeps it until it withdraws it)."""
        factory, gateway, machine = claim
        owners = self._owners.get(factory)
        if owners is None:
            described = await self._persist(factory, lambda: self.store.machines(factory))
            owners = self._owners.setdefault(factory, {d.machine: d.gateway for d in described})
        owner = owners.get(machine)
        return owner if owner is not None and owner != gateway else None

    async def _persist(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` until the store takes it; only a refusal of this message gets out."""
        delay = self.settings.batch.retry_min_s
        while True:
            try:
                result = await call()
            except StoreRefusedError:
                raise
            except Exception as exc:  # the data is fine, the store is not: never drop it
                self.stats.store_retries += 1
                self.stats.store_errors[type(exc).__name__] += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                wait = delay
                if isinstance(exc, StoreUnavailableError) and exc.retry_after_s is not None:
                    wait = max(wait, exc.retry_after_s)  # never before the time the store named
                level = logging.ERROR if isinstance(exc, StoreAuthError) else logging.WARNING
                log.log(level, "writing %s failed (%s); retrying in %.1f s", what, exc, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.settings.batch.retry_max_s)
            else:
                self._failing_since = None
                return result

    async def _dead_letter(self, letters: list[_Letter]) -> None:
        if not letters:
            return
        for _, reason, detail, _ in letters:
            self.stats.dead_letters[reason] += 1
            log.info("dead letter (%s): %s", reason, detail[:300])
        await asyncio.to_thread(self.dead_letters.add_many, letters)

    def _implausible(self, moment: datetime, now: float, *, past: bool) -> str | None:
        rules = self.settings.plausibility
        stamp = moment.timestamp()
        if stamp > now + rules.max_future_s:
            return f"{moment.isoformat()} is {stamp - now:.0f} s in the future"
        if past and stamp < now - rules.max_age_s:
            return f"{moment.isoformat()} is older than {rules.max_age_s:.0f} s"
        return None


def _kind(incoming: Incoming) -> str:
    if incoming.error is not None:
        return "refused"
    if incoming.sparkplug:
        return "sparkplug"
    if isinstance(incoming.message, WireBatch):
        return "samples"
    if isinstance(incoming.message, StoreReceipt):
        return "receipts"
    if isinstance(incoming.message, GatewayStatus) or incoming.cleared:
        return "status"
    return "machines"


def _letter(incoming: Incoming, reason: str, detail: str) -> _Letter:
    return (incoming.topic, reason, detail, incoming.payload)


def _about(sample: SampleLike, problem: str) -> str:
    return f"sample machine={sample.machine} seq={sample.seq} ts={sample.ts.isoformat()}: {problem}"
