"""Backtest of the capacity forecast: available hours forecast for week 4 at its start,
against the idle hours realized in week 4, per capability across the region.

Simulates four weeks of the shipped factories (and of a larger region: each shipped factory
``--copies`` times with other seeds), writes their history into the embedded store as a
gateway would have published it, and at the start of week 4 asks the capacity model
(:func:`kyoso.capacity.forecast.forecast`, learning from weeks 1-3) for each machine's
available hours over the next 7 days. The realized idle hours (ADOT) of week 4 come from
the same store. Printed per capability, with the mean absolute percentage error (MAPE),
beside the error of an oracle that knows each machine's true long-run idle share (the
simulator's renewal-reward expectation): what no forecast from history can beat.

    .venv/bin/python bench/backtest.py --copies 10
"""

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kyoso.capacity.forecast import LoadProfile, forecast
from kyoso.contract import MachineState, Process
from kyoso.simulators.behaviour import expected_shares
from kyoso.simulators.config import FactoryConfig, load_factory, shipped_factories
from kyoso.simulators.history import history_samples
from kyoso.simulators.runner import FactorySimulation
from kyoso.store import SqliteStore, StateWindow

ORIGIN = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)
BURN_IN = WEEK
"""Simulated before the history starts: the models start from rest, real machines do not."""


def _region(copies: int) -> list[FactoryConfig]:
    shipped = [load_factory(p) for p in shipped_factories()]
    if copies == 1:
        return shipped
    return [
        c.model_copy(update={"factory": f"{c.factory}-{i}", "seed": c.seed + 7919 * i})
        for c in shipped
        for i in range(copies)
    ]


async def _backtest(configs: list[FactoryConfig], path: Path, interval_s: float) -> None:
    as_of, end = ORIGIN + 3 * WEEK, ORIGIN + 4 * WEEK
    started = time.perf_counter()
    forecast_h: dict[Process, float] = defaultdict(float)
    realized_h: dict[Process, float] = defaultdict(float)
    oracle_h: dict[Process, float] = defaultdict(float)
    machines: dict[Process, int] = defaultdict(int)
    async with SqliteStore(path, synchronous="normal") as store:
        for config in configs:
            sim = FactorySimulation(config, (ORIGIN - BURN_IN).timestamp())
            samples = history_samples(
                sim, ORIGIN.timestamp(), end.timestamp(), interval_s=interval_s
            )
            for machine_samples in samples.values():
                await store.write_samples(config.factory, "gw-01", "history", machine_samples)
        loaded = time.perf_counter() - started
        for config in configs:
            history = await store.state_seconds(config.factory, None, ORIGIN, as_of, 3600.0)
            week4 = await store.state_seconds(config.factory, None, as_of, end)
            idle = {w.machine: w.seconds[MachineState.IDLE] for w in week4}
            windows: dict[str, list[StateWindow]] = defaultdict(list)
            for window in history:
                windows[window.machine].append(window)
            for machine in config.machines:
                calendar = config.calendars[machine.calendar]
                profile = LoadProfile.build(windows[machine.id], calendar, ORIGIN, as_of)
                figures = forecast(calendar, profile, as_of, WEEK)
                share = expected_shares(machine.behaviour)[MachineState.IDLE]
                for process in {c.process for c in machine.capabilities}:
                    forecast_h[process] += figures.available_s / 3600
                    realized_h[process] += idle[machine.id] / 3600
                    oracle_h[process] += share * figures.total_s / 3600
                    machines[process] += 1
    errors, oracle_errors = [], []
    print(
        f"{'capability':<26} {'machines':>8} {'forecast h':>10} {'realized h':>10} "
        f"{'error':>7} {'oracle':>7}"
    )
    for process in sorted(forecast_h):
        real = realized_h[process]
        error = abs(forecast_h[process] - real) / real
        oracle = abs(oracle_h[process] - real) / real
        errors.append(error)
        oracle_errors.append(oracle)
        print(
            f"{process.value:<26} {machines[process]:>8} {forecast_h[process]:>10.1f} "
            f"{real:>10.1f} {error:>7.1%} {oracle:>7.1%}"
        )
    mape, oracle_mape = sum(errors) / len(errors), sum(oracle_errors) / len(oracle_errors)
    total = sum(realized_h.values())
    wape = sum(abs(forecast_h[p] - realized_h[p]) for p in realized_h) / total
    oracle_wape = sum(abs(oracle_h[p] - realized_h[p]) for p in realized_h) / total
    print(
        f"MAPE {mape:.1%} (oracle {oracle_mape:.1%}), WAPE {wape:.1%} (oracle {oracle_wape:.1%})"
        f" over {len(errors)} capabilities, {len(configs)} factories; history loaded in "
        f"{loaded:.0f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=10, help="copies of each shipped factory")
    parser.add_argument("--interval", type=float, default=900.0, help="sample interval, s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kyoso-backtest-") as workdir:
        for copies in sorted({1, args.copies}):
            print(
                f"\n== region: {copies} cop{'y' if copies == 1 else 'ies'} of the shipped factories"
            )
            asyncio.run(_backtest(_region(copies), Path(workdir) / f"r{copies}.db", args.interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
