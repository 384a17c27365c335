"""Store receipts on a real Mosquitto: the gateway hears what the ingest has taken of its
samples (written, or dead-lettered), the ingest shows the gaps, refuses a number reused for
another sample, and goes on from its own retained receipt after a restart."""

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ingestkit import (
    Publisher,
    Subscriber,
    gateway_messages,
    running_ingest,
    settings_for,
    wait_until,
)
from services import Mosquitto, http_get

from kyoso.contract import (
    SampleBatch,
    StoreReceipt,
    decode,
    encode,
    receipts_filter,
    samples_topic,
)
from kyoso.ingest.http import health_server
from kyoso.ingest.receipts import SeqRanges
from kyoso.ops import HttpConfig
from kyoso.store import GapReport

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
SESSION = "3b1f6d2c-0000-4000-8000-00000000000a"


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    return mosquitto_factory()


def _confirmed(gateway: Subscriber, session: str = SESSION) -> SeqRanges:
    """What the receipts the gateway heard confirm of ``session``, every worker's latest."""
    latest: dict[str, StoreReceipt] = {}
    for topic, payload in gateway.received():
        receipt = decode(topic, payload)
        assert isinstance(receipt, StoreReceipt)
        latest[receipt.worker] = receipt
    confirmed = SeqRanges()
    for receipt in latest.values():
        for entry in receipt.sessions:
            if entry.session == session:
                for first, last in entry.ranges:
                    confirmed.add(first, last)
    return confirmed


def _batches(messages: list[tuple[str, bytes]]) -> list[SampleBatch]:
    return [
        m for topic, payload in messages if isinstance(m := decode(topic, payload), SampleBatch)
    ]


def test_the_gateway_hears_every_sample_taken_written_or_dead_lettered(
    broker: Mosquitto, tmp_path: Path
) -> None:
    messages = gateway_messages("okada", "gw-1", ["m1", "m2"], 20, NOW, session=SESSION)
    # One sample from a clock far ahead: dead-lettered, and still taken (sending it again
    # changes nothing).
    ahead = _batches(messages[:1])[0]
    skewed = ahead.samples[0].model_copy(update={"seq": 41, "ts": NOW + timedelta(days=2)})
    odd = ahead.model_copy(update={"samples": [skewed]})
    gateway = Subscriber(broker, receipts_filter("okada", "gw-1"))
    publisher = Publisher(broker)
    with running_ingest(settings_for(broker, tmp_path)) as worker:
        ingest = worker.ingest
        assert ingest is not None
        publisher.publish_all([*messages, (samples_topic("okada", "gw-1"), encode(odd))])
        wait_until(
            lambda: _confirmed(gateway).ranges() == [(1, 41)], what="receipts of seq 1 to 41"
        )
        assert ingest.stats.samples_written == 40
        assert ingest.stats.dead_letters == {"implausible_time": 1}
        assert ingest.receipts.gaps() == []
    publisher.close()
    gateway.close()


def test_gaps_are_seen_until_the_missing_samples_are_replayed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    messages = gateway_messages("okada", "gw-1", ["m1"], 30, NOW, session=SESSION)
    publisher = Publisher(broker)
    with running_ingest(settings_for(broker, tmp_path)) as worker:
        ingest = worker.ingest
        assert ingest is not None
        endpoint = health_server(ingest, HttpConfig(port=0))
        worker.call(endpoint.start())
        base = f"http://127.0.0.1:{endpoint.port}"
        try:
            publisher.publish_all(messages[:10] + messages[20:])  # seq 11 to 20 lost
            wait_until(lambda: ingest.stats.samples_written == 20, what="20 samples written")
            _, health = http_get(f"{base}/readyz")
            [gap] = json.loads(health)["gaps"]
            assert (gap["factory"], gap["gateway"], gap["session"]) == ("okada", "gw-1", SESSION)
            assert gap["missing"] == 10
            _, metrics = http_get(f"{base}/metrics")
            assert "kyoso_ingest_gap_samples 10.0" in metrics
            publisher.publish_all(messages[10:20])  # the outbox replays them
            wait_until(lambda: ingest.stats.samples_written == 30, what="the replay written")
            _, health = http_get(f"{base}/readyz")
            assert json.loads(health)["gaps"] == []
        finally:
            worker.call(endpoint.stop())
    publisher.close()


def test_the_store_tells_a_gateways_gaps_until_the_samples_are_replayed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """What the API's gateway view reads: the ingest writes each gateway's gaps to the
    store when they change, 0 once they close."""
    messages = gateway_messages("okada", "gw-1", ["m1"], 30, NOW, session=SESSION)
    publisher = Publisher(broker)
    with running_ingest(settings_for(broker, tmp_path)) as worker:
        ingest = worker.ingest
        assert ingest is not None

        def reported() -> GapReport | None:
            gaps: dict[str, GapReport] = worker.call(ingest.store.gateway_gaps("okada"))
            return gaps.get("gw-1")

        publisher.publish_all(messages[:10] + messages[20:])  # seq 11 to 20 lost
        wait_until(lambda: getattr(reported(), "missing", None) == 10, what="10 missing stored")
        opened = reported()
        assert opened is not None
        assert opened.oldest_s >= 0.0
        publisher.publish_all(messages[10:20])  # the outbox replays them
        wait_until(lambda: getattr(reported(), "missing", None) == 0, what="closed gaps stored")
        closed = reported()
        assert closed is not None
        assert closed.oldest_s == 0.0
        assert closed.at >= opened.at
    publisher.close()


def test_a_number_reused_for_another_sample_is_dead_lettered(
    broker: Mosquitto, tmp_path: Path
) -> None:
    messages = gateway_messages("okada", "gw-1", ["m1"], 3, NOW, session=SESSION)
    [first] = _batches(messages[:1])
    moved = first.model_copy(
        update={"samples": [first.samples[0].model_copy(update={"ts": NOW - timedelta(hours=5)})]}
    )
    publisher = Publisher(broker)
    with running_ingest(settings_for(broker, tmp_path)) as worker:
        ingest = worker.ingest
        assert ingest is not None
        publisher.publish_all(messages)
        wait_until(lambda: ingest.stats.samples_written == 3, what="3 samples written")
        publisher.publish_all(messages[:1])  # the same sample again: a harmless replay
        publisher.publish_all([(samples_topic("okada", "gw-1"), encode(moved))])
        wait_until(lambda: ingest.stats.acked == 5, what="every message handled")
        assert ingest.stats.dead_letters == {"replay_conflict": 1}
        assert ingest.stats.samples_written == 4  # the replay overwrote its own point
    publisher.close()


def test_a_restarted_worker_goes_on_from_its_retained_receipt(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """After a restart the worker's receipts still cover what it took before, so neither
    the gateway nor the gap count sees a hole where the earlier samples were."""
    messages = gateway_messages("okada", "gw-1", ["m1"], 20, NOW, session=SESSION)
    settings = settings_for(broker, tmp_path)
    publisher = Publisher(broker)
    gateway = Subscriber(broker, receipts_filter("okada", "gw-1"))
    with running_ingest(settings) as worker:
        ingest = worker.ingest
        assert ingest is not None
        publisher.publish_all(messages[:10])
        wait_until(lambda: _confirmed(gateway).ranges() == [(1, 10)], what="the first receipt")
    with running_ingest(settings) as again:
        resumed = again.ingest
        assert resumed is not None
        publisher.publish_all(messages[10:])
        wait_until(lambda: _confirmed(gateway).ranges() == [(1, 20)], what="receipts of all")
        assert resumed.receipts.gaps() == []
    publisher.close()
    gateway.close()
