"""The ingest as a Sparkplug B host application, against Eclipse Tahu's edge node client.

A real Mosquitto, a real ingest (SQLite store) and Tahu's ``sparkplug-client`` run by node
(tests/sparkplug/host_node.js). The ingest's Sparkplug clock is the test's: metrics are
stamped by the test, and the clock moved past them closes the samples, so every duration
asserted is one of the metric timestamps, whatever the machine's load.
"""

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ingestkit import IngestThread, Publisher, Subscriber, settings_for, wait_until
from prometheus_client import CollectorRegistry, generate_latest
from services import Mosquitto
from sparkplug_node import NodeScript, sparkplug_node_modules

from kyoso.contract import MachineState
from kyoso.ingest.deadletter import DeadLetter
from kyoso.ingest.http import IngestCollector
from kyoso.ingest.service import Ingest
from kyoso.ingest.sparkplug_config import SparkplugConfig
from kyoso.sparkplug import parse_host_state
from kyoso.store import SqliteStore

__all__ = ["sparkplug_node_modules"]  # the fixture, used by name

pytestmark = pytest.mark.integration

S = MachineState
FACTORY = "tanaka-seiki"
NODE = "Press Line 1"
GATEWAY = "press-line-1"
INTERVAL_S = 10.0


class Clock:
    """The ingest's Sparkplug clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def machine_mapping(machine: str, device: str | None) -> dict[str, Any]:
    return {
        "id": machine,
        "name": machine.title(),
        "calendar": "always",
        "device": device,
        "metrics": {"Status/Code": "code", "Counters/Good": "good_raw", "Motor/Current": "amps"},
        "state": {
            "from_code": {"field": "code", "map": {1: "running", 2: "idle", 3: "down"}},
            "planned_stops_from_calendar": False,
        },
        "counters": {"good": {"field": "good_raw"}},
        "signals": ["amps"],
    }


def sparkplug_config(group: str, host_id: str) -> SparkplugConfig:
    return SparkplugConfig.model_validate(
        {
            "host_id": host_id,
            "interval_s": INTERVAL_S,
            "late_s": 5.0,
            "rebirth_timeout_s": 600.0,
            "tick_s": 0.05,
            "factories": [
                {
                    "factory": FACTORY,
                    "groups": [group],
                    "calendars": {"always": {"timezone": "UTC"}},
                    "nodes": [
                        {
                            "group": group,
                            "node": NODE,
                            "machines": [
                                machine_mapping("press-1", None),
                                machine_mapping("press-2", "Press2"),
                            ],
                        }
                    ],
                }
            ],
        }
    )


@dataclass
class Rig:
    """A running ingest with a Sparkplug mapping, its clock, and a Tahu edge node."""

    worker: IngestThread
    node: NodeScript
    clock: Clock
    group: str
    t0: float
    """A 10 s boundary a few minutes ago: the metrics' time origin (epoch seconds)."""
    sent: int = 0

    @property
    def ingest(self) -> Ingest:
        assert self.worker.ingest is not None
        return self.worker.ingest

    @property
    def store(self) -> SqliteStore:
        store = self.worker.store
        assert isinstance(store, SqliteStore)
        return store

    @property
    def stats(self) -> dict[str, int]:
        assert self.ingest.sparkplug is not None
        return dict(self.ingest.sparkplug.stats)

    def letters(self) -> list[DeadLetter]:
        """The dead letters of this test's group: the shared broker may hold other tests'
        retained messages on Kyoso topics, which the ingest reads too."""
        letters = self.worker.dead_letters.letters(limit=1000)
        return [letter for letter in letters if letter.topic.startswith(f"spBv1.0/{self.group}/")]

    def ms(self, seconds: float) -> int:
        """Epoch milliseconds of ``t0 + seconds``."""
        return round((self.t0 + seconds) * 1000)

    def at(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(self.t0 + seconds, UTC)

    def send(self, op: str, payload: dict[str, Any], **extra: Any) -> None:
        self.ask({"op": op, "payload": payload, **extra})

    def ask(self, command: dict[str, Any]) -> None:
        """Have the node publish; :meth:`received` waits for the ingest to read it."""
        self.node.ask(command)
        self.sent += 1

    def received(self) -> None:
        """Wait until the ingest has read every message the node published."""
        wait_until(lambda: self.stats.get("messages", 0) >= self.sent, what="the messages")

    def birth(self, code: int, good: int, *, at: float = 0.0) -> None:
        """An NBIRTH (aliases 1-3, the node's own machine), then press-2's DBIRTH."""
        self.send(
            "nbirth", {"timestamp": self.ms(at), "metrics": _metrics(self.ms(at), code, good)}
        )
        self.send(
            "dbirth",
            {"timestamp": self.ms(at), "metrics": _metrics(self.ms(at), code, good, base=10)},
            device="Press2",
        )

    def data(
        self, at: float, *, alias: int, value: float, kind: str = "Int32", **more: Any
    ) -> None:
        metric = {"alias": alias, "type": kind, "value": value, "timestamp": self.ms(at), **more}
        self.send("ndata", {"timestamp": self.ms(at), "metrics": [metric]})

    def close_until(self, seconds: float) -> None:
        """Move the clock so that the samples up to ``t0 + seconds`` close; wait for them."""
        self.received()
        self.clock.now = self.t0 + seconds + 5.0  # late_s
        end = self.at(seconds)
        wait_until(
            lambda: all(
                (s := latest.get(m)) is not None and s.sample.ts >= end
                for latest in [self.worker.call(self.store.latest_samples(FACTORY))]
                for m in ("press-1", "press-2")
            ),
            what=f"samples up to {end}",
        )

    def seconds(self, machine: str, start: float, end: float) -> dict[S, float]:
        """State seconds of ``machine`` in ``[t0 + start, t0 + end)``, by 10 s bucket."""
        [window] = self.worker.call(
            self.store.state_seconds(FACTORY, machine, self.at(start), self.at(end))
        )
        return {state: round(s, 3) for state, s in window.seconds.items() if s}

    def good(self, machine: str, start: float, end: float) -> float:
        [window] = self.worker.call(
            self.store.counter_totals(FACTORY, machine, self.at(start), self.at(end))
        )
        return float(window.totals.get("good", 0.0))


def _metrics(ms: int, code: int, good: int, base: int = 0) -> list[dict[str, Any]]:
    return [
        {"name": "Status/Code", "alias": base + 1, "type": "Int32", "value": code, "timestamp": ms},
        {
            "name": "Counters/Good",
            "alias": base + 2,
            "type": "UInt32",
            "value": good,
            "timestamp": ms,
        },
        {
            "name": "Motor/Current",
            "alias": base + 3,
            "type": "Double",
            "value": 4.5,
            "timestamp": ms,
        },
    ]


@pytest.fixture
def rig(mosquitto: Mosquitto, tmp_path: Path, sparkplug_node_modules: Path) -> Iterator[Rig]:
    group = f"g{uuid.uuid4().hex[:10]}"
    t0 = math.floor(time.time() / INTERVAL_S) * INTERVAL_S - 300.0
    clock = Clock(t0)
    settings = settings_for(mosquitto, tmp_path, sparkplug=sparkplug_config(group, f"host-{group}"))
    worker = IngestThread(settings, clock)
    worker.start()
    node = NodeScript("host_node.js")
    try:
        node.send(
            {
                "op": "connect",
                "url": f"mqtt://{mosquitto.host}:{mosquitto.port}",
                "group": group,
                "node": NODE,
            }
        )
        node.next(lambda e: e.get("event") == "birth")
        yield Rig(worker, node, clock, group, t0)
    finally:
        node.close()
        worker.stop()


def test_births_then_data_by_alias_become_samples_at_the_metric_timestamps(rig: Rig) -> None:
    rig.birth(code=1, good=100)
    rig.data(4, alias=1, value=2)  # idle from t0+4
    rig.data(7, alias=2, value=103, kind="UInt32")  # 3 parts at t0+7
    rig.data(12, alias=1, value=1)  # running from t0+12
    rig.send(
        "ddata",
        {
            "timestamp": rig.ms(15),
            "metrics": [{"alias": 11, "type": "Int32", "value": 3, "timestamp": rig.ms(15)}],
        },
        device="Press2",
    )
    rig.send("ddeath", {"timestamp": rig.ms(25), "metrics": []}, device="Press2")
    rig.close_until(40)

    assert rig.seconds("press-1", 0, 10) == {S.RUNNING: 4.0, S.IDLE: 6.0}
    assert rig.seconds("press-1", 10, 20) == {S.IDLE: 2.0, S.RUNNING: 8.0}
    assert rig.good("press-1", 0, 10) == 3.0
    assert rig.good("press-1", 10, 40) == 0.0
    # the device's machine: down from its DDATA, unknown from its DDEATH
    assert rig.seconds("press-2", 10, 20) == {S.RUNNING: 5.0, S.DOWN: 5.0}
    assert rig.seconds("press-2", 20, 30) == {S.DOWN: 5.0, S.UNKNOWN: 5.0}
    [status] = rig.worker.call(rig.store.gateway_status(FACTORY))
    assert (status.gateway, status.status, status.software) == (GATEWAY, "online", "sparkplug")
    described = rig.worker.call(rig.store.machines(FACTORY))
    assert sorted(d.machine for d in described) == ["press-1", "press-2"]
    assert rig.stats["births"] == 1
    assert rig.letters() == []


def test_data_without_datatypes_is_read_with_those_its_birth_declared(rig: Rig) -> None:
    """Sparkplug says data messages should leave the datatype out; Ignition does."""
    rig.birth(code=1, good=100)
    for at, alias, value in [(4, 1, 2), (7, 2, 103)]:
        metric = {"alias": alias, "type": "Int32", "value": value, "timestamp": rig.ms(at)}
        rig.send("bare", {"timestamp": rig.ms(at), "metrics": [metric]})
    metric = {"alias": 11, "type": "Int32", "value": 3, "timestamp": rig.ms(15)}
    rig.send("bare", {"timestamp": rig.ms(15), "metrics": [metric]}, device="Press2")
    rig.close_until(20)

    assert rig.seconds("press-1", 0, 10) == {S.RUNNING: 4.0, S.IDLE: 6.0}
    assert rig.good("press-1", 0, 10) == 3.0
    assert rig.seconds("press-2", 10, 20) == {S.RUNNING: 5.0, S.DOWN: 5.0}
    assert rig.stats.get("undecoded_metrics", 0) == 0


def test_a_seq_gap_asks_for_a_rebirth_and_data_waits_for_it(rig: Rig) -> None:
    rig.birth(code=1, good=0)
    rig.node.ask({"op": "seq", "seq": 9})  # the next message skips seq 3..8
    rig.data(5, alias=1, value=3)
    ncmd = rig.node.next(lambda e: e.get("event") == "ncmd")
    assert [(m["name"], m["value"]) for m in ncmd["metrics"]] == [("Node Control/Rebirth", True)]
    rig.data(6, alias=1, value=3)  # ignored too, and asks no second rebirth
    wait_until(lambda: rig.stats.get("ignored", 0) == 1, what="the data after the gap ignored")
    assert (rig.stats["seq_gaps"], rig.stats["rebirth_requests"]) == (1, 1)

    rig.birth(code=2, good=0, at=20)  # the rebirth: Tahu starts again at seq 0
    rig.data(25, alias=1, value=1)
    rig.close_until(30)

    assert rig.seconds("press-1", 0, 20) == {S.RUNNING: 20.0}  # no down: ignored
    assert rig.seconds("press-1", 20, 30) == {S.IDLE: 5.0, S.RUNNING: 5.0}
    assert rig.stats["births"] == 2
    registry = CollectorRegistry()
    registry.register(IngestCollector(rig.ingest))
    metrics = generate_latest(registry).decode()
    for event, count in (("seq_gaps", 1), ("rebirth_requests", 1), ("births", 2)):
        assert f'kyoso_ingest_sparkplug_events_total{{event="{event}"}} {count}.0' in metrics


def test_data_before_any_birth_asks_for_a_rebirth(rig: Rig) -> None:
    rig.data(1, alias=1, value=1)
    ncmd = rig.node.next(lambda e: e.get("event") == "ncmd")
    assert ncmd["metrics"][0]["name"] == "Node Control/Rebirth"
    assert rig.stats["ignored"] == 1
    assert rig.worker.call(rig.store.latest_samples(FACTORY)) == {}


def test_ndeath_of_the_session_withdraws_capacity_and_a_stale_one_is_ignored(rig: Rig) -> None:
    rig.birth(code=1, good=0)
    wait_until(lambda: len(rig.worker.call(rig.store.gateway_status(FACTORY))) == 1, what="online")
    stale = {"timestamp": rig.ms(1), "metrics": [{"name": "bdSeq", "type": "UInt64", "value": 7}]}
    rig.ask({"op": "raw", "topic": f"spBv1.0/{rig.group}/NDEATH/{NODE}", "payload": stale})
    wait_until(lambda: rig.stats.get("stale_deaths", 0) == 1, what="the stale NDEATH")
    [status] = rig.worker.call(rig.store.gateway_status(FACTORY))
    assert status.status == "online"

    rig.received()
    rig.clock.now = rig.t0 + 17.0
    rig.node.ask({"op": "kill"})  # the broker publishes Tahu's will: NDEATH, bdSeq 0
    wait_until(
        lambda: rig.worker.call(rig.store.gateway_status(FACTORY))[0].status == "offline",
        what="the gateway offline",
    )
    [status] = rig.worker.call(rig.store.gateway_status(FACTORY))
    assert (status.gateway, status.reason) == (GATEWAY, "connection_lost")
    assert rig.stats["deaths"] == 1
    rig.clock.now = rig.t0 + 100.0  # the machines' samples end at the death, not later
    wait_until(
        lambda: (
            rig.worker.call(rig.store.latest_samples(FACTORY)).get("press-1") is not None
            and rig.worker.call(rig.store.latest_samples(FACTORY))["press-1"].sample.ts
            == rig.at(17)
        ),
        what="the last sample at the death",
    )
    assert rig.seconds("press-1", 0, 100) == {S.RUNNING: 17.0}


def test_historical_metrics_are_backfilled_in_order_and_once(rig: Rig) -> None:
    rig.birth(code=1, good=10)
    history = {
        "timestamp": rig.ms(8),
        "metrics": [  # out of order, as a store-and-forward buffer may send them
            {"alias": 1, "type": "Int32", "value": 3, "timestamp": rig.ms(6), "isHistorical": True},
            {
                "alias": 2,
                "type": "UInt32",
                "value": 14,
                "timestamp": rig.ms(6),
                "isHistorical": True,
            },
            {"alias": 1, "type": "Int32", "value": 2, "timestamp": rig.ms(3), "isHistorical": True},
        ],
    }
    rig.send("ndata", history)
    rig.send("ndata", history)  # sent twice: counted once
    rig.close_until(20)
    assert rig.seconds("press-1", 0, 10) == {S.RUNNING: 3.0, S.IDLE: 3.0, S.DOWN: 4.0}
    assert rig.good("press-1", 0, 20) == 4.0
    assert rig.stats["historical_metrics"] == 6

    # stamped inside a sample already written: skipped, not applied from its end
    late = {"alias": 1, "type": "Int32", "value": 1, "timestamp": rig.ms(15), "isHistorical": True}
    rig.send("ndata", {"timestamp": rig.ms(30), "metrics": [late]})
    wait_until(lambda: rig.stats.get("late_metrics", 0) == 1, what="the late metric skipped")
    rig.close_until(30)
    assert rig.seconds("press-1", 10, 30) == {S.DOWN: 20.0}


def test_a_malformed_payload_or_an_unmapped_node_is_dead_lettered(
    rig: Rig, mosquitto: Mosquitto
) -> None:
    rig.ask({"op": "raw", "topic": f"spBv1.0/{rig.group}/NDATA/{NODE}", "hex": "0aff"})
    publisher = Publisher(mosquitto)
    try:
        empty = bytes.fromhex("0800")  # timestamp 0, no metrics: a valid payload
        publisher.publish(f"spBv1.0/{rig.group}/NBIRTH/Other Node", empty)
        publisher.flush()
    finally:
        publisher.close()
    wait_until(lambda: len(rig.letters()) == 2, what="dead letters")
    letters = {letter.reason: letter for letter in rig.letters()}
    assert "Sparkplug" in letters["schema"].detail
    assert letters["schema"].payload == bytes.fromhex("0aff")
    assert "edge node 'Other Node'" in letters["topic"].detail
    wait_until(lambda: rig.ingest.pending_messages == 0, what="the letters acknowledged")
    rig.birth(code=1, good=0)  # and the host goes on
    wait_until(lambda: rig.stats.get("births", 0) == 1, what="the birth after the letters")


def test_the_host_announces_its_state_and_its_will_says_offline(
    rig: Rig, mosquitto: Mosquitto
) -> None:
    subscriber = Subscriber(mosquitto, f"spBv1.0/STATE/host-{rig.group}")
    try:
        wait_until(lambda: bool(subscriber.received()), what="the retained STATE")
        [(_, payload)] = subscriber.received()
        assert parse_host_state(payload) == (True, round(rig.t0 * 1000))  # stamped at connect
        rig.worker.stop()
        wait_until(lambda: len(subscriber.received()) == 2, what="the STATE will")
        assert parse_host_state(subscriber.received()[1][1]) == (False, round(rig.t0 * 1000))
    finally:
        subscriber.close()
