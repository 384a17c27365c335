"""The edge node and its primary host application's STATE (Sparkplug 3.0): while the host
is offline, or not yet seen, nothing is published and the samples wait in the node's
outbox; once it is online the node births and sends what waited, as historical, none lost.
"""

import uuid
from pathlib import Path

import pytest
from services import Mosquitto
from sparkplug_node import sparkplug_node_modules
from test_gateway_publisher import until
from test_gateway_sparkplug import BOUND_S, Event, Rig, _check_data, rig, run

__all__ = ["sparkplug_node_modules"]  # the fixture, used by name


def _kind(event: Event) -> str:
    topic: str = event["topic"]
    return topic.split("/")[1] if "/STATE/" in topic else topic.split("/")[2]


async def _state(r: Rig, host: str, online: bool, timestamp: int) -> list[Event]:
    """Publish the host's STATE; return what the edge node published before its echo."""
    r.command(op="state", host=host, online=online, timestamp=timestamp)
    before: list[Event] = []
    while (event := await r.next("*")) and _kind(event) != "STATE":
        before.append(event)
    return before


@pytest.mark.integration
@pytest.mark.usefixtures("sparkplug_node_modules")
def test_data_wait_for_the_primary_host_and_go_out_as_historical_none_lost(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    host = f"scada-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with rig(mosquitto, tmp_path, sparkplug={"primary_host_id": host}) as r:
            node = r.gateway.sparkplug
            assert node is not None
            await until(lambda: node.stats.connects == 1, BOUND_S, "the node connected")
            held = await r.advance(3)  # the host not yet seen: held
            assert node.outbox.depth() == len(held) > 0
            # the Kyoso JSON samples do not wait for the Sparkplug host
            publisher = r.gateway.publisher
            await until(lambda: publisher.stats.published_samples >= len(held), BOUND_S, "json")
            assert await _state(r, host, True, 1) == []  # nothing came before it
            nbirth, dbirth = await r.next("NBIRTH"), await r.next("DBIRTH")
            data = await r.take(len(held), "DDATA")
            for event, sample in zip(data, held, strict=True):
                _check_data(event, sample, dbirth, historical=True)
            live = await r.advance(2)
            for event, sample in zip(await r.take(len(live), "DDATA"), live, strict=True):
                _check_data(event, sample, dbirth, historical=False)
            await until(lambda: node.outbox.depth() == 0, BOUND_S, "the outbox emptied")

            offline = await _state(r, host, False, 2)
            assert offline == []
            await until(lambda: not node.stats.host_online, BOUND_S, "the host seen offline")
            held = await r.advance(4)
            assert node.outbox.depth() == len(held) > 0
            # nothing between the host's offline and online STATEs, then a birth
            assert await _state(r, host, True, 3) == []
            again = await r.next()
            assert _kind(again) == "NBIRTH"
            assert (
                again["payload"]["metrics"][0]["value"] == nbirth["payload"]["metrics"][0]["value"]
            )  # the same session's bdSeq
            dbirth = await r.next("DBIRTH")
            data = await r.take(len(held), "DDATA")
            for event, sample in zip(data, held, strict=True):
                _check_data(event, sample, dbirth, historical=True)
            await until(lambda: node.outbox.depth() == 0, BOUND_S, "the outbox emptied")
            assert node.stats.data_messages == 3 + len(live) + len(held)
            assert node.stats.births == 2

    run(scenario)


@pytest.mark.integration
@pytest.mark.usefixtures("sparkplug_node_modules")
def test_a_stale_state_is_ignored(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A STATE older than the last one seen (a late retained copy) changes nothing."""
    host = f"scada-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with rig(mosquitto, tmp_path, sparkplug={"primary_host_id": host}) as r:
            node = r.gateway.sparkplug
            assert node is not None
            await _state(r, host, True, 10)
            await r.next("NBIRTH")
            await _state(r, host, False, 5)  # older than the online one
            samples = await r.advance(2)
            assert len(await r.take(len(samples), "DDATA")) == len(samples)
            assert node.stats.host_online

    run(scenario)
