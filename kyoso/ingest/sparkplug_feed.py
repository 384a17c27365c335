"""One Kyoso machine fed by Sparkplug metrics, on the clock of the metrics' timestamps.

A Sparkplug edge node reports by exception: a metric arrives when it changes, stamped with
when it changed, and a value holds until the next one. A :class:`MachineFeed` keeps the
machine's current field values and hands every change to the gateway's own
:class:`~kyoso.gateway.machine.MachineTracker` as a poll made at the change's timestamp, so
state durations, counter deltas and signal statistics are those of the edge's clock, not of
when the messages happened to arrive.

Changes are applied in timestamp order once the host's watermark (its clock minus
``late_s``) passes them: until then they wait, sorted, so a payload's metrics, historical
ones (store and forward) included, are taken in order whatever order they came in. A change
stamped before what the machine already applied is *late*: refused, counted, never applied
twice. While the machine is tracked (from its first change to its node's death), samples
close on every ``interval_s`` boundary of the epoch the watermark passes, silence included.
A node's death ends the tracking with a last sample at the death's time; the next change
starts it again, with fresh counter baselines (as a restarted gateway does).
"""

import heapq
import itertools
import math
from collections.abc import Mapping

from kyoso.contract import Sample, ShiftCalendar
from kyoso.gateway.machine import MachineTracker
from kyoso.gateway.modbus_decode import Value

from .sparkplug_config import SparkplugMachineConfig

__all__ = ["MachineFeed"]

_Event = tuple[float, int, Mapping[str, Value | None] | None]
"""(when, arrival order, field changes; None: the end of tracking)."""


class MachineFeed:
    """A machine's Sparkplug metrics turned into samples; see the module docstring."""

    def __init__(
        self, config: SparkplugMachineConfig, calendar: ShiftCalendar, interval_s: float
    ) -> None:
        self.config = config
        self.calendar = calendar
        self.interval_s = interval_s
        self.values: dict[str, Value] = {}
        self.applied_until = -math.inf
        """The last change applied or sample closed: a change stamped before it is late."""
        self._tracker: MachineTracker | None = None
        self._boundary = math.inf
        self._events: list[_Event] = []
        self._order = itertools.count()

    @property
    def tracked(self) -> bool:
        """Between a first change and the end of tracking (its node's death)."""
        return self._tracker is not None

    def change(self, at: float, fields: Mapping[str, Value | None]) -> bool:
        """Queue field changes made at ``at`` (epoch seconds; None: the field has no value
        now); False, and nothing queued, when they are late."""
        if at < self.applied_until:
            return False
        heapq.heappush(self._events, (at, next(self._order), dict(fields)))
        return True

    def end(self, at: float) -> None:
        """Queue the end of tracking at ``at`` (not before what was applied)."""
        heapq.heappush(self._events, (max(at, self.applied_until), next(self._order), None))

    def advance(self, watermark: float) -> list[Sample]:
        """Apply the changes stamped up to ``watermark`` in order, and return the samples
        that closed on the way (``seq`` 0: the caller numbers them)."""
        samples: list[Sample] = []
        while self._events and self._events[0][0] <= watermark:
            at, _, fields = heapq.heappop(self._events)
            if at < self.applied_until:  # queued before a later change was applied
                continue
            samples += self._close_until(at)
            self.applied_until = at
            if fields is None:
                samples += self._finish(at)
            else:
                self._apply(at, fields)
        return samples + self._close_until(watermark)

    def _apply(self, at: float, fields: Mapping[str, Value | None]) -> None:
        for name, value in fields.items():
            if value is None:
                self.values.pop(name, None)
            else:
                self.values[name] = value
        tracker = self._tracker
        if tracker is None:
            tracker = self._tracker = MachineTracker(self.config, self.calendar, at)
            self._boundary = (math.floor(at / self.interval_s) + 1) * self.interval_s
        missing = [name for name in self.config.wanted_fields if name not in self.values]
        tracker.observe(at, self.values, missing)

    def _finish(self, at: float) -> list[Sample]:
        tracker, self._tracker = self._tracker, None
        self.values.clear()
        self._boundary = math.inf
        if tracker is None:
            return []
        sample = tracker.sample(at)
        return [] if sample is None else [sample]

    def _close_until(self, until: float) -> list[Sample]:
        samples: list[Sample] = []
        while self._tracker is not None and self._boundary <= until:
            sample = self._tracker.sample(self._boundary)
            if sample is not None:
                samples.append(sample)
            self.applied_until = max(self.applied_until, self._boundary)
            self._boundary += self.interval_s
        return samples
