"""Reading MTConnect agents: one :class:`MtconnectSource` per device of an agent.

The source follows the agent's buffer by sequence number, as the standard intends: one
``/current`` to learn every data item's value and the ``nextSequence``, then each poll a
``/sample?from=nextSequence`` that returns only what changed. The device's state is the
last observation of each data item, so nothing is ever counted twice, and the source
resynchronises from ``/current`` whenever continuity is lost:

- the agent restarted (a new ``instanceId``): its sequence numbers start again;
- the source fell behind the buffer (``OUT_OF_RANGE``, or a ``firstSequence`` past the
  one asked for): the changes in between are gone, and ``/current`` has their outcome.

A part counter comes as the agent's cumulative ``PartCount``; the gateway's counter
tracker (kyoso/gateway/machine.py) turns readings into parts, so a resync reads the same
total again and counts nothing.

What it promises, as the Modbus source does: a value that cannot be read is *missing* with
a reason (``UNAVAILABLE``, agent unreachable, timeout, agent error, invalid document), never
carried over from a poll that failed; every request is bounded by ``timeout_s``, so a dead
agent delays only its own machines; after ``failures_to_open`` failed polls in a row a
circuit breaker answers "circuit open" at once until ``open_s`` has passed, then one trial
decides; the next poll after a failure starts again from ``/current``, so the source
reconnects by itself.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Self
from urllib.parse import quote

import httpx

from .breaker import CircuitBreaker
from .modbus_decode import Value
from .mtconnect_xml import (
    CONDITION_LEVELS,
    DEFAULT_MAPS,
    UNAVAILABLE,
    MtconnectAgentError,
    MtconnectConfig,
    MtconnectError,
    MtconnectFieldConfig,
    Observation,
    Streams,
    camel,
    number,
    parse_streams,
    state_code,
)
from .source import Missing, Polled

log = logging.getLogger(__name__)


class MtconnectMissingReason(StrEnum):
    """Why a field has no value in a poll."""

    UNAVAILABLE = "unavailable"
    NOT_FOUND = "no such data item"
    AMBIGUOUS = "ambiguous data item"
    UNMAPPED = "value not mapped"
    TIMEOUT = "timeout"
    CONNECTION = "agent unreachable"
    HTTP = "http error"
    AGENT_ERROR = "agent error"
    INVALID_DOCUMENT = "invalid document"
    CIRCUIT_OPEN = "circuit open"


@dataclass(slots=True)
class MtconnectStats:
    """Counters of one source, for metrics and tests; they only grow."""

    polls: int = 0
    requests: int = 0
    resyncs: int = 0
    """Reads of /current: the first, and one after each loss of continuity."""
    restarts: int = 0
    """New instanceIds seen: the agent restarted."""
    overruns: int = 0
    """Polls that fell behind the agent's buffer."""
    observations: int = 0
    """Observations of /sample applied; each sequence number at most once."""
    errors: Counter[str] = field(default_factory=Counter)
    circuit_opens: int = 0


class _PollFailedError(Exception):
    """A request that left the device's state unknown; from an agent's error document, its
    codes and instanceId."""

    def __init__(self, missing: Missing, error: MtconnectAgentError | None = None) -> None:
        super().__init__(str(missing))
        self.missing = missing
        self.codes = error.codes if error is not None else ()
        self.instance_id = error.instance_id if error is not None else None


class MtconnectSource:
    """One device of an MTConnect agent as a :class:`~kyoso.gateway.source.Source`; see
    the module docstring for what it promises. Polls run one at a time."""

    def __init__(
        self, config: MtconnectConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.stats = MtconnectStats()
        self.breaker = CircuitBreaker.configured(config, clock)
        self.name = config.base + (f"/{config.device}" if config.device else "")
        self._client = httpx.AsyncClient(timeout=config.timeout_s)
        self._polling = asyncio.Lock()
        self._instance: str | None = None
        self._next: int | None = None
        """Sequence number of the next observation to ask for; None: resync first."""
        self._latest: dict[str, Observation] = {}
        """The last observation of each data item (a condition's: its last activation)."""
        self._conditions: dict[str, dict[str, Observation]] = {}
        """Conditions: each data item's active activations by native code."""

    async def poll(self) -> Polled:
        """Bring the device's state up to date and read every field; never raises for an
        agent fault."""
        async with self._polling:
            self.stats.polls += 1
            if not self.breaker.allow():
                left = Missing(
                    MtconnectMissingReason.CIRCUIT_OPEN, f"{self.breaker.remaining_s():.1f} s left"
                )
                self.stats.errors["circuit_open"] += 1
                return Polled({}, dict.fromkeys(self.config.fields, left))
            try:
                await self._update()
            except _PollFailedError as failure:
                self._failed(failure.missing)
                return Polled({}, dict.fromkeys(self.config.fields, failure.missing))
            self.breaker.success()
            return self._read()

    def _failed(self, missing: Missing) -> None:
        self._next = None  # continuity is not known any more: start again from /current
        self.stats.errors[missing.reason.name.lower()] += 1
        if self.breaker.failure():
            self.stats.circuit_opens += 1
            log.warning(
                "mtconnect %s: circuit open after %d failed polls (last: %s); trial in %g s",
                self.name,
                self.breaker.failures,
                missing,
                self.config.open_s,
            )

    async def _update(self) -> None:
        if self._next is None:
            await self._resync()
            return
        query = {"from": str(self._next), "count": str(self.config.sample_count)}
        try:
            streams = await self._fetch("sample", query)
        except _PollFailedError as failure:
            if "OUT_OF_RANGE" not in failure.codes:
                raise
            await self._lost(failure.instance_id)
            return
        header = streams.header
        if header.instance_id != self._instance or header.first_sequence > self._next:
            await self._lost(header.instance_id)
            return
        for observation in streams.observations:
            if observation.sequence >= self._next:
                self._apply(observation)
                self.stats.observations += 1
        self._next = max(self._next, header.next_sequence)

    async def _lost(self, instance_id: str | None) -> None:
        """Continuity is lost: the agent restarted, or this source fell behind its buffer."""
        if instance_id is not None and instance_id != self._instance:
            self.stats.restarts += 1
            log.warning("mtconnect %s: agent restarted (instance %s)", self.name, instance_id)
        else:
            self.stats.overruns += 1
            log.warning("mtconnect %s: fell behind the agent's buffer", self.name)
        await self._resync()

    async def _resync(self) -> None:
        streams = await self._fetch("current", {})
        self.stats.resyncs += 1
        self._latest.clear()
        self._conditions.clear()
        for observation in streams.observations:
            self._apply(observation)
        self._instance = streams.header.instance_id
        self._next = streams.header.next_sequence

    async def _fetch(self, request: str, query: Mapping[str, str]) -> Streams:
        """GET ``request`` of the device, parsed; raises :class:`_PollFailedError` if not."""
        device = f"/{quote(self.config.device, safe='')}" if self.config.device else ""
        url = f"{self.config.base}{device}/{request}"
        self.stats.requests += 1
        try:
            async with asyncio.timeout(self.config.timeout_s):
                response = await self._client.get(url, params=query)
        except TimeoutError as exc:
            raise _PollFailedError(
                Missing(
                    MtconnectMissingReason.TIMEOUT, f"no answer within {self.config.timeout_s:g} s"
                )
            ) from exc
        except httpx.TimeoutException as exc:
            raise _PollFailedError(
                Missing(MtconnectMissingReason.TIMEOUT, str(exc) or "timeout")
            ) from exc
        except httpx.HTTPError as exc:
            detail = f"{url}: {exc}" if str(exc) else url
            raise _PollFailedError(Missing(MtconnectMissingReason.CONNECTION, detail)) from exc
        try:
            streams = parse_streams(response.content, self.config.device)
        except MtconnectAgentError as exc:
            missing = Missing(MtconnectMissingReason.AGENT_ERROR, str(exc))
            raise _PollFailedError(missing, exc) from exc
        except MtconnectError as exc:
            if response.is_error:
                detail = f"HTTP {response.status_code} from {url}"
                raise _PollFailedError(Missing(MtconnectMissingReason.HTTP, detail)) from exc
            raise _PollFailedError(
                Missing(MtconnectMissingReason.INVALID_DOCUMENT, str(exc))
            ) from exc
        if len(streams.devices) != 1:  # a device the agent ignored, or several without one
            detail = f"{url} streams devices {list(streams.devices)}: give one in `device`"
            raise _PollFailedError(Missing(MtconnectMissingReason.NOT_FOUND, detail))
        return streams

    def _apply(self, observation: Observation) -> None:
        self._latest[observation.data_item_id] = observation
        if observation.category != "CONDITION":
            return
        active = self._conditions.setdefault(observation.data_item_id, {})
        level, code = observation.value, observation.native_code
        if level == "Normal":  # clears its native code, or without one the whole item
            if code:
                active.pop(code, None)
            else:
                active.clear()
            return
        if level == "Unavailable" or not code:
            active.clear()
        else:
            active.pop("", None)  # an activation replaces Unavailable or a code-less one
        active[code] = observation

    # -- reading fields --------------------------------------------------------------------

    def _read(self) -> Polled:
        values: dict[str, Value] = {}
        missing: dict[str, Missing] = {}
        for name, spec in self.config.fields.items():
            result = self._field(spec)
            if isinstance(result, Missing):
                missing[name] = result
            else:
                values[name] = result
        return Polled(values, missing)

    def _field(self, spec: MtconnectFieldConfig) -> Value | Missing:
        if spec.preset in ("faults", "fault_code"):
            faults = self._active_faults(spec.conditions)
            if isinstance(faults, Missing) or spec.preset == "faults":
                return faults if isinstance(faults, Missing) else len(faults)
            return _fault_code(faults)
        if spec.preset == "state":
            return self._state(spec)
        assert spec.data_item is not None  # the configuration has a data item or a preset
        found = self._find(spec.data_item)
        if isinstance(found, Missing):
            return found
        if found.category == "CONDITION":
            return self._condition_level(found.data_item_id)
        return self._value(found, spec.map)

    def _find(self, ref: str) -> Observation | Missing:
        """The last observation of the data item ``ref`` names: its id, else its name, else
        its type (``PartCount`` or ``PART_COUNT``) when the device has one data item of that
        type."""
        for key in ("id", "name", "type"):
            wanted = camel(ref) if key == "type" else ref
            matches = [o for o in self._latest.values() if _key(o, key) == wanted]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                ids = sorted(o.data_item_id for o in matches)
                return Missing(MtconnectMissingReason.AMBIGUOUS, f"{ref!r} names {ids}: give an id")
        return Missing(MtconnectMissingReason.NOT_FOUND, f"{ref!r} is not in the device's stream")

    def _value(
        self, found: Observation, table: Mapping[str, int | float] | None
    ) -> Value | Missing:
        if found.value == UNAVAILABLE:
            return Missing(MtconnectMissingReason.UNAVAILABLE, found.data_item_id)
        table = table if table is not None else DEFAULT_MAPS.get(found.type)
        if table is not None:
            if found.value in table:
                return table[found.value]
            return Missing(
                MtconnectMissingReason.UNMAPPED, f"{found.data_item_id} is {found.value!r}"
            )
        value = number(found.value)
        if value is None:
            return Missing(
                MtconnectMissingReason.UNMAPPED,
                f"{found.data_item_id} is {found.value!r}, not a number: give a map",
            )
        return value

    def _condition_level(self, item: str) -> Value | Missing:
        active = self._conditions.get(item, {})
        levels = {o.value for o in active.values()}
        if "Unavailable" in levels:
            return Missing(MtconnectMissingReason.UNAVAILABLE, item)
        return max((CONDITION_LEVELS.get(level, 0) for level in levels), default=0)

    def _active_faults(self, conditions: list[str] | None) -> list[Observation] | Missing:
        """The active Fault conditions of the data items ``conditions`` names (all of the
        device's by default); missing while one of them is Unavailable."""
        items = list(self._conditions) if conditions is None else []
        for ref in conditions or []:
            found = self._find(ref)
            if isinstance(found, Missing):
                return found
            items.append(found.data_item_id)
        faults = []
        for item in items:
            active = self._conditions.get(item, {})
            if any(o.value == "Unavailable" for o in active.values()):
                return Missing(MtconnectMissingReason.UNAVAILABLE, item)
            faults += [o for o in active.values() if o.value == "Fault"]
        return faults

    def _state(self, spec: MtconnectFieldConfig) -> Value | Missing:
        availability = self._find("Availability")
        if isinstance(availability, Observation) and availability.value == UNAVAILABLE:
            return Missing(MtconnectMissingReason.UNAVAILABLE, availability.data_item_id)
        execution = self._find(spec.execution)
        if isinstance(execution, Missing):
            return execution
        if execution.value == UNAVAILABLE:
            return Missing(MtconnectMissingReason.UNAVAILABLE, execution.data_item_id)
        mode = self._find(spec.controller_mode)
        code = state_code(execution.value, mode.value if isinstance(mode, Observation) else None)
        if code is None:
            return Missing(
                MtconnectMissingReason.UNMAPPED,
                f"{execution.data_item_id} is {execution.value!r}",
            )
        return code

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _key(observation: Observation, key: str) -> str | None:
    if key == "id":
        return observation.data_item_id
    return observation.name if key == "name" else observation.type


def _fault_code(faults: list[Observation]) -> Value | Missing:
    """The ``fault_code`` preset: the latest active Fault's nativeCode, 0 with none."""
    if not faults:
        return 0
    latest = max(faults, key=lambda o: o.sequence)
    code = number(latest.native_code)
    if code is None:
        return Missing(
            MtconnectMissingReason.UNMAPPED,
            f"{latest.data_item_id}'s nativeCode {latest.native_code!r} is not a number",
        )
    return code
