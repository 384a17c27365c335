"""Backtest of the capacity figures: each machine's available hours for week 5, as the API
would have served them at its start, against the idle hours it then had.

Simulates five weeks of the shipped factories (after a week of burn-in) and of a region of
each shipped factory ``--copies`` times with other seeds, writes that history into the
embedded store as a gateway would have published it, and at the start of week 5 assesses
every machine exactly as the API serves it (:func:`kyoso.capacity.assess.assess`): its load
profile learnt from the 28 days before (``CapacityRules().lookback_days``), the
insufficient-history withdrawal, a stop under way at that moment (minor stop, or breakdown
with the repair time learnt from the machine's own down runs of those 28 days,
:meth:`kyoso.store.StoreReader.state_runs`), over a horizon of 7 days. Its description is
the one its gateway would have published
(:func:`kyoso.simulators.history.history_descriptions`). The realized idle hours (ADOT) of
week 5 come from the same store. Printed per capability, with the MAPE and WAPE over
capabilities, beside those of an oracle that knows each machine's true long-run idle share
(the simulator's renewal-reward expectation) times its planned time: what no forecast from
history can beat.

The same table holds the figures of a factory that declares its orders (``booked``): for
every machine and every local day of week 5 a booking of the busy hours (running + setup)
it then realized that day, passed to ``assess`` as ``bookings`` (they consume the expected
load: committed is the larger of the booked and the expected load over the hours they
span, docs/api.md).

With ``--calibrate``, only the ``--copies`` region: each machine's profile is learnt from the
last ``d`` days before the start of week 5 alone (d = 0.5 ... 28), its available hours of
the next 7 days forecast from it (:func:`kyoso.capacity.forecast.forecast`, no withdrawal,
no stop) and the error of the machines' available hours measured: ``sum |forecast
available - realized idle| / sum realized idle`` over the machines (per machine, weighted
by its idle hours: how far off a machine's available hours are, as a share of them); the
output ends with the ``CALIBRATION`` literal of
:mod:`kyoso.capacity.confidence`, keyed by the mean *observed* days of history
(``profile.observed_s / 86400`` over the machines), not by ``d``: confidence is looked up by
a machine's observed history, and a machine on one shift observes a third of the wall time.

    .venv/bin/python bench/backtest.py --copies 10               # shipped, then 30 factories
    .venv/bin/python bench/backtest.py --copies 10 --calibrate   # CALIBRATION, 30 factories

Each takes about a minute on the 2-core development VM (55 s and 50 s, nearly all of it
simulating and writing the history of 900-s samples, ``--interval``).
"""

import argparse
import asyncio
import math
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from kyoso.capacity.assess import Evidence, assess
from kyoso.capacity.forecast import Booking, LoadProfile, forecast
from kyoso.capacity.repair import RepairRecord
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MachineDescription, MachineState, Process, ShiftCalendar
from kyoso.simulators.behaviour import expected_shares
from kyoso.simulators.config import FactoryConfig, load_factory, shipped_factories
from kyoso.simulators.history import history_descriptions, history_samples
from kyoso.simulators.runner import FactorySimulation
from kyoso.store import SqliteStore, StateRun, StateWindow

ORIGIN = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)
DAY = timedelta(days=1)
BURN_IN = WEEK
"""Simulated before the history starts: the models start from rest, real machines do not."""
AS_OF = ORIGIN + 4 * WEEK
"""The start of week 5: 28 days of history before it, the default lookback."""
END = AS_OF + WEEK
GATEWAY = "gw-01"
RULES = CapacityRules()
CALIBRATION_DAYS = (0.5, 1, 2, 3, 5, 7, 14, 21, 28)


@dataclass(frozen=True, slots=True)
class _Machine:
    """What the store holds of one machine at ``AS_OF``, and what it then did."""

    description: MachineDescription
    idle_share: float
    """True long-run idle share of its planned time (the oracle's)."""
    history: list[StateWindow]
    """Hourly windows of the lookback before ``AS_OF``."""
    down_runs: list[StateRun]
    """Its down runs in the lookback before ``AS_OF``."""
    idle_s: float
    """Idle seconds realized over the horizon."""
    busy_days: list[tuple[datetime, datetime, float]]
    """Each local day of the horizon (clipped to it) with the busy seconds realized in it."""

    @property
    def calendar(self) -> ShiftCalendar:
        return self.description.calendar


def _region(copies: int) -> list[FactoryConfig]:
    shipped = [load_factory(p) for p in shipped_factories()]
    if copies == 1:
        return shipped
    return [
        c.model_copy(update={"factory": f"{c.factory}-{i}", "seed": c.seed + 7919 * i})
        for c in shipped
        for i in range(copies)
    ]


def _local_days(zone: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at local midnights of ``zone``."""
    tz = ZoneInfo(zone)
    day = start.astimezone(tz).date()
    spans = []
    while True:
        midnight = datetime.combine(day + DAY, datetime.min.time(), tzinfo=tz).astimezone(UTC)
        spans.append((start, min(midnight, end)))
        if midnight >= end:
            return spans
        start, day = midnight, day + DAY


def _busy(window: StateWindow) -> float:
    return window.seconds[MachineState.RUNNING] + window.seconds[MachineState.SETUP]


async def _gather(
    configs: list[FactoryConfig], path: Path, interval_s: float
) -> tuple[list[_Machine], float]:
    """Simulate the factories into a store at ``path``; every machine's record, and the
    seconds the history took to write."""
    started = time.perf_counter()
    lookback = AS_OF - RULES.lookback
    machines: list[_Machine] = []
    async with SqliteStore(path, synchronous="normal") as store:
        for config in configs:
            sim = FactorySimulation(config, (ORIGIN - BURN_IN).timestamp())
            samples = history_samples(
                sim, ORIGIN.timestamp(), END.timestamp(), interval_s=interval_s
            )
            for machine_samples in samples.values():
                await store.write_samples(config.factory, GATEWAY, "history", machine_samples)
        loaded = time.perf_counter() - started
        for config in configs:
            factory = config.factory
            history: dict[str, list[StateWindow]] = defaultdict(list)
            for window in await store.state_seconds(factory, None, lookback, AS_OF, 3600.0):
                history[window.machine].append(window)
            runs: dict[str, list[StateRun]] = defaultdict(list)
            for run in await store.state_runs(factory, MachineState.DOWN, lookback, AS_OF):
                runs[run.machine].append(run)
            horizon = {w.machine: w for w in await store.state_seconds(factory, None, AS_OF, END)}
            days: dict[tuple[datetime, datetime], dict[str, float]] = {}
            for zone in {c.timezone for c in config.calendars.values()}:
                for a, b in _local_days(zone, AS_OF, END):
                    if (a, b) not in days:
                        windows = await store.state_seconds(factory, None, a, b)
                        days[a, b] = {w.machine: _busy(w) for w in windows}
            behaviours = {m.id: m.behaviour for m in config.machines}
            for description in history_descriptions(config, AS_OF.timestamp(), gateway=GATEWAY):
                name = description.machine
                spans = _local_days(description.calendar.timezone, AS_OF, END)
                machines.append(
                    _Machine(
                        description=description,
                        idle_share=expected_shares(behaviours[name])[MachineState.IDLE],
                        history=history[name],
                        down_runs=runs[name],
                        idle_s=horizon[name].seconds[MachineState.IDLE],
                        busy_days=[(a, b, days[a, b][name]) for a, b in spans],
                    )
                )
    return machines, loaded


def _evidence(machine: _Machine) -> Evidence:
    """What the API knows of the machine at ``AS_OF``: its latest sample ends then (fresh),
    and it is down if its last down run goes on at that sample, for as long as since that
    run began."""
    last = machine.down_runs[-1] if machine.down_runs else None
    down_for_s = None
    if last is not None and last.ongoing and last.end == AS_OF:
        down_for_s = (AS_OF - last.start).total_seconds()
    return Evidence(
        stale=False,
        newest=AS_OF,
        down_for_s=down_for_s,
        repairs=RepairRecord.learn(machine.down_runs, RULES, AS_OF),
    )


def _mape_wape(
    figures: dict[Process, float], realized: dict[Process, float]
) -> tuple[float, float]:
    errors = [abs(figures[p] - realized[p]) / realized[p] for p in realized]
    total = math.fsum(realized.values())
    return (
        math.fsum(errors) / len(errors),
        math.fsum(abs(figures[p] - realized[p]) for p in realized) / total,
    )


def _capabilities(machines: list[_Machine], factories: int) -> None:
    """The per-capability table: as served, with the declared bookings, and the oracle."""
    plain: dict[Process, float] = defaultdict(float)
    booked: dict[Process, float] = defaultdict(float)
    oracle: dict[Process, float] = defaultdict(float)
    realized: dict[Process, float] = defaultdict(float)
    count: dict[Process, int] = defaultdict(int)
    reasons: Counter[str] = Counter()
    confidence = []
    start = AS_OF - RULES.lookback
    for machine in machines:
        profile = LoadProfile.build(machine.history, machine.calendar, start, AS_OF)
        evidence = _evidence(machine)
        served = assess(
            machine.description, profile, evidence, as_of=AS_OF, horizon=WEEK, rules=RULES
        )
        bookings = [Booking(a, b, busy / 3600) for a, b, busy in machine.busy_days]
        declared = assess(
            machine.description,
            profile,
            evidence,
            as_of=AS_OF,
            horizon=WEEK,
            rules=RULES,
            bookings=bookings,
        )
        reasons.update(served.figures.reasons)
        confidence.append(served.confidence)
        for process in served.processes:
            plain[process] += served.figures.available_s / 3600
            booked[process] += declared.figures.available_s / 3600
            oracle[process] += machine.idle_share * served.figures.total_s / 3600
            realized[process] += machine.idle_s / 3600
            count[process] += 1
    print(
        f"{'capability':<26} {'machines':>8} {'realized h':>10} {'forecast h':>10} "
        f"{'error':>7} {'booked h':>9} {'error':>7} {'oracle h':>9} {'error':>7}"
    )
    for process in sorted(realized):
        real = realized[process]
        print(
            f"{process.value:<26} {count[process]:>8} {real:>10.1f} {plain[process]:>10.1f} "
            f"{abs(plain[process] - real) / real:>7.1%} {booked[process]:>9.1f} "
            f"{abs(booked[process] - real) / real:>7.1%} {oracle[process]:>9.1f} "
            f"{abs(oracle[process] - real) / real:>7.1%}"
        )
    mape, wape = _mape_wape(plain, realized)
    b_mape, b_wape = _mape_wape(booked, realized)
    o_mape, o_wape = _mape_wape(oracle, realized)
    print(
        f"over {len(realized)} capabilities, {len(machines)} machines, {factories} factories:\n"
        f"  as served      MAPE {mape:6.1%}  WAPE {wape:6.1%}\n"
        f"  with bookings  MAPE {b_mape:6.1%}  WAPE {b_wape:6.1%}\n"
        f"  oracle         MAPE {o_mape:6.1%}  WAPE {o_wape:6.1%}"
    )
    print(
        f"  machines by reason (as served): {dict(sorted(reasons.items()))}; "
        f"mean confidence {math.fsum(confidence) / len(confidence):.3f}"
    )


def _quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile, linear between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _calibrate(machines: list[_Machine]) -> None:
    """The error of the machines' available hours by days of history (as a share of the
    realized idle hours, and of the planned time), and the CALIBRATION literal."""
    print(
        f"{'days d':>6} {'observed d':>10} {'machines':>8} {'error':>7} "
        f"{'of planned':>10} {'p90':>7} {'median':>7}"
    )
    rows = []
    for days in CALIBRATION_DAYS:
        start = AS_OF - timedelta(days=days)
        missed, idle, shares, observed = [], [], [], []
        for machine in machines:
            windows = [w for w in machine.history if w.start >= start]
            profile = LoadProfile.build(windows, machine.calendar, start, AS_OF)
            figures = forecast(machine.calendar, profile, AS_OF, WEEK)
            if figures.total_s <= 0:
                continue
            missed.append(abs(figures.available_s - machine.idle_s))
            idle.append(machine.idle_s)
            shares.append(missed[-1] / figures.total_s)
            observed.append(profile.observed_s / 86_400)
        mean_observed = math.fsum(observed) / len(observed)
        error = math.fsum(missed) / math.fsum(idle)
        rows.append((round(mean_observed, 2), round(error, 3)))
        print(
            f"{days:>6g} {mean_observed:>10.2f} {len(missed):>8} {error:>7.3f} "
            f"{math.fsum(shares) / len(shares):>10.3f} {_quantile(shares, 0.9):>7.3f} "
            f"{_quantile(shares, 0.5):>7.3f}"
        )
    print("\n# (mean observed days of history, error of available): bench/backtest.py --calibrate")
    print("CALIBRATION = (")
    for observed_days, error in rows:
        print(f"    ({observed_days}, {error}),")
    print(")")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=10, help="copies of each shipped factory")
    parser.add_argument("--interval", type=float, default=900.0, help="sample interval, s")
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="the error by days of history over the --copies region, and CALIBRATION",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kyoso-backtest-") as workdir:
        for copies in [args.copies] if args.calibrate else sorted({1, args.copies}):
            started = time.perf_counter()
            configs = _region(copies)
            print(
                f"\n== region: {copies} cop{'y' if copies == 1 else 'ies'} of the shipped "
                f"factories ({len(configs)} factories), {args.interval:g}-s samples"
            )
            path = Path(workdir) / f"r{copies}.db"
            machines, loaded = asyncio.run(_gather(configs, path, args.interval))
            if args.calibrate:
                _calibrate(machines)
            else:
                _capabilities(machines, len(configs))
            print(
                f"({time.perf_counter() - started:.0f} s, of which {loaded:.0f} s writing "
                "the history)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
