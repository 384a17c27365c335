"""Webhooks end to end: a real ``kyoso api`` on uvicorn over a freshly simulated region, and
real HTTP receivers on loopback that record what arrives (kyoso/api/webhooks.py).

Capacity changes as the event-stream tests change it: a gateway status, or a machine's
sample, written into the store the server reads. Nothing here measures time: retries are
made quick by the server's settings, and every wait is for a condition, with a generous
timeout; what is asserted is what arrived, in which order, how many times.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apikit import Region
from ingestkit import wait_until
from webhookkit import (
    OKADA,
    SATO,
    WAIT_S,
    ApiServer,
    Arrival,
    DeadReceiver,
    Receiver,
    fresh_region,
    receiver,
    server,
)

from kyoso.contract import MachineState

__all__ = ["fresh_region", "receiver", "server"]  # fixtures

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


@functools.cache
def _documented_check() -> Callable[[str, bytes, str], bool]:
    """The receiver's check exactly as docs/api.md gives it ("Verifying a delivery")."""
    text = DOCS.read_text(encoding="utf-8")
    after = text.split("**Verifying a delivery.**", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 (the documentation's own example)
    check: Callable[[str, bytes, str], bool] = scope["verified"]
    return check


def verified(arrival: Arrival, secret: str) -> bool:
    return _documented_check()(secret, arrival.body, arrival.headers["Kyoso-Signature"])


def _types(arrivals: list[Arrival]) -> list[str]:
    return [a.event["type"] for a in arrivals]


# --- events ----------------------------------------------------------------------------------


def test_a_threshold_and_a_factory_going_offline_and_back_arrive_signed(
    server: ApiServer, receiver: Receiver
) -> None:
    capacity = server.ask("GET", f"/v1/factories/{OKADA}/capacity?horizon_h=168", "platform")
    best = max(capacity.json()["by_process"], key=lambda p: p["available"])
    assert best["available"] > 0, capacity.text
    threshold = {"min_available_h": round(best["available"] / 2, 2), "horizon_h": 168}
    region_hook = server.subscribe(
        "platform",
        url=receiver.url("/platform"),
        events=["capacity.threshold", "factory.offline", "factory.online"],
        factory=OKADA,
        process=best["process"],
        threshold=threshold,
    )
    own_hook = server.subscribe(
        f"factory:{OKADA}",
        url=receiver.url("/okada"),
        events=["factory.offline", "factory.online"],
    )
    assert own_hook["factory"] == OKADA  # a factory key's subscription is of its own factory

    server.set_online(OKADA, up=False)
    wait_until(lambda: len(receiver.at("/platform")) == 2, WAIT_S, "the platform's 2 events")
    wait_until(lambda: len(receiver.at("/okada")) == 1, WAIT_S, "the factory's event")
    server.set_online(OKADA, up=True)
    wait_until(lambda: len(receiver.at("/platform")) == 4, WAIT_S, "the platform's 4 events")
    wait_until(lambda: len(receiver.at("/okada")) == 2, WAIT_S, "the factory's 2 events")

    platform = receiver.at("/platform")  # each change's two events, in either order
    assert sorted(_types(platform[:2])) == ["capacity.threshold", "factory.offline"]
    assert sorted(_types(platform[2:])) == ["capacity.threshold", "factory.online"]
    [gone] = [a.event["data"] for a in platform[:2] if a.event["type"] == "capacity.threshold"]
    [appeared] = [a.event["data"] for a in platform[2:] if "direction" in a.event["data"]]
    assert (gone["direction"], gone["available_h"]) == ("gone", 0)
    assert appeared["direction"] == "appeared"
    assert appeared["available_h"] >= threshold["min_available_h"]
    assert (gone["process"], gone["factory"]) == (best["process"], OKADA)
    [offline] = [a.event for a in platform[:2] if a.event["type"] == "factory.offline"]
    assert offline["data"]["factory"] == OKADA
    assert _types(receiver.at("/okada")) == ["factory.offline", "factory.online"]
    for arrival, secret in [(a, region_hook["secret"]) for a in platform] + [
        (a, own_hook["secret"]) for a in receiver.at("/okada")
    ]:
        assert verified(arrival, secret)
        assert not verified(arrival, "whsec_another")
        assert arrival.headers["Kyoso-Webhook-Id"] == arrival.event["id"]
        assert arrival.event["version"] == 1
    # One change, one event: the factory's going offline is the same event for both keys.
    assert offline["id"] == receiver.at("/okada")[0].event["id"]
    log = server.deliveries("platform", region_hook["id"])
    assert [d["event_id"] for d in log] == [a.event["id"] for a in reversed(platform)]
    assert {(d["status"], d["attempts"], d["status_code"]) for d in log} == {("delivered", 1, 200)}
    assert all(d["delivered_at"] and d["next_attempt_at"] is None for d in log)


def test_a_failing_receiver_gets_the_same_event_again_and_a_dead_one_holds_up_no_one(
    server: ApiServer, receiver: Receiver
) -> None:
    dead = DeadReceiver()
    try:
        events = ["factory.offline", "factory.online"]
        hung = server.subscribe("platform", url=dead.url, events=events, factory=SATO)
        server.set_online(SATO, up=False)
        wait_until(lambda: len(dead.held) == 1, WAIT_S, "an attempt at the dead receiver")

        # While that attempt hangs (it is cut after 60 s), the others are delivered.
        receiver.answer("/flaky", 500, 200)
        flaky = server.subscribe("platform", url=receiver.url("/flaky"), events=events)
        server.subscribe("platform", url=receiver.url("/good"), events=events, factory=OKADA)
        server.set_online(OKADA, up=False)
        wait_until(lambda: len(receiver.at("/good")) == 1, WAIT_S, "the good receiver's event")
        wait_until(lambda: len(receiver.at("/flaky")) == 2, WAIT_S, "the flaky one's retry")
        [hung_delivery] = server.deliveries("platform", hung["id"])
        assert (hung_delivery["status"], hung_delivery["attempts"]) == ("pending", 0)
        assert len(dead.held) == 1

        first, second = receiver.at("/flaky")
        assert (first.answered, second.answered) == (500, 200)
        assert first.body == second.body  # at least once: the same event, byte for byte
        assert first.headers["Kyoso-Webhook-Id"] == second.headers["Kyoso-Webhook-Id"]
        assert first.event["data"]["factory"] == OKADA
        assert receiver.at("/good")[0].event["id"] == first.event["id"]
        [logged] = server.deliveries("platform", flaky["id"])
        assert (logged["status"], logged["attempts"], logged["status_code"]) == (
            "delivered",
            2,
            200,
        )
    finally:
        dead.close()


def test_a_watched_machine_going_down_and_back_up_arrives(
    server: ApiServer, receiver: Receiver
) -> None:
    watched = f"{OKADA}/cnc-02"
    events = ["machine.down", "machine.up"]
    server.subscribe("platform", url=receiver.url("/m"), events=events, machines=[watched])
    server.set_state(OKADA, "cnc-02", MachineState.DOWN)  # as long as a minor stop may be
    wait_until(lambda: len(receiver.at("/m")) == 1, WAIT_S, "machine.down")
    server.set_state(OKADA, "cnc-02", MachineState.RUNNING)
    wait_until(lambda: len(receiver.at("/m")) == 2, WAIT_S, "machine.up")
    down, up = (a.event for a in receiver.at("/m"))
    assert (down["type"], down["data"]["reason"]) == ("machine.down", "down")
    assert up["type"] == "machine.up"
    assert {(e["data"]["factory"], e["data"]["machine"]) for e in (down, up)} == {(OKADA, "cnc-02")}


def test_what_was_pending_is_delivered_after_a_restart(
    fresh_region: Region, tmp_path: Path, receiver: Receiver
) -> None:
    server = ApiServer(fresh_region, tmp_path / "api", max_attempts="50", retry_max_s="1")
    try:
        server.start()
        receiver.answer("/down", 503)
        hook = server.subscribe(
            "platform", url=receiver.url("/down"), events=["factory.offline"], factory=OKADA
        )
        server.set_online(OKADA, up=False)
        wait_until(lambda: len(receiver.at("/down")) >= 1, WAIT_S, "a first attempt")
        server.stop()
        refused = receiver.at("/down")
        receiver.answer("/down", 200)
        server.start()
        wait_until(lambda: receiver.at("/down")[-1].answered == 200, WAIT_S, "the delivery")
        [logged] = server.deliveries("platform", hook["id"])
    finally:
        server.close()
    arrivals = receiver.at("/down")
    assert {a.answered for a in refused} == {503}
    assert [a.answered for a in arrivals[len(refused) :]] == [200]
    assert {a.event["id"] for a in arrivals} == {logged["event_id"]}  # no event made twice
    assert logged["status"] == "delivered"
    assert logged["attempts"] == len(arrivals)
