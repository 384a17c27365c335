"""Faults across the pipeline (RELIABILITY.md): gateways' outboxes → Mosquitto → the ingest →
the embedded store, each fault ending with a count of what the gateways produced, what the
store holds, and what was reported lost. The ingest's own crashes and InfluxDB outages are in
test_ingest_acceptance.py, the broker's in-between cases in test_gateway_restart.py."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ingestkit import IngestThread, settings_for, wait_until
from receiptkit import BOUND_S, FakeClock, in_thread
from services import InfluxDB, Mosquitto
from test_gateway_outbox import open_outbox
from test_gateway_publisher import config_for, until

from kyoso.contract import MachineState, Sample
from kyoso.gateway.outbox import SqliteOutbox
from kyoso.gateway.publisher import MqttPublisher

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
GATEWAYS = [("okada", "gw-1"), ("okada", "gw-2"), ("sato", "gw-1")]
PER_GATEWAY = 300


def _samples(gateway: str, count: int) -> list[Sample]:
    """``count`` samples of two machines of ``gateway``, 10 s apart (seq: the outbox's)."""
    return [
        Sample(
            machine=f"{gateway}-m{i % 2}",
            seq=0,
            ts=NOW + timedelta(seconds=10 * (i // 2 + 1)),
            interval_s=10.0,
            state=MachineState.RUNNING,
            durations_s={MachineState.RUNNING: 6.0, MachineState.IDLE: 4.0},
        )
        for i in range(count)
    ]


def _stored(path: Path) -> dict[tuple[str, str], list[int]]:
    """The seqs in the store per (factory, gateway), with repeats if any."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT sources.factory, sources.gateway, samples.seq FROM samples"
            " JOIN sources ON sources.id = samples.source"
        ).fetchall()
    stored: dict[tuple[str, str], list[int]] = {}
    for factory, gateway, seq in rows:
        stored.setdefault((factory, gateway), []).append(seq)
    return {key: sorted(seqs) for key, seqs in stored.items()}


@contextmanager
def _ingest(broker: Mosquitto, workdir: Path) -> Iterator[IngestThread]:
    worker = IngestThread(settings_for(broker, workdir, mqtt={"client_id": "f6-ingest"}))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def test_f6_a_broker_killed_while_the_ingest_lags_loses_nothing(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """The ingest is away (it lags), the broker acknowledges and queues every sample of three
    gateways, then is SIGKILLed before it saves its queue (autosave every hour): the queue
    is gone. The gateways still hold every sample, unconfirmed, send them again after
    ``confirm_timeout_s``, and the store ends with each one exactly once."""
    broker = mosquitto_factory(persistence=True, extra_config=["autosave_interval 3600"])
    ingest_dir = tmp_path / "ingest"
    ingest_dir.mkdir()
    with _ingest(broker, ingest_dir) as worker:  # its persistent session, then away
        wait_until(lambda: worker.ingest is not None and worker.ingest.consumer.connected)
    clock = FakeClock(time.time())

    async def scenario() -> dict[str, int]:
        with ExitStack() as stack:
            outboxes: list[SqliteOutbox] = []
            publishers: list[MqttPublisher] = []
            for n, (factory, gateway) in enumerate(GATEWAYS):
                workdir = tmp_path / f"gw{n}"
                workdir.mkdir()
                outbox = stack.enter_context(open_outbox(workdir, confirm_timeout_s=60))
                config = config_for(broker, factory, gateway, reconnect_max_delay_s=1)
                publisher = MqttPublisher(config, outbox, clock=clock)
                await publisher.start()
                outboxes.append(outbox)
                publishers.append(publisher)
            try:
                for publisher, (_, gateway) in zip(publishers, GATEWAYS, strict=True):
                    publisher.submit(_samples(gateway, PER_GATEWAY))
                async with asyncio.timeout(BOUND_S * 3):
                    for publisher in publishers:
                        await publisher.wait_drained()  # every sample acknowledged by the broker
                acknowledged = sum(p.stats.acked_samples for p in publishers)
                await in_thread(broker.kill)  # before its autosave: its queue is lost
                await in_thread(broker.start)
                await until(
                    lambda: all(p.stats.reconnects >= 1 for p in publishers), BOUND_S, "reconnects"
                )
                with _ingest(broker, ingest_dir):  # back: what the broker had queued is gone
                    clock.at += 60  # unconfirmed for confirm_timeout_s: sent again
                    for publisher in publishers:
                        publisher.notify()
                    async with asyncio.timeout(BOUND_S * 3):
                        for publisher in publishers:
                            await publisher.wait_confirmed()
                resent = sum(p.stats.resent_samples for p in publishers)
                dropped = sum(o.dropped for o in outboxes)
            finally:
                for publisher in publishers:
                    await publisher.stop()
        return {"acknowledged": acknowledged, "resent": resent, "dropped": dropped}

    figures = asyncio.run(scenario())
    stored = _stored(ingest_dir / "store.sqlite3")
    produced = {key: list(range(PER_GATEWAY)) for key in GATEWAYS}
    print(
        f"F6: produced {len(GATEWAYS) * PER_GATEWAY}, acknowledged by the broker "
        f"{figures['acknowledged']}, sent again {figures['resent']}, stored "
        f"{sum(len(s) for s in stored.values())}, reported lost {figures['dropped']}"
    )
    assert figures["acknowledged"] == len(GATEWAYS) * PER_GATEWAY
    assert figures["resent"] > 0, "the broker's queue was to be lost and sent again"
    assert figures["dropped"] == 0
    assert stored == produced  # every seq once, none missing, none twice


def _ingest_env(
    broker: Mosquitto, influx: InfluxDB, prefix: str, worker: str, tmp: Path
) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KYOSO_INGEST_STORE": "influxdb",
        "KYOSO_INGEST_INFLUX__URL": influx.url,
        "KYOSO_INGEST_INFLUX__DATABASE_PREFIX": prefix,
        "KYOSO_INGEST_MQTT__HOST": broker.host,
        "KYOSO_INGEST_MQTT__PORT": str(broker.port),
        "KYOSO_INGEST_MQTT__CLIENT_ID": worker,
        "KYOSO_INGEST_MQTT__SHARED_GROUP": "f10-ingest",
        "KYOSO_INGEST_RECEIPTS__INTERVAL_S": "0.2",
        "KYOSO_INGEST_DEAD_LETTER_PATH": str(tmp / f"{worker}-letters.sqlite3"),
        "KYOSO_INGEST_HTTP__PORT": "0",
    }


def _start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kyoso.cli", "ingest"], env=env, stdout=out, stderr=out
        )


def test_f10_a_shared_group_worker_killed_and_replaced_loses_nothing(
    mosquitto_factory: Callable[..., Mosquitto], influxdb: InfluxDB, tmp_path: Path
) -> None:
    """Two ingest processes split three gateways' samples; one is SIGKILLed mid-stream and
    a replacement resumes its session (its account). What the killed worker had taken but
    not receipted, and what was dealt to it while it was gone, is stored once all the same."""
    broker = mosquitto_factory()
    prefix = f"f10{uuid.uuid4().hex[:8]}_"
    logs = {w: tmp_path / f"{w}.log" for w in ("worker-a", "worker-b")}
    envs = {w: _ingest_env(broker, influxdb, prefix, w, tmp_path) for w in logs}
    workers = {w: _start_ingest(envs[w], logs[w]) for w in logs}
    wait_until(
        lambda: all("(session new)" in log.read_text() for log in logs.values()),
        what="both workers",
    )

    async def scenario() -> int:
        with ExitStack() as stack:
            publishers = []
            for n, (factory, gateway) in enumerate(GATEWAYS):
                workdir = tmp_path / f"gw{n}"
                workdir.mkdir()
                outbox = stack.enter_context(open_outbox(workdir, confirm_timeout_s=5))
                config = config_for(broker, factory, gateway)
                publisher = MqttPublisher(config, outbox)
                await publisher.start()
                publishers.append(publisher)
            try:
                for step in range(6):  # a stream: 6 rounds of 50 samples per gateway
                    for publisher, (_, gateway) in zip(publishers, GATEWAYS, strict=True):
                        publisher.submit(_samples(gateway, PER_GATEWAY)[50 * step : 50 * step + 50])
                    if step == 2:
                        workers["worker-b"].send_signal(signal.SIGKILL)
                        workers["worker-b"].wait(10)
                        workers["worker-b"] = _start_ingest(envs["worker-b"], logs["worker-b"])
                    await asyncio.sleep(0.3)
                async with asyncio.timeout(BOUND_S * 6):
                    for publisher in publishers:
                        await publisher.wait_confirmed()  # receipts of every sample
                return sum(p.stats.resent_samples for p in publishers)
            finally:
                for publisher in publishers:
                    await publisher.stop()

    try:
        resent = asyncio.run(scenario())
    finally:
        for process in workers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    stored: dict[tuple[str, str], list[int]] = {}
    for factory in sorted({f for f, _ in GATEWAYS}):
        answer = influxdb.query('SELECT "seq", "gateway" FROM samples', f"{prefix}{factory}")
        for _, seq, gateway in answer["results"][0]["series"][0]["values"]:
            stored.setdefault((factory, gateway), []).append(seq)
    stored = {key: sorted(seqs) for key, seqs in stored.items()}
    print(
        f"F10: produced {len(GATEWAYS) * PER_GATEWAY}, sent again {resent}, stored "
        f"{sum(len(s) for s in stored.values())}, reported lost 0"
    )
    assert "(session resumed)" in logs["worker-b"].read_text()  # the replacement resumed it
    assert stored == {key: list(range(PER_GATEWAY)) for key in GATEWAYS}


class _BlackHole:
    """A TCP proxy to the broker that can stop passing bytes without closing anything (a
    cable cut, a NAT that forgot the flow: no RST, no FIN)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.swallowing = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.broker.host, self.broker.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if not self.swallowing:
                    sink.write(data)
                    await sink.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_f9_a_black_holed_connection_is_noticed_and_nothing_is_lost(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """The path to the broker goes silent with no RST: the gateway notices when a PUBACK has
    been owed for 1.5 keepalives (of 5 s), connects again once the path is back, and every
    sample is stored."""
    broker = mosquitto_factory()
    ingest_dir = tmp_path / "ingest"
    ingest_dir.mkdir()
    keepalive_s = 5

    async def scenario() -> float:
        hole = _BlackHole(broker)
        await hole.start()
        factory, gateway = GATEWAYS[0]
        config = config_for(broker, factory, gateway, port=hole.port, keepalive_s=keepalive_s)
        with open_outbox(tmp_path, confirm_timeout_s=5) as outbox:
            publisher = MqttPublisher(config, outbox)
            await publisher.start()
            try:
                samples = _samples(gateway, PER_GATEWAY)
                publisher.submit(samples[:100])
                await until(lambda: publisher.connected, BOUND_S, "connected")
                hole.swallowing = True
                cut = time.monotonic()
                publisher.submit(samples[100:200])  # into the hole
                await until(lambda: not publisher.connected, 6 * keepalive_s, "the cut noticed")
                noticed = time.monotonic() - cut
                # By the PUBACK owed for 1.5 keepalives, not paho's keepalive (up to two).
                assert publisher.stats.silent_drops == 1
                hole.swallowing = False  # new connections pass again
                publisher.submit(samples[200:])
                async with asyncio.timeout(BOUND_S * 3):
                    await publisher.wait_confirmed()
            finally:
                await publisher.stop()
                await hole.stop()
        return noticed

    with _ingest(broker, ingest_dir):
        noticed = asyncio.run(scenario())
    stored = _stored(ingest_dir / "store.sqlite3")
    print(
        f"F9: keepalive {keepalive_s} s, the cut noticed after {noticed:.1f} s; stored "
        f"{sum(len(s) for s in stored.values())} of {PER_GATEWAY}, reported lost 0"
    )
    assert stored == {GATEWAYS[0]: list(range(PER_GATEWAY))}


def _received(path: Path) -> dict[int, int]:
    """When the ingest received each stored sample (µs), by seq (one gateway)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT seq, received FROM samples").fetchall())


@pytest.mark.parametrize(
    "cut_s",
    [pytest.param(20, id="cut-20s"), pytest.param(600, id="cut-10min", marks=pytest.mark.long)],
)
def test_f7_a_gateway_cut_off_and_restarted_inside_the_cut_loses_nothing(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path, cut_s: int
) -> None:
    """The broker is out of reach for ``cut_s`` while the gateway keeps producing, and the
    gateway restarts halfway (its outbox reopened). When the path is back the live samples
    go first while the backlog drains at the replay rate; every sample is stored once (those
    the broker acknowledged and lost with the ingest's queue when it stopped, sent again
    after ``confirm_timeout_s``)."""
    broker = mosquitto_factory()
    ingest_dir = tmp_path / "ingest"
    ingest_dir.mkdir()
    factory, gateway = GATEWAYS[0]
    config = config_for(
        broker,
        factory,
        gateway,
        replay_rate_samples_per_s=40,
        reconnect_min_delay_s=1,
        reconnect_max_delay_s=1,
    )
    samples = iter(_samples(gateway, 10 * (cut_s + 30)))  # 4 a second, time enough

    async def produce(publisher: MqttPublisher, seconds: float) -> None:
        for _ in range(int(seconds * 2)):
            publisher.submit([next(samples), next(samples)])
            await asyncio.sleep(0.5)

    async def scenario() -> tuple[int, int]:
        with open_outbox(tmp_path, confirm_timeout_s=10) as outbox:
            publisher = MqttPublisher(config, outbox)
            await publisher.start()
            await produce(publisher, 3)
            await in_thread(broker.stop)
            await produce(publisher, cut_s / 2)
            await publisher.stop()  # the gateway restarts inside the cut
        with open_outbox(tmp_path, confirm_timeout_s=10) as outbox:
            publisher = MqttPublisher(config, outbox)
            await publisher.start()
            try:
                await produce(publisher, cut_s / 2)
                backlog_last = outbox.last_seq  # numbered before the path came back
                await in_thread(broker.start)
                await produce(publisher, 5)
                async with asyncio.timeout(BOUND_S * 3 + cut_s / 5):
                    await publisher.wait_confirmed()
                return backlog_last, outbox.last_seq
            finally:
                await publisher.stop()

    with _ingest(broker, ingest_dir):
        backlog_last, last = asyncio.run(scenario())
    stored = _stored(ingest_dir / "store.sqlite3")
    received = _received(ingest_dir / "store.sqlite3")
    print(
        f"F7: cut {cut_s} s with a restart inside; produced {last + 1}, stored "
        f"{sum(len(s) for s in stored.values())}, backlog {backlog_last + 1}, reported lost 0"
    )
    assert stored == {GATEWAYS[0]: list(range(last + 1))}
    live = [received[seq] for seq in range(backlog_last + 1, last + 1)]
    backlog = [received[seq] for seq in range(backlog_last + 1)]
    assert min(live) < max(backlog), "live samples go first, beside the replay"
