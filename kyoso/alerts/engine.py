"""The alerts' loop: look at every factory, settle each rule's alerts, queue the messages,
deliver them.

Each rule's alert for a subject (a machine, a gateway, a process) goes through three
events: it **fires** once its condition has held for the rule's ``after_min``, is sent
again as a **reminder** every ``repeat_min`` if the rule says so, and is **recovered** when
the condition is over: one message each, whatever the number of looks in between. Only a
factory the API answered for is settled: an unreachable API recovers nothing. A look's
changes and the messages they make are committed together (kyoso/alerts/state.py), so a
restart neither repeats a message nor misses a recovery.

A message goes to each recipient of the alert's owner in their language, at the factory's
local time; during a recipient's quiet hours it is held until they end (and sent in a
digest), unless its rule is urgent. Delivery runs beside the looks (kyoso/alerts/deliver.py):
a slow channel never delays a look.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from . import rules
from .config import AlertsConfig, RuleConfig, RuleName
from .deliver import AppriseNotifier, Courier, Notifier, channel_of
from .errors import ApiReadError
from .messages import Event, render
from .reader import ApiReader, FactoryNow, Order
from .state import AlertRow, AlertState, Outgoing

__all__ = ["AlertEngine"]

logger = logging.getLogger(__name__)

_COVERED: frozenset[str] = frozenset({"order_at_risk", "partner_down"})
"""Rules whose messages name who could take the work."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """A factory as one look found it."""

    now: FactoryNow
    down: list[rules.Condition]
    orders: list[Order]


@dataclass(frozen=True, slots=True)
class _Change:
    """An alert to tell of."""

    owner: str
    rule: RuleName
    subject: str
    event: Event
    since: float
    facts: Mapping[str, Any]
    urgent: bool


class AlertEngine:
    """Looks through ``client`` (its ``base_url`` the API's) on ``clock`` (Unix seconds)."""

    def __init__(
        self,
        config: AlertsConfig,
        client: httpx.Client,
        state: AlertState,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._reader = ApiReader(client)
        self._state = state
        self._clock = clock
        self.courier = Courier(config, state, notifier or AppriseNotifier(), clock)
        self._zones: dict[str, str] = {}
        self._wake = asyncio.Event()
        self.looks_failed = 0
        """Factory looks the API did not answer, since start."""

    # --- one look -------------------------------------------------------------------------

    async def look(self) -> None:
        """Read every factory, settle every rule, queue the messages."""
        now = self._clock()
        seen = await asyncio.to_thread(self._read, now)
        changes: list[_Change] = []
        for owner, watched in self.config.factories.items():
            found = seen.get(owner)
            if found is None:
                continue
            if found.now.timezone:
                self._zones[owner] = found.now.timezone
            own = watched.rules
            evaluated: list[tuple[RuleName, RuleConfig, list[rules.Condition]]] = [
                ("machine_down", own.machine_down, found.down),
                ("gateway_offline", own.gateway_offline, rules.gateway_offline(found.now)),
                (
                    "capacity_below",
                    own.capacity_below,
                    rules.capacity_below(found.now, own.capacity_below),
                ),
                (
                    "order_at_risk",
                    own.order_at_risk,
                    rules.orders_at_risk(found.down, found.orders),
                ),
            ]
            for rule, config, conditions in evaluated:
                if config.enabled:
                    changes += self._settle(owner, rule, config, conditions, now)
                else:
                    self._state.end(owner, rule)
        changes += self._partners(seen, now)
        covers = await asyncio.to_thread(self._covers, changes)
        for change in changes:
            self._record(change, covers, now)
        self._state.commit()
        if changes:
            self._wake.set()

    def _read(self, now: float) -> dict[str, _Seen]:
        """Every factory the API answers for (run in a worker thread)."""
        moment = datetime.fromtimestamp(now, UTC)
        seen = {}
        for factory, watched in self.config.factories.items():
            key = watched.api_key.get_secret_value()
            at_risk = watched.rules.order_at_risk
            try:
                found = self._reader.factory(factory, key, watched.rules.capacity_below.horizon_h)
                down = rules.machine_down(found)
                orders = (
                    self._reader.orders(
                        factory, key, [d.subject for d in down], moment, at_risk.within_h
                    )
                    if at_risk.enabled
                    else []
                )
            except ApiReadError as exc:
                self.looks_failed += 1
                logger.warning("%s not read, its alerts left as they were: %s", factory, exc)
                continue
            seen[factory] = _Seen(found, down, orders)
        return seen

    def _partners(self, seen: Mapping[str, _Seen], now: float) -> list[_Change]:
        """The partner_down alerts of every backup that opted in, for each partner that
        named it (both sides agree) and that the API answered for."""
        changes: list[_Change] = []
        for backup, watched in self.config.factories.items():
            bcp = watched.bcp
            for partner in bcp.partners:
                if backup not in self.config.backups_agreed(partner) or partner not in seen:
                    continue
                found = seen[partner]
                conditions = rules.partner_down(found.now, found.down)
                timing = RuleConfig(after_min=bcp.after_min)
                changes += self._settle(
                    backup, "partner_down", timing, conditions, now, prefix=f"{partner}/"
                )
        return changes

    def _settle(
        self,
        owner: str,
        rule: RuleName,
        config: RuleConfig,
        conditions: list[rules.Condition],
        now: float,
        *,
        prefix: str = "",
    ) -> list[_Change]:
        """The events of ``rule``'s alerts of ``owner`` (those whose subject starts with
        ``prefix``) now that ``conditions`` hold; new conditions are remembered."""
        known = {
            s: row for s, row in self._state.alerts(owner, rule).items() if s.startswith(prefix)
        }
        changes = []
        holding = {c.subject: c for c in conditions}
        for subject, row in known.items():
            if subject in holding:
                continue
            self._state.end(owner, rule, subject)
            if row.fired_at is not None:
                changes.append(
                    _Change(owner, rule, subject, "recovered", row.since, row.facts, config.urgent)
                )
        for subject, condition in holding.items():
            found = known.get(subject)
            if found is None:
                since = min(condition.since or now, now)
                self._state.begin(owner, rule, subject, since, condition.facts)
                found = AlertRow(rule, subject, since, None, None, condition.facts)
            event = _event(found, config, now)
            if event is not None:
                changes.append(
                    _Change(
                        owner, rule, subject, event, found.since, condition.facts, config.urgent
                    )
                )
        return changes

    def _covers(self, changes: list[_Change]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Who could take the work of each machine a message names (in a worker thread);
        a machine whose cover cannot be read is sent without it, and said so in the log."""
        found: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for change in changes:
            if change.rule not in _COVERED or change.event == "recovered":
                continue
            factory, machine = _whose(change.facts), change.facts["machine"]
            if (factory, machine) in found:
                continue
            key = self.config.factories[factory].api_key.get_secret_value()
            try:
                covers = self._reader.cover(factory, key, machine)
            except ApiReadError as exc:
                logger.warning("cover of %s/%s not read: %s", factory, machine, exc)
                covers = []
            found[(factory, machine)] = [
                {"process": c.process, "hours": c.hours, "candidates": list(c.candidates)}
                for c in covers
            ]
        return found

    def _record(
        self, change: _Change, covers: Mapping[tuple[str, str], list[dict[str, Any]]], now: float
    ) -> None:
        """Remember the event and queue its message for every channel of every recipient."""
        facts = dict(change.facts)
        if change.rule in _COVERED and change.event != "recovered":
            facts["cover"] = covers.get((_whose(facts), facts["machine"]), [])
        if change.event != "recovered":
            self._state.sent(change.owner, change.rule, change.subject, now, facts)
        watched = self.config.factories[change.owner]
        zone = ZoneInfo(watched.timezone or self._zones.get(change.owner) or "UTC")
        local = datetime.fromtimestamp(now, zone)
        messages = []
        for recipient in watched.recipients:
            title, body = render(
                change.rule,
                change.event,
                facts,
                recipient.lang,
                zone,
                since=change.since,
                at=now,
            )
            quiet_end = None
            if recipient.quiet_hours is not None and not change.urgent:
                quiet_end = recipient.quiet_hours.end_after(local)
            for url in recipient.urls:
                messages.append(
                    Outgoing(
                        owner=change.owner,
                        recipient=recipient.name,
                        channel=channel_of(url.get_secret_value()),
                        held=quiet_end is not None,
                        title=title,
                        body=body,
                        due_at=now if quiet_end is None else quiet_end.timestamp(),
                    )
                )
        self._state.queue(messages)
        logger.info(
            "%s %s %s of %s: %d message(s) queued",
            change.rule,
            change.subject or "(factory)",
            change.event,
            change.owner,
            len(messages),
        )

    # --- running --------------------------------------------------------------------------

    async def once(self) -> int:
        """One look, then every message due delivered once; the number delivered."""
        await self.look()
        return await self.courier.deliver()

    async def run(self, stop: asyncio.Event) -> None:
        """Look every ``interval_s`` and deliver as messages fall due, until ``stop``."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._looking(stop))
            tasks.create_task(self._delivering(stop))

    async def _looking(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.look()
            except Exception:  # the loop's boundary: the next look may do better
                logger.exception("a look failed")
            await _wait(stop, self.config.interval_s)
        self._wake.set()

    async def _delivering(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.courier.deliver()
            except Exception:  # the loop's boundary: the messages stay queued
                logger.exception("a delivery round failed")
            due = self._state.next_due()
            wait_s = self.config.interval_s if due is None else due - self._clock()
            await _wait(self._wake, min(max(wait_s, 0.0), self.config.interval_s))


def _event(row: AlertRow, config: RuleConfig, now: float) -> Event | None:
    """What an alert whose condition still holds has to say now, if anything."""
    if row.fired_at is None:
        return "fired" if now - row.since >= config.after_min * 60 else None
    repeat_s = None if config.repeat_min is None else config.repeat_min * 60
    if repeat_s is not None and row.sent_at is not None and now - row.sent_at >= repeat_s:
        return "reminder"
    return None


def _whose(facts: Mapping[str, Any]) -> str:
    """The factory of the machine an alert names: the partner's, or the owner's own."""
    return str(facts["partner"] if "partner" in facts else facts["factory"])


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Until ``event`` is set or ``timeout_s`` has passed."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        pass
