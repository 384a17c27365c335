"""Crashes: `kyoso gateway` killed with SIGKILL mid-stream while the broker is away, restarted,
delivers every sample that had entered its outbox, in a gap-free sequence; the broker killed
with SIGKILL after acknowledging samples it had not saved yet loses nothing either, as the
samples stay in the outbox until the store's receipt covers them."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from receiptkit import BOUND_S, FakeClock, Ingest, OfflineSubscriber, in_thread
from services import Mosquitto
from test_gateway_outbox import make_sample, open_outbox
from test_gateway_publisher import config_for, new_ids, until

from kyoso.contract import SampleBatch
from kyoso.gateway.publisher import MqttPublisher
from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.simulators.gateways import gateway_config
from kyoso.simulators.runner import SimClock, Simulation, SimulationOptions


def _start_gateway(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kyoso.cli",
            "--log-level",
            "WARNING",
            "gateway",
            "--config",
            str(config),
        ]
    )


@pytest.mark.integration
def test_sigkill_while_offline_then_restart_delivers_everything(
    mosquitto_factory: "object", tmp_path: Path
) -> None:
    broker: Mosquitto = mosquitto_factory(persistence=True)  # type: ignore[operator]
    factory = next(
        f for f in map(load_factory, shipped_factories()) if f.factory == "okada-machining"
    )
    received: list[SampleBatch] = []
    lock = threading.Lock()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        with lock:
            received.append(SampleBatch.model_validate_json(message.payload))

    async def main() -> tuple[list[int], list[int]]:
        async with Simulation(
            [factory], SimClock(), SimulationOptions(ephemeral_ports=True)
        ) as sim:
            config = gateway_config(
                factory,
                sim.endpoints[factory.factory],
                gateway="gw-01",
                broker={"host": broker.host, "port": broker.port, "reconnect_max_delay_s": 1},
                outbox_path=tmp_path / "outbox.sqlite3",
                sensor_broker={"host": broker.host, "port": broker.port},
                poll_interval_s=0.5,
                publish_interval_s=1.0,
            )
            config["http"] = {"port": 0}
            path = tmp_path / "gateway.yaml"
            path.write_text(yaml.safe_dump(config))
            # MQTT 3.1.1 with a persistent session: Mosquitto 2.0.11 restores those after a
            # restart (not MQTT 5 ones), and queues what arrives while we reconnect.
            subscriber = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id="kyoso-test-collector",
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
            subscriber.on_message = on_message
            subscriber.on_connect = lambda c, *_: c.subscribe("kyoso/v1/+/+/samples", qos=1)
            subscriber.reconnect_delay_set(1, 1)
            subscriber.connect(broker.host, broker.port)
            subscriber.loop_start()
            first = _start_gateway(path)
            await asyncio.sleep(4)  # samples flow
            broker.stop()
            await asyncio.sleep(3)  # samples pile up in the outbox
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            with sqlite3.connect(tmp_path / "outbox.sqlite3") as db:
                pending = [row[0] for row in db.execute("SELECT seq FROM outbox ORDER BY seq")]
            broker.start()
            second = _start_gateway(path)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with lock:
                    seqs = sorted({s.seq for b in received for s in b.samples})
                if pending and set(pending) <= set(seqs) and seqs[-1] > pending[-1]:
                    break
                await asyncio.sleep(0.2)
            second.send_signal(signal.SIGTERM)
            second.wait(30)
            subscriber.loop_stop()
            subscriber.disconnect()
            return pending, seqs

    pending, seqs = asyncio.run(main())
    assert len(pending) >= len(factory.machines), "the outage left samples in the outbox"
    assert set(pending) <= set(seqs), sorted(set(pending) - set(seqs))
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "a gap in the gateway's sequence"
    assert seqs[0] == 0


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["store", "broker"])
def test_samples_a_crashed_broker_lost_are_sent_again_until_stored(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, mode: str
) -> None:
    # The defect this design fixes: the broker acknowledges samples, queues them for an
    # ingest that is away, and is killed before its next autosave: they are gone.
    broker = mosquitto_factory(persistence=True, extra_config=["autosave_interval 3600"])
    factory, gateway = new_ids()
    subscriber = OfflineSubscriber(broker, factory, gateway)
    subscriber.connect()
    subscriber.disconnect()  # away: the broker queues for it
    clock = FakeClock()
    config = config_for(broker, factory, gateway, reconnect_max_delay_s=1)
    lost = 10 if mode == "broker" else 0

    async def scenario() -> None:
        with open_outbox(tmp_path, confirm=mode, confirm_timeout_s=60) as outbox:
            async with MqttPublisher(config, outbox, clock=clock) as publisher:
                publisher.submit([make_sample(i) for i in range(10)])
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()  # every PUBACK received
                await in_thread(broker.kill)
                await in_thread(broker.start)
                await until(lambda: publisher.stats.reconnects == 1, BOUND_S, "the reconnect")
                await in_thread(subscriber.connect)
                await asyncio.sleep(0.5)  # queued samples would be delivered now
                assert subscriber.seqs() == []  # the broker lost them
                clock.at += 60
                publisher.notify()
                await until(
                    lambda: len(subscriber.seqs()) == 10 - lost, BOUND_S, "the samples again"
                )
                assert publisher.stats.resent_samples == 10 - lost
                if mode == "store":
                    stand_in = Ingest(broker)
                    try:
                        ranges = {outbox.session: [(0, 9)]}
                        await in_thread(stand_in.receipt, factory, gateway, "w1", ranges)
                        async with asyncio.timeout(BOUND_S):
                            await publisher.wait_confirmed()
                    finally:
                        stand_in.close()
            assert outbox.depth() == 0

    try:
        asyncio.run(scenario())
        assert subscriber.seqs() == list(range(10 - lost))
    finally:
        subscriber.disconnect()
