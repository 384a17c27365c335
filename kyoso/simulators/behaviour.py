"""The seeded behaviour model of a simulated machine, and its ground truth.

A machine works only in the planned busy time of its shift calendar. There it cycles
through jobs: an idle gap (exponential), a setup (uniform), then parts at the cycle time,
interrupted by minor stops and breakdowns whose arrivals are exponential in running time.
Every phase consumes planned time only, so a job interrupted by the end of a shift goes on
at the start of the next, and long-run shares of each state follow from renewal-reward
theory (:func:`expected_shares`).

The model is generated event by event from its own random stream, so its timeline depends
only on the seed: never on how often or how far anyone advances it. Segments tile the
simulated time with no gap and no overlap; they are the ground truth every derived figure
is checked against.
"""

import bisect
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from kyoso.contract import MachineState, ShiftCalendar

from .config import BehaviourConfig

COUNTER_MODULUS = 2**32
"""Part counters are 32-bit registers and roll over."""

_PLANNING_CHUNK = timedelta(days=7)
_PART_TOLERANCE = 1e-6
"""Share of a cycle by which float rounding may miss a part's completion."""


@dataclass(frozen=True, slots=True)
class Segment:
    """An interval ``[start, end)`` of one state, in epoch seconds (UTC).

    Parts completed in the segment finish at ``first_part + i * cycle_s`` for
    ``i in range(parts)``; ``rejects`` holds the indices ``i`` that were scrap.
    """

    start: float
    end: float
    state: MachineState
    alarm: int = 0
    parts: int = 0
    first_part: float = 0.0
    cycle_s: float = 0.0
    rejects: tuple[int, ...] = ()

    def parts_until(self, moment: float) -> tuple[int, int]:
        """(good, reject) parts of this segment completed at or before ``moment``."""
        if self.parts == 0 or moment < self.first_part:
            return 0, 0
        done = min(self.parts, int((moment - self.first_part) / self.cycle_s + _PART_TOLERANCE) + 1)
        rejects = bisect.bisect_left(self.rejects, done)
        return done - rejects, rejects


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a machine's controller shows at one moment."""

    at: float
    state: MachineState
    alarm: int
    good_total: int
    reject_total: int
    good_counter: int
    """Raw 32-bit good-part counter register (rolled over, reset daily if configured)."""
    reject_counter: int
    load_pct: float
    power_kw: float
    current_a: float


def machine_seed(factory_seed: int, machine: str) -> int:
    """A stable per-machine seed, independent of the order machines are listed in."""
    digest = hashlib.sha256(f"{factory_seed}:{machine}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class MachineModel:
    """Generates a machine's timeline lazily from ``origin`` on; see the module docstring."""

    def __init__(
        self,
        machine: str,
        behaviour: BehaviourConfig,
        calendar: ShiftCalendar,
        seed: int,
        origin: float,
        *,
        counter_start: int = 0,
        counter_reset_daily: bool = False,
    ) -> None:
        self.machine = machine
        self.behaviour = behaviour
        self.calendar = calendar
        self.origin = origin
        self.segments: list[Segment] = []
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._good_before: list[int] = [0]
        self._reject_before: list[int] = [0]
        self._rng = random.Random(seed)
        self._counter_start = counter_start
        self._zone = ZoneInfo(calendar.timezone) if counter_reset_daily else None
        self._events = self._generate()

    # -- generation -------------------------------------------------------------------

    def advance(self, until: float) -> None:
        """Generate segments until they cover ``until``."""
        while not self.segments or self.segments[-1].end <= until:
            self._append(next(self._events))

    def _append(self, segment: Segment) -> None:
        good, rejects = segment.parts_until(segment.end)
        self.segments.append(segment)
        self._starts.append(segment.start)
        self._ends.append(segment.end)
        self._good_before.append(self._good_before[-1] + good)
        self._reject_before.append(self._reject_before[-1] + rejects)

    def _planned(self) -> Iterator[tuple[float, float]]:
        """Planned busy intervals from the origin on, forever."""
        chunk_start = datetime.fromtimestamp(self.origin, UTC)
        while True:
            chunk_end = chunk_start + _PLANNING_CHUNK
            intervals = self.calendar.planned_intervals(chunk_start, chunk_end)
            for a, b in intervals:
                yield a.timestamp(), b.timestamp()
            if not intervals:
                # A week without work: an empty interval at its end lets the timeline
                # advance through it as a planned stop.
                yield chunk_end.timestamp(), chunk_end.timestamp()
            chunk_start = chunk_end

    def _generate(self) -> Iterator[Segment]:
        """The timeline, segment by segment."""
        work = _Work(self.behaviour, self._rng)
        now = self.origin
        for begin, end in _joined(self._planned()):
            if begin > now:
                yield Segment(now, begin, MachineState.PLANNED_STOP)
                now = begin
            while now < end:
                now, segment = work.step(now, end)
                if segment is not None:
                    yield segment

    # -- queries ------------------------------------------------------------------------

    def segment_at(self, moment: float) -> Segment:
        """The segment containing ``moment`` (at or after the origin)."""
        if moment < self.origin:
            raise ValueError("moment before the simulation origin")
        self.advance(moment)
        return self.segments[bisect.bisect_right(self._starts, moment) - 1]

    def totals_at(self, moment: float) -> tuple[int, int]:
        """(good, reject) parts completed from the origin up to ``moment`` inclusive."""
        self.advance(moment)
        index = bisect.bisect_right(self._starts, moment) - 1
        good, rejects = self.segments[index].parts_until(moment)
        return self._good_before[index] + good, self._reject_before[index] + rejects

    def snapshot(self, moment: float) -> Snapshot:
        """The controller's view at ``moment``: state, alarm, counters and signals."""
        segment = self.segment_at(moment)
        good, rejects = self.totals_at(moment)
        good_counter, reject_counter = self._raw_counters(moment, good, rejects)
        load, power, current = _signals(segment.state, moment)
        return Snapshot(
            at=moment,
            state=segment.state,
            alarm=segment.alarm,
            good_total=good,
            reject_total=rejects,
            good_counter=good_counter,
            reject_counter=reject_counter,
            load_pct=load,
            power_kw=power,
            current_a=current,
        )

    def _raw_counters(self, moment: float, good: int, rejects: int) -> tuple[int, int]:
        if self._zone is None:
            base_good = base_rejects = 0
            offset = self._counter_start
        else:
            local = datetime.fromtimestamp(moment, self._zone)
            midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=self._zone)
            reset_at = max(midnight.timestamp(), self.origin)
            # Parts that finish exactly at midnight belong to the day before.
            base_good, base_rejects = self.totals_at(reset_at)
            offset = self._counter_start if reset_at == self.origin else 0
            if reset_at == self.origin:
                base_good = base_rejects = 0
        return (
            (offset + good - base_good) % COUNTER_MODULUS,
            (offset + rejects - base_rejects) % COUNTER_MODULUS,
        )

    def completed(self, until: float) -> list[Segment]:
        """The segments that have ended at or before ``until``."""
        self.advance(until)
        return self.segments[: bisect.bisect_right(self._ends, until)]


class _Phase(StrEnum):
    IDLE = "idle"
    SETUP = "setup"
    RUNNING = "running"
    DOWN = "down"


class _Work:
    """A machine's work between segments, spending planned time only.

    It draws from the random stream in a fixed order, so the timeline depends on the seed
    alone.
    """

    def __init__(self, behaviour: BehaviourConfig, rng: random.Random) -> None:
        self.b = behaviour
        self.rng = rng
        self.phase = _Phase.IDLE
        self.remaining = self._idle_gap()
        self.parts_left = 0
        self.cycle = behaviour.cycle_time_s
        self.progress = 0.0  # running seconds into the current part
        self.alarm = 0
        self.to_breakdown = self.to_micro = math.inf

    def step(self, now: float, end: float) -> tuple[float, Segment | None]:
        """Work from ``now`` until the phase ends or ``end``: (new now, segment or None)."""
        if self.phase is _Phase.RUNNING:
            return self._run(now, end)
        stop, self.remaining = _spend(now, self.remaining, end)
        segment = None
        if stop > now:
            alarm = self.alarm if self.phase is _Phase.DOWN else 0
            segment = Segment(now, stop, MachineState(self.phase.value), alarm)
        if self.remaining <= 0:
            if self.phase is _Phase.IDLE:
                self.phase, self.remaining = _Phase.SETUP, self.rng.uniform(*self.b.setup_s)
                self.parts_left = self.rng.randint(*self.b.job_parts)
                self.cycle = self.b.cycle_time_s * self.rng.uniform(0.95, 1.05)
                self.progress = 0.0
            else:
                self._start_running()
        return stop, segment

    def _idle_gap(self) -> float:
        return self.rng.expovariate(1 / self.b.idle_gap_s) if self.b.idle_gap_s > 0 else 0.0

    def _start_running(self) -> None:
        # Exponential arrivals are memoryless: drawing afresh at each start is exact.
        self.phase = _Phase.RUNNING
        self.to_breakdown = self.rng.expovariate(1 / (self.b.mtbf_h * 3600))
        rate = self.b.micro_stops_per_h / 3600
        self.to_micro = self.rng.expovariate(rate) if rate > 0 else math.inf

    def _run(self, now: float, end: float) -> tuple[float, Segment | None]:
        cycle = self.cycle
        run = min(self.parts_left * cycle - self.progress, self.to_breakdown, self.to_micro)
        run = min(run, end - now)
        stop = now + run
        done = min(self.parts_left, int((run + self.progress) / cycle + _PART_TOLERANCE))
        rejects = tuple(i for i in range(done) if self.rng.random() < self.b.scrap_rate)
        segment = None
        if stop > now:
            first = now + (cycle - self.progress)
            segment = Segment(now, stop, MachineState.RUNNING, 0, done, first, cycle, rejects)
        self.parts_left -= done
        self.progress = (self.progress + run) - done * cycle
        self.to_breakdown -= run
        self.to_micro -= run
        if self.parts_left <= 0:
            self.phase, self.remaining = _Phase.IDLE, self._idle_gap()
        elif self.to_breakdown <= 0:
            self.phase, self.alarm = _Phase.DOWN, self.rng.choice(self.b.alarm_codes)
            self.remaining = self.rng.expovariate(1 / (self.b.mttr_min * 60))
        elif self.to_micro <= 0:
            self.phase, self.alarm = _Phase.DOWN, self.b.micro_stop_alarm
            self.remaining = self.rng.uniform(*self.b.micro_stop_s)
        # Otherwise the planned interval ended mid-job: the job goes on in the next one.
        return stop, segment


def _spend(now: float, remaining: float, end: float) -> tuple[float, float]:
    """Spend ``remaining`` seconds from ``now`` but not past ``end``: (new now, remaining).

    Compared as absolute times, so that a remainder below the float resolution of an
    epoch timestamp ends the phase instead of looping forever.
    """
    target = now + remaining
    if target <= end:
        return max(target, now), 0.0
    return end, target - end


def _joined(intervals: Iterator[tuple[float, float]]) -> Iterator[tuple[float, float]]:
    """Join intervals that touch (a shift ending where the next chunk or shift begins).

    A joined interval is given out once it spans a planning chunk, even if the next one
    touches it: a calendar without any gap (24/7) would otherwise be joined for ever. The
    work goes on across the cut unchanged (no planned stop lies between the two)."""
    limit = _PLANNING_CHUNK.total_seconds()
    current: tuple[float, float] | None = None
    for a, b in intervals:
        if current is not None and a <= current[1] and current[1] - current[0] < limit:
            current = (current[0], max(current[1], b))
            continue
        if current is not None:
            yield current
        current = (a, b)
    if current is not None:
        yield current


_SIGNAL_LEVELS: dict[MachineState, tuple[float, float, float]] = {
    # load %, power kW, current A (means)
    MachineState.RUNNING: (62.0, 9.5, 14.0),
    MachineState.SETUP: (8.0, 2.2, 4.0),
    MachineState.IDLE: (0.0, 1.1, 1.5),
    MachineState.DOWN: (0.0, 0.3, 0.4),
    MachineState.PLANNED_STOP: (0.0, 0.0, 0.0),
    MachineState.UNKNOWN: (0.0, 0.0, 0.0),
}


def nominal_power_kw(state: MachineState) -> float:
    """Mean electrical power drawn in ``state``, around which the power signal wobbles."""
    return _SIGNAL_LEVELS[state][1]


def _signals(state: MachineState, moment: float) -> tuple[float, float, float]:
    """Smooth, deterministic signal values around each state's level."""
    load, power, current = _SIGNAL_LEVELS[state]
    wobble = math.sin(moment / 7.0) * 0.08 + math.sin(moment / 2.3) * 0.04
    return (
        round(load * (1 + wobble), 3),
        round(power * (1 + wobble), 3),
        round(current * (1 + wobble), 3),
    )


def expected_shares(b: BehaviourConfig) -> dict[MachineState, float]:
    """Long-run share of planned busy time in each state, by renewal-reward.

    One renewal is a job: idle gap, setup, running ``N * c``, plus the downtime that the
    running time accrues (breakdowns at ``1/MTBF`` and minor stops at their rate).
    """
    running = (b.job_parts[0] + b.job_parts[1]) / 2 * b.cycle_time_s
    setup = sum(b.setup_s) / 2
    down = running * (
        b.mttr_min * 60 / (b.mtbf_h * 3600) + b.micro_stops_per_h / 3600 * sum(b.micro_stop_s) / 2
    )
    cycle = b.idle_gap_s + setup + running + down
    return {
        MachineState.IDLE: b.idle_gap_s / cycle,
        MachineState.SETUP: setup / cycle,
        MachineState.RUNNING: running / cycle,
        MachineState.DOWN: down / cycle,
    }
