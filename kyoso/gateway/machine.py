"""From polled values to samples: state derivation and edge accumulation, per machine.

A tracker holds what it last saw of one machine. Each poll closes the span since the
previous poll, attributing it to the state seen then (sample and hold: a transition
between polls shifts at most one poll period from one state to the next, and the errors
cancel over many transitions). A sample closes the interval since the previous sample:
state durations that sum to its length, counter deltas, and signal statistics. Time
without a successful read of the state is ``unknown``.

A sample closes at the end of every publish interval, and also early, when a poll sees the
state change: when the state at a poll differs from the state at the previous poll, the
tracker closes the sample at that poll's time (its readings included), so that the new
state is published at once rather than at the interval's end; the next sample starts
there, and samples still tile time. Against a flapping state, at most one sample per
``min_sample_s`` closes early: a change within it waits for the first poll after it, or
for the interval's end, whichever comes first (``min_sample_s`` None: no early closes).

Counters cannot lie: a device that answers once with 0, or with garbage, must not add a
million parts. Each counter keeps a baseline, the last *accepted* reading (the published
``total``), and books parts as follows (:class:`CounterTracker`):

- The first reading is the baseline and counts nothing.
- A reading at or ahead of the baseline, or past it across a rollover (baseline in the top
  quarter of the ``width_bits`` range, reading in the bottom quarter), counts the parts in
  between, if *plausible*: no more than ``max_parts_per_s`` times the seconds since the
  baseline was read, plus one part of slack for where the polls fall in the cycle. The
  rate is the counter's own ``max_parts_per_s`` or else :data:`RATE_TOLERANCE` parts per
  ideal cycle time of the machine; with neither, every step ahead is plausible.
- Any other reading is *held*, counting nothing: a drop (a suspected reset) or an
  implausible step ahead (refused, logged and counted in ``implausible``). The next
  reading settles it. If it is a plausible step ahead of the baseline, the held reading
  was a transient glitch and is ignored (1,000,000, 0, 1,000,001 counts 1). If it is a
  plausible step ahead of the held reading, that confirms it and becomes the baseline: a
  confirmed reset counts everything the counter shows, as it restarted from zero
  (1000, 3, 5 counts 5 when 5 is read), provided that is plausible since the old baseline
  (if not, it is refused but still taken as the baseline); a confirmed jump counts only
  the parts after it (10, 5000, 5002 counts 2). Otherwise the new reading is held in its
  place. Two readings in a row are the whole confirmation; the machine state is not
  consulted, as it comes from the same device as the glitch.

A sample lists a counter in ``missing`` when it was read during the interval but every
reading was held; a counter not read at all keeps its last total with a delta of 0 (its
parts are counted when it answers again).
"""

import logging
import math
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kyoso.contract import (
    MAX_COUNTER_DELTA,
    Counter,
    MachineState,
    Sample,
    ShiftCalendar,
    SignalStats,
)

from .config import CounterConfig, MachineRules, StateConfig, StateFromThreshold
from .modbus_decode import Value

log = logging.getLogger(__name__)

RATE_TOLERANCE = 1.5
"""How many times faster than its ideal cycle time a machine may count: actual cycles vary,
and a machine's ideal cycle time is not always its fastest."""

_NOT_PLANNED = {
    MachineState.IDLE: MachineState.PLANNED_STOP,
    MachineState.DOWN: MachineState.PLANNED_STOP,
}


def counter_delta(previous: int, raw: int, width_bits: int) -> int | None:
    """Parts counted from ``previous`` up to ``raw``, two readings of a counter register.

    A reading below the previous one is a rollover when the previous one was in the top
    quarter of the range and the new one in the bottom quarter; any other drop is None, a
    reset or a glitch that only the next reading can tell apart (see the module docstring).
    """
    if raw >= previous:
        return raw - previous
    modulus = 1 << width_bits
    if previous >= modulus * 3 // 4 and raw < modulus // 4:
        return raw + modulus - previous
    return None


@dataclass(frozen=True, slots=True)
class _Reading:
    """A counter's raw value and when it was read (epoch seconds)."""

    raw: int
    at: float


class CounterTracker:
    """One part counter's readings turned into parts that can be trusted; the rule is in the
    module docstring. ``max_parts_per_s`` None takes every step ahead as plausible."""

    def __init__(
        self, machine: str, name: str, *, width_bits: int, max_parts_per_s: float | None
    ) -> None:
        self.machine = machine
        self.name = name
        self.width_bits = width_bits
        self.max_parts_per_s = max_parts_per_s
        self.implausible = 0
        """Readings refused as further ahead than the rate allows."""
        self._baseline: _Reading | None = None
        self._held: _Reading | None = None

    @property
    def total(self) -> int | None:
        """The last accepted raw reading (None before the first one)."""
        return None if self._baseline is None else self._baseline.raw

    def read(self, raw: int, at: float) -> int | None:
        """Take a reading made at ``at`` (epoch seconds): the parts it books (0 for the first
        reading), or None when it is held and books nothing."""
        base = self._baseline
        if base is None:
            return self._accept(raw, at, 0)
        ahead = counter_delta(base.raw, raw, self.width_bits)
        if ahead is not None and self._plausible(ahead, at - base.at):
            return self._accept(raw, at, ahead)  # drops any held reading as a glitch
        held = self._held
        if held is not None:
            since = counter_delta(held.raw, raw, self.width_bits)
            if since is not None and self._plausible(since, at - held.at):
                if counter_delta(base.raw, held.raw, self.width_bits) is not None:
                    return self._accept(raw, at, since)  # a jump, confirmed
                if self._plausible(raw, at - base.at):
                    return self._accept(raw, at, raw)  # a reset, confirmed
                self._refuse(raw, base, raw, at)
                self._baseline, self._held = _Reading(raw, at), None
                return None
        if ahead is not None:
            self._refuse(ahead, base, raw, at)
        self._held = _Reading(raw, at)
        return None

    def _plausible(self, parts: int, elapsed_s: float) -> bool:
        """At most what the rate allows, and never more than a sample may carry."""
        rate = self.max_parts_per_s
        if parts > MAX_COUNTER_DELTA:
            return False
        return rate is None or parts <= rate * max(elapsed_s, 0.0) + 1

    def _accept(self, raw: int, at: float, parts: int) -> int:
        self._baseline, self._held = _Reading(raw, at), None
        return parts

    def _refuse(self, parts: int, base: _Reading, raw: int, at: float) -> None:
        self.implausible += 1
        rate = self.max_parts_per_s
        log.warning(
            "machine %s counter %s: %d -> %d in %.1f s would count %d parts, more than %s "
            "allow: not counted",
            self.machine,
            self.name,
            base.raw,
            raw,
            at - base.at,
            parts,
            "one sample may carry" if rate is None else f"{rate:.3g} parts/s",
        )


class StateDeriver:
    """Turns one poll's values into a state, following the machine's state rules."""

    def __init__(self, config: StateConfig, calendar: ShiftCalendar) -> None:
        self.config = config
        self.calendar = calendar
        self._current: MachineState | None = None
        self._pending: tuple[MachineState, float] | None = None

    def derive(self, values: Mapping[str, Value], at: float) -> MachineState:
        """The state at ``at`` (epoch seconds) given the values read then."""
        state = self._raw_state(values, at)
        alarm = self.config.alarm
        if alarm is not None and _number(values.get(alarm.field)):
            state = MachineState.DOWN
        if (
            self.config.planned_stops_from_calendar
            and state in _NOT_PLANNED
            and not self.calendar.is_planned(datetime.fromtimestamp(at, UTC))
        ):
            state = _NOT_PLANNED[state]
        return state

    def _raw_state(self, values: Mapping[str, Value], at: float) -> MachineState:
        rules = self.config
        if rules.from_code is not None:
            code = values.get(rules.from_code.field)
            if code is None or isinstance(code, str):
                return MachineState.UNKNOWN
            return rules.from_code.map.get(int(code), rules.from_code.otherwise)
        assert rules.from_threshold is not None
        value = values.get(rules.from_threshold.field)
        if value is None or isinstance(value, str):
            self._current = self._pending = None
            return MachineState.UNKNOWN
        return self._dwell(_level(rules.from_threshold, float(value), self._current), at)

    def _dwell(self, candidate: MachineState, at: float) -> MachineState:
        assert self.config.from_threshold is not None
        min_dwell = self.config.from_threshold.min_dwell_s
        if self._current is None or candidate == self._current or min_dwell == 0:
            self._current, self._pending = candidate, None
            return candidate
        if self._pending is None or self._pending[0] != candidate:
            self._pending = (candidate, at)
        if at - self._pending[1] >= min_dwell:
            self._current, self._pending = candidate, None
        return self._current


def _level(rules: StateFromThreshold, value: float, current: MachineState | None) -> MachineState:
    for level in rules.levels:
        slack = rules.hysteresis if level.state == current else 0.0
        if value >= level.above - slack:
            return level.state
    return rules.otherwise


def _number(value: Value | None) -> float:
    if value is None or isinstance(value, str):
        return 0.0
    return float(value)


@dataclass(slots=True)
class _Stats:
    last: float = 0.0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    count: int = 0

    def add(self, value: float) -> None:
        self.last = value
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.count += 1

    def summary(self) -> SignalStats:
        mean = min(max(self.total / self.count, self.low), self.high)
        return SignalStats(last=self.last, mean=mean, min=self.low, max=self.high, count=self.count)


@dataclass(slots=True)
class _Interval:
    durations: dict[MachineState, float] = field(default_factory=lambda: defaultdict(float))
    booked: dict[str, int] = field(default_factory=dict)
    """Parts per counter that had an accepted reading."""
    held: set[str] = field(default_factory=set)
    """Counters that had a held reading."""
    signals: dict[str, _Stats] = field(default_factory=lambda: defaultdict(_Stats))


class MachineTracker:
    """Accumulates one machine's polls into samples; see the module docstring."""

    def __init__(
        self,
        config: MachineRules,
        calendar: ShiftCalendar,
        start: float,
        *,
        min_sample_s: float | None = None,
    ) -> None:
        self.config = config
        self.min_sample_s = min_sample_s
        self.deriver = StateDeriver(config.state, calendar)
        self.state = MachineState.UNKNOWN
        self.alarm: int | None = None
        self._since = start
        self._sample_start = start
        self._counters = {
            name: CounterTracker(
                config.id,
                name,
                width_bits=counter.width_bits,
                max_parts_per_s=_max_parts_per_s(config, counter),
            )
            for name, counter in config.counters.items()
        }
        self._interval = _Interval()
        self._polled: MachineState | None = None
        """The state at the previous poll (None before the first)."""
        self._unreported = False
        """A poll saw the state change since the last sample closed."""
        self._early_at = -math.inf
        """When a sample last closed early."""

    @property
    def implausible(self) -> dict[str, int]:
        """Per counter, the readings refused as implausible since the tracker started."""
        return {name: counter.implausible for name, counter in self._counters.items()}

    def observe(
        self, at: float, values: Mapping[str, Value], missing: Collection[str]
    ) -> Sample | None:
        """Take one poll made at ``at``; ``missing`` names the fields it could not read.
        Return the sample it closed early, ending at ``at``, when the state changed (see the
        module docstring), else None."""
        self._advance(at)
        self.state = self.deriver.derive(values, at)
        alarm_rule = self.config.state.alarm
        if alarm_rule is not None:
            self.alarm = (
                int(_number(values.get(alarm_rule.field)))
                if alarm_rule.field not in missing
                else None
            )
        for name, counter in self.config.counters.items():
            raw = values.get(counter.field)
            if raw is None or isinstance(raw, str):
                continue
            parts = self._counters[name].read(int(raw), at)
            if parts is None:
                self._interval.held.add(name)
            else:
                self._interval.booked[name] = self._interval.booked.get(name, 0) + parts
        for name in self.config.signals:
            value = values.get(name)
            if value is not None and not isinstance(value, str):
                self._interval.signals[name].add(float(value))
        return self._close_on_change(at)

    def _close_on_change(self, at: float) -> Sample | None:
        if self.min_sample_s is None:
            return None
        previous, self._polled = self._polled, self.state
        self._unreported |= previous is not None and previous != self.state
        if not self._unreported or at - self._early_at < self.min_sample_s:
            return None
        sample = self.sample(at)
        if sample is not None:
            self._early_at = at
        return sample

    def sample(self, end: float) -> Sample | None:
        """Close the interval at ``end`` and return its sample (None if it is empty)."""
        self._advance(end)
        length = end - self._sample_start
        if length <= 0:
            return None
        interval, self._interval = self._interval, _Interval()
        counters = {
            name: Counter(delta=interval.booked.get(name, 0), total=counter.total)
            for name, counter in self._counters.items()
            if counter.total is not None
            and (name in interval.booked or name not in interval.held)
            and interval.booked.get(name, 0) <= MAX_COUNTER_DELTA  # else missing, never a crash
        }
        signals = {name: stats.summary() for name, stats in interval.signals.items() if stats.count}
        missing = sorted(
            {n for n in self.config.counters if n not in counters}
            | {n for n in self.config.signals if n not in signals}
        )
        sample = Sample(
            machine=self.config.id,
            seq=0,
            ts=datetime.fromtimestamp(end, UTC),
            interval_s=length,
            state=self.state,
            durations_s=_fit(interval.durations, length),
            counters=counters,
            signals=signals,
            alarm=self.alarm,
            missing=missing,
        )
        self._sample_start = end
        self._unreported = False
        return sample

    def _advance(self, at: float) -> None:
        if at > self._since:
            self._interval.durations[self.state] += at - self._since
            self._since = at


def _max_parts_per_s(machine: MachineRules, counter: CounterConfig) -> float | None:
    """The counter's own rate, or :data:`RATE_TOLERANCE` parts per ideal cycle time."""
    if counter.max_parts_per_s is not None:
        return counter.max_parts_per_s
    if machine.ideal_cycle_time_s is not None:
        return RATE_TOLERANCE / machine.ideal_cycle_time_s
    return None


def _fit(durations: Mapping[MachineState, float], length: float) -> dict[MachineState, float]:
    """Durations rounded to the microsecond, summing to ``length`` despite float rounding."""
    fitted = {state: round(seconds, 6) for state, seconds in durations.items() if seconds > 0}
    if fitted:
        largest = max(fitted, key=fitted.__getitem__)
        fitted[largest] = round(fitted[largest] + length - math.fsum(fitted.values()), 6)
    return fitted
