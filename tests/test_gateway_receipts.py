"""Store receipts against a real Mosquitto: a sample leaves the outbox when the store has it.

A test client plays the ingest: it publishes retained ``StoreReceipt`` messages on
``…/stored/<worker>`` as an ingest worker does once it has written samples to the store.
The gateway's clock is injected where a test depends on ``confirm_timeout_s``, so nothing
here waits for wall time to pass; every wait is on a count, with a generous bound.
"""

import asyncio
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from receiptkit import BOUND_S, T0, FakeClock, Ingest, in_thread
from services import Mosquitto, http_get
from test_gateway_outbox import make_sample, open_outbox, pending_seqs
from test_gateway_publisher import Collector, config_for, new_ids, until

from kyoso.contract import stored_topic
from kyoso.gateway.agent import Gateway
from kyoso.gateway.config import GatewayConfig
from kyoso.gateway.http import health_server
from kyoso.gateway.publisher import MqttPublisher

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"


@pytest.fixture
def ingest(mosquitto: Mosquitto) -> Iterator[Ingest]:
    stand_in = Ingest(mosquitto)
    yield stand_in
    stand_in.close()


# --- store mode (the default) -----------------------------------------------------------------


@pytest.mark.integration
def test_without_an_ingest_every_sample_stays_in_the_outbox(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    factory, gateway = new_ids()  # nobody subscribes: each PUBACK is 0x10, no subscribers
    config = config_for(mosquitto, factory, gateway, max_samples_per_batch=10)
    clock = FakeClock()

    async def scenario() -> None:
        with open_outbox(tmp_path) as outbox:
            async with MqttPublisher(config, outbox, clock=clock) as publisher:
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_connected()
                publisher.submit([make_sample(i) for i in range(30)])
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()  # the broker has acknowledged all
                stats = publisher.stats
                assert stats.acked_samples == stats.published_samples == 30
                assert stats.refused_samples == stats.resent_samples == 0
                receipts = publisher.receipts
                assert (receipts.received, receipts.confirmed_samples) == (0, 0)
                assert outbox.depth() == outbox.unconfirmed() == 30
        with open_outbox(tmp_path) as outbox:  # after a restart, still there, as sent
            assert [(r.seq, r.sent_at) for r in outbox.pending(100)] == [
                (seq, T0) for seq in range(30)
            ]

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_receipt_confirms_exactly_the_rows_it_covers_and_workers_add_up(
    mosquitto: Mosquitto, ingest: Ingest, tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    config = config_for(mosquitto, factory, gateway)

    async def scenario() -> None:
        with open_outbox(tmp_path) as outbox:
            async with MqttPublisher(config, outbox, clock=FakeClock()) as publisher:
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_connected()
                publisher.submit([make_sample(i) for i in range(20)])
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()
                session = outbox.session

                async def receipt(worker: str, ranges: list[tuple[int, int]], count: int) -> None:
                    await in_thread(ingest.receipt, factory, gateway, worker, {session: ranges})
                    await until(lambda: publisher.receipts.received == count, BOUND_S, worker)

                await receipt("w1", [(0, 4), (10, 12)], 1)
                assert pending_seqs(outbox) == [5, 6, 7, 8, 9, *range(13, 20)]
                assert outbox.unconfirmed() == 12
                assert publisher.receipts.confirmed_samples == 8
                await receipt("w2", [(5, 9)], 2)  # another worker: the union counts
                assert pending_seqs(outbox) == list(range(13, 20))
                # A worker restarted with less to show takes nothing back.
                await receipt("w1", [(0, 2)], 3)
                assert pending_seqs(outbox) == list(range(13, 20))
                await receipt("w2", [(5, 9), (13, 19)], 4)
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_confirmed()
                receipts = publisher.receipts
                assert (receipts.confirmed_samples, receipts.invalid) == (20, 0)
                assert publisher.stats.published_samples == 20  # none was sent twice
            assert outbox.depth() == outbox.unconfirmed() == 0

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_receipt_retained_before_the_gateway_connects_is_applied_on_connect(
    mosquitto: Mosquitto, ingest: Ingest, tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    clock = FakeClock()
    with open_outbox(tmp_path, session="boot-1") as outbox:  # the previous run sent these
        outbox.append([make_sample(i) for i in range(10)])
        outbox.mark_sent(range(10), at=clock.at)
    ingest.receipt(factory, gateway, "w1", {"boot-1": [(0, 5)]})

    async def scenario() -> None:
        with open_outbox(tmp_path, session="boot-2") as outbox:
            config = config_for(mosquitto, factory, gateway)
            async with MqttPublisher(config, outbox, clock=clock) as publisher:
                await until(lambda: publisher.receipts.received == 1, BOUND_S, "the receipt")
                assert pending_seqs(outbox) == [6, 7, 8, 9]
                assert publisher.receipts.confirmed_samples == 6
                # Sent less than confirm_timeout_s ago: not sent again yet.
                assert publisher.stats.published_samples == 0

    asyncio.run(scenario())


@pytest.mark.integration
def test_receipts_of_another_session_or_gateway_confirm_nothing(
    mosquitto: Mosquitto, ingest: Ingest, tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    config = config_for(mosquitto, factory, gateway)

    def stored(session: str, last: int, gateway_id: str = gateway, worker: str = "w1") -> bytes:
        """A receipt of seqs 0 to ``last`` of ``session``, as JSON (the contract's
        models cannot build the invalid ones)."""
        message = {
            "v": 1,
            "factory": factory,
            "gateway": gateway_id,
            "worker": worker,
            "ts": "2026-01-12T23:15:00Z",
            "sessions": [{"session": session, "ranges": [[0, last]]}],
        }
        return json.dumps(message).encode()

    async def scenario() -> None:
        with open_outbox(tmp_path) as outbox:
            async with MqttPublisher(config, outbox, clock=FakeClock()) as publisher:
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_connected()
                publisher.submit([make_sample(i) for i in range(10)])
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()
                ours, session = stored_topic(factory, gateway, "w1"), outbox.session
                for topic, payload in [
                    # Valid, but the numbers of another session: nothing of ours.
                    (ours, stored("boot-old", 100)),
                    # Another gateway's receipt, naming our session: not even delivered.
                    (stored_topic(factory, "gw-02", "w1"), stored(session, 100, "gw-02")),
                    # On our topic but about another gateway, or signed by another worker:
                    # the contract refuses them (spoofed), as it does what is not JSON.
                    (ours, stored(session, 100, gateway_id="gw-02")),
                    (ours, stored(session, 100, worker="w2")),
                    (ours, b"{not json"),
                    # Then a valid receipt of seq 0, so we know all the above were handled.
                    (stored_topic(factory, gateway, "w3"), stored(session, 0, worker="w3")),
                ]:
                    await in_thread(ingest.publish, topic, payload)
                await until(
                    lambda: publisher.receipts.received == 2 and publisher.receipts.invalid == 3,
                    BOUND_S,
                    "two receipts and three refusals",
                )
                assert pending_seqs(outbox) == list(range(1, 10))
                assert publisher.receipts.confirmed_samples == 1
                assert publisher.connected  # a bad receipt is never fatal

    asyncio.run(scenario())


@pytest.mark.integration
def test_an_unconfirmed_sample_is_sent_again_after_confirm_timeout_s(
    mosquitto: Mosquitto, ingest: Ingest, tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    collector = Collector(mosquitto, factory, gateway)
    config = config_for(mosquitto, factory, gateway, max_samples_per_batch=4)
    clock = FakeClock()

    async def quiet(publisher: MqttPublisher) -> None:
        """Wake the publisher, and give it time to (wrongly) send something."""
        publisher.notify()
        await asyncio.sleep(0.3)

    async def scenario() -> None:
        with open_outbox(tmp_path, confirm_timeout_s=60) as outbox:
            async with MqttPublisher(config, outbox, clock=clock) as publisher:
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_connected()
                publisher.submit([make_sample(i) for i in range(10)])
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()
                await in_thread(ingest.receipt, factory, gateway, "w1", {outbox.session: [(0, 4)]})
                await until(lambda: outbox.depth() == 5, BOUND_S, "the receipt")
                clock.at += 59.5
                await quiet(publisher)
                assert publisher.stats.published_samples == 10  # not yet
                clock.at += 0.5  # 60 s since the PUBACKs: seqs 5-9 are due
                publisher.notify()
                await until(lambda: publisher.stats.resent_samples == 5, BOUND_S, "the resend")
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()
                stats = publisher.stats
                assert (stats.published_samples, stats.replayed_samples) == (15, 5)
                assert outbox.unconfirmed() == 5
                clock.at += 30  # the time of a re-sent sample starts over at its PUBACK
                await quiet(publisher)
                assert publisher.stats.published_samples == 15
                await in_thread(ingest.receipt, factory, gateway, "w1", {outbox.session: [(0, 9)]})
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_confirmed()
                clock.at += 3600
                await quiet(publisher)
                assert publisher.stats.published_samples == 15  # nothing left to send
                assert publisher.stats.resent_samples == 5

    try:
        asyncio.run(scenario())
        asyncio.run(until(lambda: len(collector.seqs()) >= 15, BOUND_S, "15 samples"))
        # Once in seq order, then the five unconfirmed ones again, in seq order.
        assert collector.seqs() == [*range(10), 5, 6, 7, 8, 9]
    finally:
        collector.close()


@pytest.mark.integration
def test_a_gateway_the_acl_keeps_from_its_receipts_keeps_and_resends_its_samples(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    user, reader = f"{factory}.{gateway}", "kyoso-ingest"
    secret = secrets.token_hex(8)
    passwords = tmp_path / "passwords"
    for index, name in enumerate((user, reader)):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwords), name, secret], check=True
        )
    acl = tmp_path / "acl"
    # The gateway may write under its prefix but read nothing. Mosquitto 2.0.11 still
    # grants its subscription to the receipts, and then delivers none.
    acl.write_text(
        f"user {user}\ntopic write kyoso/v1/{factory}/{gateway}/#\n"
        f"user {reader}\ntopic readwrite kyoso/v1/#\n"
    )
    broker = mosquitto_factory(
        allow_anonymous=False,
        extra_config=[f"password_file {passwords}", f"acl_file {acl}"],
        probe_username=reader,
        probe_password=secret,
    )
    config = config_for(broker, factory, gateway, username=user, password=secret)
    stand_in = Ingest(broker, username=reader, password=secret)
    clock = FakeClock()

    async def scenario() -> None:
        with open_outbox(tmp_path, confirm_timeout_s=60) as outbox:
            async with MqttPublisher(config, outbox, clock=clock) as publisher:
                publisher.submit([make_sample(i) for i in range(5)])
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()  # samples flow
                ranges = {outbox.session: [(0, 4)]}
                await in_thread(stand_in.receipt, factory, gateway, "w1", ranges)
                clock.at += 60  # the broker took the receipt before this: none came
                publisher.notify()
                await until(lambda: publisher.stats.resent_samples == 5, BOUND_S, "the resend")
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_drained()
                assert publisher.receipts.received == 0
                assert outbox.depth() == outbox.unconfirmed() == 5

    try:
        asyncio.run(scenario())
    finally:
        stand_in.close()


# --- broker mode ------------------------------------------------------------------------------


@pytest.mark.integration
def test_broker_mode_lets_a_sample_go_at_its_puback_and_reads_no_receipts(
    mosquitto: Mosquitto, ingest: Ingest, tmp_path: Path
) -> None:
    factory, gateway = new_ids()
    collector = Collector(mosquitto, factory, gateway)
    ingest.receipt(factory, gateway, "w1", {"boot-0": [(0, 0)]})  # retained, never read
    config = config_for(mosquitto, factory, gateway)

    async def scenario() -> None:
        with open_outbox(tmp_path, confirm="broker") as outbox:
            async with MqttPublisher(config, outbox, clock=FakeClock()) as publisher:
                publisher.submit([make_sample(i) for i in range(10)])
                async with asyncio.timeout(BOUND_S):
                    await publisher.wait_confirmed()  # at the PUBACKs
                assert publisher.stats.acked_samples == 10
                assert publisher.receipts.received == publisher.receipts.invalid == 0
            assert outbox.depth() == outbox.unconfirmed() == 0

    try:
        asyncio.run(scenario())
        asyncio.run(until(lambda: len(collector.seqs()) >= 10, BOUND_S, "10 samples"))
        assert collector.seqs() == list(range(10))
    finally:
        collector.close()


# --- what an operator sees --------------------------------------------------------------------


@pytest.mark.integration
def test_metrics_and_health_show_unconfirmed_samples_and_receipts(
    mosquitto: Mosquitto, ingest: Ingest, tmp_path: Path
) -> None:
    factory, gateway_id = new_ids()
    settings = yaml.safe_load(EXAMPLE.read_text())
    settings["factory"] = factory
    settings["broker"] = {"host": mosquitto.host, "port": mosquitto.port}
    settings["outbox"] = {"path": str(tmp_path / "outbox.sqlite3")}
    settings["sensor_broker"] = {"host": mosquitto.host, "port": mosquitto.port}
    settings["http"] = {"port": 0}
    config = GatewayConfig.model_validate(settings)

    async def scenario() -> tuple[str, str]:
        gateway = Gateway(config)
        publisher, outbox = gateway.publisher, gateway.outbox
        health = health_server(gateway, config.http)
        await health.start()
        await publisher.start()
        try:
            publisher.submit([make_sample(i) for i in range(5)])
            async with asyncio.timeout(BOUND_S):
                await publisher.wait_drained()
            await in_thread(ingest.receipt, factory, gateway_id, "w1", {outbox.session: [(0, 1)]})
            await in_thread(ingest.publish, stored_topic(factory, gateway_id, "w2"), b"[]")
            await until(
                lambda: publisher.receipts.received == publisher.receipts.invalid == 1,
                BOUND_S,
                "a receipt and a refusal",
            )
            base = f"http://127.0.0.1:{health.port}"
            _, metrics = await asyncio.to_thread(http_get, base + "/metrics")
            _, healthz = await asyncio.to_thread(http_get, base + "/healthz")
            return metrics, healthz
        finally:
            await publisher.stop()
            await health.stop()
            outbox.close()

    metrics, healthz = asyncio.run(scenario())
    values = {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in metrics.splitlines())
        if name.startswith("kyoso_gateway_")
    }
    assert values["kyoso_gateway_outbox_depth"] == 3
    assert values["kyoso_gateway_outbox_unconfirmed"] == 3
    assert values["kyoso_gateway_samples_acked_total"] == 5
    assert values["kyoso_gateway_receipts_total"] == 1
    assert values["kyoso_gateway_receipts_invalid_total"] == 1
    assert values["kyoso_gateway_samples_confirmed_total"] == 2
    assert values["kyoso_gateway_samples_resent_total"] == 0
    health = json.loads(healthz)
    assert (health["outbox_depth"], health["outbox_unconfirmed"]) == (3, 3)
