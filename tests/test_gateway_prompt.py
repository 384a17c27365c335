"""A state change is published at the poll that sees it, not at the interval's end.

One simulated Modbus machine, read over TCP, whose state register follows a script (its
counters and signals are the simulator's own), and one gateway through a real broker; the
test steps a manual clock poll by poll and emits at every interval's end, as the agent's
loops would. A sample that closes early must reach the broker while the clock still stands
at the poll that closed it.
"""

import asyncio
import dataclasses
import itertools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from services import Mosquitto
from simfactory import machine, small_factory
from test_gateway_acceptance import ManualClock
from test_gateway_publisher import Collector, until

from kyoso.contract import COUNTER_GOOD, MachineState, Sample
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.simulators.behaviour import MachineModel, Snapshot, machine_seed
from kyoso.simulators.config import ModbusSourceConfig
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.modbus import ModbusServers

START = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()  # a Monday, within the shift
PUBLISH_S = 10.0
S = MachineState
Script = Callable[[float], MachineState]
"""The state the machine shows, by seconds since START."""


class ScriptedModel(MachineModel):
    """The simulator's machine, with the state register (and no alarm) set by a script."""

    script: Script

    def snapshot(self, moment: float) -> Snapshot:
        snap = super().snapshot(moment)
        return dataclasses.replace(snap, state=self.script(moment - START), alarm=0)


@dataclass(frozen=True)
class Run:
    samples: list[Sample]
    """In seq order."""
    published_at: dict[int, float]
    """Seconds since START on the clock when the broker delivered each seq."""
    true_parts: int
    """Good parts the machine made from the first poll to the last."""


def run_gateway(
    broker: Mosquitto,
    workdir: Path,
    script: Script,
    *,
    poll_s: float,
    seconds: float,
    min_sample_s: float | None,
    late: dict[int, float] | None = None,
) -> Run:
    """Poll the scripted machine every ``poll_s`` from START for ``seconds``, emitting at
    every PUBLISH_S; after each step, wait until the broker delivered what was submitted.
    ``late`` delays the reading of some polls (by step) as a loaded event loop would."""
    factory_id = f"prompt-{uuid.uuid4().hex[:12]}"
    factory = small_factory(factory_id, 5, ["line"], [machine("m1", "line", 1, "ABCD")])
    [config] = factory.machines
    assert isinstance(config.source, ModbusSourceConfig)
    model = ScriptedModel(
        config.id,
        config.behaviour,
        factory.calendars[config.calendar],
        machine_seed(factory.seed, config.id),
        START,
    )
    model.script = script
    clock = ManualClock(START)
    collector = Collector(broker, factory_id, "gw-01")
    published_at: dict[int, float] = {}

    def delivered(seqs: set[int]) -> bool:
        return seqs <= set(collector.seqs())

    async def main() -> None:
        async with ModbusServers(factory, {config.id: model}, clock.now) as servers:
            settings = gateway_config(
                factory,
                servers.endpoints,
                gateway="gw-01",
                broker={"host": broker.host, "port": broker.port},
                outbox_path=workdir / f"{factory_id}.sqlite3",
                poll_interval_s=poll_s,
                publish_interval_s=PUBLISH_S,
            )
            settings["min_sample_s"] = min_sample_s
            gateway = Gateway(GatewayConfig.model_validate(settings), clock=clock)
            await gateway.start()
            await gateway.publisher.wait_connected()
            for step in range(round(seconds / poll_s) + 1):
                clock.moment = START + step * poll_s + (late or {}).get(step, 0.0)
                await gateway.poll(config.id)
                if step and (clock.moment - START) % PUBLISH_S == 0:
                    gateway.emit(clock.moment)
                submitted = set(range(gateway.outbox.last_seq + 1))
                await until(partial(delivered, submitted), 10, "the samples submitted")
                for seq in submitted - published_at.keys():
                    published_at[seq] = clock.moment - START
            await gateway.publisher.wait_drained()
            await gateway.stop()

    try:
        asyncio.run(main())
        samples = sorted(
            {s.seq: s for _, b in collector.batches() for s in b.samples}.values(),
            key=lambda s: s.seq,
        )
    finally:
        collector.close()
    true_parts = model.totals_at(START + seconds)[0] - model.totals_at(START)[0]
    return Run(samples, published_at, true_parts)


def ends(samples: list[Sample]) -> list[float]:
    """Each sample's end, in seconds since START."""
    return [s.ts.timestamp() - START for s in samples]


def assert_tiles_time(run: Run, seconds: float) -> None:
    """Durations sum to intervals, consecutive samples abut, and they cover [0, seconds]."""
    start = 0.0
    for sample in run.samples:
        assert math.fsum(sample.durations_s.values()) == pytest.approx(sample.interval_s, abs=1e-6)
        end = sample.ts.timestamp() - START
        assert end - sample.interval_s == pytest.approx(start, abs=1e-6), sample
        start = end
    assert start == seconds
    assert sum(s.counters[COUNTER_GOOD].delta for s in run.samples) == run.true_parts


def two_changes(t: float) -> MachineState:
    """Running, idle from 14.5 s (seen at the poll at 15 s), running again from 23 s."""
    return S.IDLE if 14.5 <= t < 23 else S.RUNNING


@pytest.mark.integration
def test_a_state_change_closes_the_sample_at_the_poll_that_saw_it(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    run = run_gateway(mosquitto, tmp_path, two_changes, poll_s=1.0, seconds=30, min_sample_s=1.0)
    assert ends(run.samples) == [10, 15, 20, 23, 30]
    assert [s.interval_s for s in run.samples] == [10, 5, 5, 3, 7]
    assert [s.durations_s for s in run.samples] == [
        {S.RUNNING: 10},
        {S.RUNNING: 5},  # running as seen at 14 s, held up to the poll that saw idle
        {S.IDLE: 5},
        {S.IDLE: 3},
        {S.RUNNING: 7},
    ]
    assert [s.state for s in run.samples] == [S.RUNNING, S.IDLE, S.IDLE, S.RUNNING, S.RUNNING]
    # each sample carries its own polls' readings (the first one includes the poll at 0 s)
    assert [s.signals["power_kw"].count for s in run.samples] == [11, 5, 5, 3, 7]
    # the two early samples reached the broker with the clock still at their poll
    assert [run.published_at[s.seq] for s in run.samples] == [10, 15, 20, 23, 30]
    assert_tiles_time(run, 30)


@pytest.mark.integration
def test_without_early_closes_the_samples_wait_for_the_interval(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """``min_sample_s: null`` is the behaviour from before: a change waits for the end."""
    run = run_gateway(mosquitto, tmp_path, two_changes, poll_s=1.0, seconds=30, min_sample_s=None)
    assert ends(run.samples) == [10, 20, 30]
    assert [s.durations_s for s in run.samples] == [
        {S.RUNNING: 10},
        {S.RUNNING: 5, S.IDLE: 5},
        {S.IDLE: 3, S.RUNNING: 7},
    ]
    assert_tiles_time(run, 30)


@pytest.mark.integration
def test_without_a_change_the_samples_are_those_of_the_intervals(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    def steady(_: float) -> MachineState:
        return S.RUNNING

    runs = [
        run_gateway(mosquitto, tmp_path, steady, poll_s=1.0, seconds=30, min_sample_s=option)
        for option in (1.0, None)
    ]
    assert ends(runs[0].samples) == [10, 20, 30]
    prompt, before = ([s.model_dump(exclude={"seq"}) for s in run.samples] for run in runs)
    assert prompt == before
    assert_tiles_time(runs[0], 30)


@pytest.mark.integration
def test_a_flapping_state_closes_early_at_most_once_per_min_sample_s(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The state changes at every poll (4 a second); a change within 1 s of the last early
    close waits for the first poll after it, or for the interval's end."""

    def flapping(t: float) -> MachineState:
        return S.RUNNING if round(t / 0.25) % 2 == 0 else S.IDLE

    run = run_gateway(mosquitto, tmp_path, flapping, poll_s=0.25, seconds=20, min_sample_s=1.0)
    regular = [10.0, 20.0]
    early = [e for e in ends(run.samples) if e not in regular]
    assert early == [i + 0.25 for i in range(20)]
    assert ends(run.samples) == sorted(early + regular)
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(early))
    for sample in run.samples:  # the state at the poll that closed it, both states inside
        assert set(sample.durations_s) <= {S.RUNNING, S.IDLE}
        assert sample.state is flapping(sample.ts.timestamp() - START)
    assert_tiles_time(run, 20)


@pytest.mark.integration
def test_a_poll_read_late_does_not_hold_back_the_next_early_close(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """The poll at 5 s reads 0.1 s late and closes early; the change seen by the poll at 6 s,
    0.9 s later but one poll on in the schedule, closes early too."""

    def two_quick_changes(t: float) -> MachineState:
        return S.IDLE if 4.5 <= t < 5.5 else S.RUNNING

    run = run_gateway(
        mosquitto,
        tmp_path,
        two_quick_changes,
        poll_s=1.0,
        seconds=10,
        min_sample_s=1.0,
        late={5: 0.1},
    )
    assert ends(run.samples) == pytest.approx([5.1, 6, 10])
    assert [s.state for s in run.samples] == [S.IDLE, S.RUNNING, S.RUNNING]
    assert_tiles_time(run, 10)
