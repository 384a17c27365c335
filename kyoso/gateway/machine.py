"""From polled values to samples: state derivation and edge accumulation, per machine.

A tracker holds what it last saw of one machine. Each poll closes the span since the
previous poll, attributing it to the state seen then (sample and hold: a transition
between polls shifts at most one poll period from one state to the next, and the errors
cancel over many transitions). A sample closes the interval since the previous sample:
state durations that sum to its length, counter deltas with rollover and reset handled,
and signal statistics. Time without a successful read of the state is ``unknown``.
"""

import math
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kyoso.contract import Counter, MachineState, Sample, ShiftCalendar, SignalStats

from .config import MachineConfig, StateConfig, StateFromThreshold
from .modbus_decode import Value

_NOT_PLANNED = {
    MachineState.IDLE: MachineState.PLANNED_STOP,
    MachineState.DOWN: MachineState.PLANNED_STOP,
}


def counter_delta(previous: int | None, raw: int, width_bits: int) -> int:
    """Parts counted between two raw readings of a counter register.

    The first reading counts nothing. A reading below the previous one is a rollover when
    the previous one was in the top quarter of the range and the new one in the bottom
    quarter; otherwise the counter was reset, and it counted ``raw`` since.
    """
    if previous is None:
        return 0
    if raw >= previous:
        return raw - previous
    modulus = 1 << width_bits
    if previous >= modulus * 3 // 4 and raw < modulus // 4:
        return raw + modulus - previous
    return raw


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
    deltas: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    signals: dict[str, _Stats] = field(default_factory=lambda: defaultdict(_Stats))


class MachineTracker:
    """Accumulates one machine's polls into samples; see the module docstring."""

    def __init__(self, config: MachineConfig, calendar: ShiftCalendar, start: float) -> None:
        self.config = config
        self.deriver = StateDeriver(config.state, calendar)
        self.state = MachineState.UNKNOWN
        self.alarm: int | None = None
        self._since = start
        self._sample_start = start
        self._raw: dict[str, int | None] = dict.fromkeys(config.counters)
        self._interval = _Interval()

    def observe(self, at: float, values: Mapping[str, Value], missing: Collection[str]) -> None:
        """Take one poll made at ``at``; ``missing`` names the fields it could not read."""
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
            raw = int(raw)
            self._interval.deltas[name] += counter_delta(self._raw[name], raw, counter.width_bits)
            self._raw[name] = raw
        for name in self.config.signals:
            value = values.get(name)
            if value is not None and not isinstance(value, str):
                self._interval.signals[name].add(float(value))

    def sample(self, end: float) -> Sample | None:
        """Close the interval at ``end`` and return its sample (None if it is empty)."""
        self._advance(end)
        length = end - self._sample_start
        if length <= 0:
            return None
        interval, self._interval = self._interval, _Interval()
        counters = {
            name: Counter(delta=interval.deltas[name], total=self._raw[name])
            for name in self.config.counters
            if self._raw[name] is not None
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
        return sample

    def _advance(self, at: float) -> None:
        if at > self._since:
            self._interval.durations[self.state] += at - self._since
            self._since = at


def _fit(durations: Mapping[MachineState, float], length: float) -> dict[MachineState, float]:
    """Durations rounded to the microsecond, summing to ``length`` despite float rounding."""
    fitted = {state: round(seconds, 6) for state, seconds in durations.items() if seconds > 0}
    if fitted:
        largest = max(fitted, key=fitted.__getitem__)
        fitted[largest] = round(fitted[largest] + length - math.fsum(fitted.values()), 6)
    return fitted
