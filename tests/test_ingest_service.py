"""The ingest end to end on a real Mosquitto, into the embedded store: what it stores, what it
dead-letters and why, what it acknowledges, and its shared-subscription and operations sides.
The InfluxDB side, crashes and outages are in test_ingest_acceptance.py."""

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ingestkit import Publisher, gateway_messages, running_ingest, settings_for, wait_until
from services import Mosquitto, http_get

from kyoso.cli import main
from kyoso.contract import (
    Capability,
    GatewayStatus,
    MachineDescription,
    Process,
    ShiftCalendar,
    encode,
    machine_topic,
    samples_topic,
    status_topic,
)
from kyoso.ingest.deadletter import DeadLetterStore
from kyoso.ingest.http import health_server
from kyoso.ops import HttpConfig
from kyoso.store import SqliteStore

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _description(factory: str, gateway: str, machine: str, **extra: object) -> MachineDescription:
    return MachineDescription.model_validate(
        {
            "factory": factory,
            "gateway": gateway,
            "machine": machine,
            "name": f"{machine} lathe",
            "updated_at": NOW,
            "capabilities": [Capability(process=Process.CNC_TURNING)],
            "calendar": ShiftCalendar(timezone="Asia/Tokyo", shifts=[]),
            **extra,
        }
    )


def _status(factory: str, gateway: str, status: str, reason: str) -> GatewayStatus:
    return GatewayStatus.model_validate(
        {
            "factory": factory,
            "gateway": gateway,
            "session": "s-1",
            "status": status,
            "reason": reason,
            "ts": NOW,
        }
    )


@pytest.fixture
def broker(mosquitto_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A broker of the test's own: the ingest subscribes to the whole namespace."""
    return mosquitto_factory()


def test_valid_messages_are_stored_and_acknowledged(broker: Mosquitto, tmp_path: Path) -> None:
    settings = settings_for(broker, tmp_path)
    messages = [
        *gateway_messages("okada", "gw-1", ["m1", "m2", "m3"], 40, NOW),
        *gateway_messages("sato", "gw-a", ["p1", "p2"], 40, NOW),
    ]
    publisher = Publisher(broker)
    with running_ingest(settings) as worker:
        assert worker.ingest is not None
        publisher.publish(
            machine_topic("okada", "gw-1", "m1"),
            encode(_description("okada", "gw-1", "m1")),
            retain=True,
        )
        publisher.publish(
            status_topic("okada", "gw-1"), encode(_status("okada", "gw-1", "online", "connected"))
        )
        publisher.publish_all(messages)
        ingest = worker.ingest
        wait_until(lambda: ingest.stats.acked == len(messages) + 2, what="every acknowledgement")
        assert ingest.stats.samples_written == 40 * 5
        assert ingest.stats.dead_letters == {}
        store = worker.store
        assert isinstance(store, SqliteStore)
        assert worker.call(store.factories()) == ["okada", "sato"]
        [described] = worker.call(store.machines("okada"))
        assert described == _description("okada", "gw-1", "m1")
        [status] = worker.call(store.gateway_status("okada"))
        assert status.status == "online"
        windows = worker.call(store.state_seconds("okada", None, NOW, NOW + timedelta(hours=1)))
        assert {w.machine: round(w.length_s - w.no_data_s) for w in windows} == {
            "m1": 400,
            "m2": 400,
            "m3": 400,
        }
        assert ingest.pending_messages == 0
    publisher.close()

    # Everything was acknowledged: the same session resumed gets no sample again.
    with running_ingest(settings) as again:
        assert again.ingest is not None
        resumed = again.ingest
        wait_until(lambda: resumed.stats.acked >= 1, what="the retained description")
        assert resumed.stats.received["samples"] == 0


def test_bad_messages_are_dead_lettered_and_their_neighbours_kept(
    broker: Mosquitto, tmp_path: Path
) -> None:
    settings = settings_for(broker, tmp_path)
    good = gateway_messages("okada", "gw-1", ["m1", "m2", "m3"], 6, NOW)
    topic = samples_topic("okada", "gw-1")
    batch = json.loads(good[0][1])
    nan = good[0][1].replace(b'"interval_s":10.0', b'"interval_s":NaN', 1)
    # A batch of another gateway: one sample 10 minutes ahead, one a year old, one fine.
    [(other_topic, other)] = gateway_messages("okada", "gw-2", ["x1", "x2", "x3"], 1, NOW)
    mixed = json.loads(other)
    mixed["samples"][0]["ts"] = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    mixed["samples"][1]["ts"] = (datetime.now(UTC) - timedelta(days=365)).isoformat()
    future = _description("okada", "gw-1", "m9", updated_at=datetime.now(UTC) + timedelta(days=2))
    bad: list[tuple[str, bytes]] = [
        (topic, b"{not json"),
        (topic, json.dumps({**batch, "factory": "sato"}).encode()),
        (topic, json.dumps({**batch, "v": 99}).encode()),
        (topic, nan),
        ("kyoso/v1/Okada,x=1/gw-1/samples", good[2][1]),
        (other_topic, json.dumps(mixed).encode()),
        (machine_topic("okada", "gw-1", "m9"), encode(future)),
    ]
    interleaved = [m for pair in zip(good, bad, strict=False) for m in pair] + bad[len(good) :]
    publisher = Publisher(broker)
    with running_ingest(settings) as worker:
        ingest = worker.ingest
        assert ingest is not None
        publisher.publish_all(interleaved)
        wait_until(lambda: ingest.stats.acked == len(interleaved), what="every acknowledgement")
        assert ingest.stats.samples_written == 6 * 3 + 1
        expected = {"json": 1, "spoofed": 1, "version": 1, "schema": 1, "topic": 1}
        expected["implausible_time"] = 3
        assert dict(ingest.stats.dead_letters) == expected
        assert worker.dead_letters.counts() == expected
        store = worker.store
        assert isinstance(store, SqliteStore)
        latest = worker.call(store.latest_samples("okada"))
        assert sorted(latest) == ["m1", "m2", "m3", "x3"]
        assert worker.call(store.machines("okada")) == []
        letters = worker.dead_letters.letters(reason="implausible_time")
    publisher.close()
    details = " | ".join(letter.detail for letter in letters)
    assert "machine=x1" in details
    assert "in the future" in details
    assert "machine=x2" in details
    assert "older than" in details
    assert "m9" in letters[-1].topic
    assert all(letter.payload for letter in letters)


def test_withdrawn_machines_and_cleared_statuses(broker: Mosquitto, tmp_path: Path) -> None:
    settings = settings_for(broker, tmp_path)
    publisher = Publisher(broker)
    topic = machine_topic("okada", "gw-1", "m1")
    with running_ingest(settings) as worker:
        ingest, store = worker.ingest, worker.store
        assert ingest is not None
        assert isinstance(store, SqliteStore)
        publisher.publish(topic, encode(_description("okada", "gw-1", "m1")), retain=True)
        publisher.flush()
        wait_until(lambda: len(worker.call(store.machines("okada"))) == 1, what="the machine")
        publisher.publish(topic, b"", retain=True)  # withdrawn
        publisher.publish(status_topic("okada", "gw-1"), b"", retain=True)  # status cleared
        publisher.flush()
        wait_until(lambda: ingest.stats.acked == 3, what="every acknowledgement")
        assert worker.call(store.machines("okada")) == []
        assert ingest.stats.dead_letters == {}
    publisher.close()


def test_a_gateway_describes_and_withdraws_only_its_own_machines(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """gw-1 withdrawing or describing gw-2's machine m9 (each on its own topics, so the
    broker's ACL lets it) is refused as not_owner; once gw-2 withdraws m9, gw-1 may take
    it over."""
    settings = settings_for(broker, tmp_path)
    publisher = Publisher(broker)
    own, other = machine_topic("okada", "gw-2", "m9"), machine_topic("okada", "gw-1", "m9")
    with running_ingest(settings) as worker:
        ingest, store = worker.ingest, worker.store
        assert ingest is not None
        assert isinstance(store, SqliteStore)

        def owner() -> list[str]:
            return [d.gateway for d in worker.call(store.machines("okada"))]

        publisher.publish(own, encode(_description("okada", "gw-2", "m9")), retain=True)
        publisher.flush()
        wait_until(lambda: owner() == ["gw-2"], what="gw-2's machine")
        publisher.publish(other, b"", retain=True)  # gw-1 withdraws gw-2's machine
        publisher.publish(other, encode(_description("okada", "gw-1", "m9")), retain=True)
        publisher.flush()
        wait_until(lambda: ingest.stats.acked == 3, what="every acknowledgement")
        assert ingest.stats.dead_letters == {"not_owner": 2}
        assert owner() == ["gw-2"]
        publisher.publish(own, b"", retain=True)  # gw-2 withdraws it itself
        publisher.publish(other, encode(_description("okada", "gw-1", "m9")), retain=True)
        publisher.flush()
        wait_until(lambda: owner() == ["gw-1"], what="gw-1 taking the machine over")
        assert ingest.stats.dead_letters == {"not_owner": 2}
    publisher.close()


def test_a_shared_group_splits_the_samples_between_workers(
    broker: Mosquitto, tmp_path: Path
) -> None:
    messages = gateway_messages("okada", "gw-1", ["m1", "m2"], 200, NOW)
    first = settings_for(broker, tmp_path / "a", mqtt={"shared_group": "ingest"})
    second = settings_for(broker, tmp_path / "b", mqtt={"shared_group": "ingest"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    publisher = Publisher(broker)
    with (
        running_ingest(first) as one,
        running_ingest(second) as two,
    ):
        assert one.ingest is not None
        assert two.ingest is not None
        workers = (one.ingest, two.ingest)
        publisher.publish_all(messages)
        # Each worker hears the other's receipts too: count the samples written.
        wait_until(
            lambda: sum(w.stats.samples_written for w in workers) == len(messages) * 2,
            what="every sample written",
        )
        written = [w.stats.samples_written for w in workers]
    publisher.close()
    assert sum(written) == len(messages) * 2
    assert min(written) > 0, f"one worker got nothing: {written}"


def test_health_readiness_and_metrics(broker: Mosquitto, tmp_path: Path) -> None:
    settings = settings_for(broker, tmp_path)
    publisher = Publisher(broker)
    with running_ingest(settings) as worker:
        ingest = worker.ingest
        assert ingest is not None
        publisher.publish_all(
            [
                *gateway_messages("okada", "gw-1", ["m1"], 3, NOW),
                (samples_topic("okada", "gw-1"), b"[]"),
            ]
        )
        wait_until(lambda: ingest.stats.acked == 4, what="every acknowledgement")
        endpoint = health_server(ingest, HttpConfig(port=0))
        worker.call(endpoint.start())
        base = f"http://127.0.0.1:{endpoint.port}"
        try:
            ready, health_text = http_get(f"{base}/readyz")
            _, metrics = http_get(f"{base}/metrics")
        finally:
            worker.call(endpoint.stop())
    publisher.close()
    assert ready == 200
    health = json.loads(health_text)
    assert health["broker_connected"] is True
    assert health["samples_written"] == 3
    assert health["dead_letters"] == {"schema": 1}
    assert "kyoso_ingest_samples_written_total 3.0" in metrics
    assert 'kyoso_ingest_dead_letters_total{reason="schema"} 1.0' in metrics
    assert 'kyoso_ingest_messages_received_total{kind="samples"} 3.0' in metrics
    assert "kyoso_ingest_batch_seconds_count" in metrics
    assert "kyoso_ingest_lag_seconds 0.0" in metrics
    assert "kyoso_ingest_broker_connects_total 1.0" in metrics


def test_the_command_checks_settings_and_shows_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "ingest.yaml"
    config.write_text(
        f"dead_letter_path: {tmp_path / 'letters.sqlite3'}\nbatch:\n  max_samples: 0\n"
    )
    assert main(["ingest", "--config", str(config), "--check"]) == 2
    assert (
        "batch.max_samples: Input should be greater than or equal to 1" in capsys.readouterr().err
    )
    config.write_text(f"dead_letter_path: {tmp_path / 'letters.sqlite3'}\n")
    monkeypatch.setenv("KYOSO_INGEST_MQTT__HOST", "broker.example")
    assert main(["ingest", "--config", str(config), "--check"]) == 0
    assert "broker broker.example:1883" in capsys.readouterr().out
    assert main(["ingest", "--config", str(config), "dead-letters"]) == 1
    assert "no dead-letter store" in capsys.readouterr().err

    store = DeadLetterStore(tmp_path / "letters.sqlite3")
    store.add("kyoso/v1/a/g/samples", "json", "invalid JSON: EOF", b"{not json")
    store.add("kyoso/v1/a/g/samples", "schema", "samples: too short", b"\xff\xfe")
    store.close()
    assert main(["ingest", "--config", str(config), "dead-letters"]) == 0
    listing = capsys.readouterr().out
    assert '2 dead letters: {"json": 1, "schema": 1}' in listing
    assert "invalid JSON: EOF" in listing
    assert main(["ingest", "--config", str(config), "dead-letters", "--reason", "schema"]) == 0
    assert "invalid JSON" not in capsys.readouterr().out
    assert main(["ingest", "--config", str(config), "dead-letters", "1"]) == 0
    assert "{not json" in capsys.readouterr().out
    assert main(["ingest", "--config", str(config), "dead-letters", "2"]) == 0
    assert "not UTF-8" in capsys.readouterr().out
    assert main(["ingest", "--config", str(config), "dead-letters", "9"]) == 1
