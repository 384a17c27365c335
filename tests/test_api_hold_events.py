"""Holds told to webhooks: the factory and the platform key that placed a hold hear of its
creation, confirmation, release and expiry, each once; other keys hear nothing. The app
runs in process on the test's clock, its deliveries go to a real HTTP receiver."""

from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from apikit import Clocks, Region, build_region, running_api
from fastapi import FastAPI
from ingestkit import wait_until
from webhookkit import OKADA, WAIT_S, Receiver, receiver

from kyoso.api.keys import ApiKeyStore, parse_scope
from kyoso.api.webhook_config import WebhookSettings

__all__ = ["receiver"]  # fixtures

HOLD_EVENTS = ["hold.created", "hold.confirmed", "hold.released", "hold.expired"]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 2, interval_s=600)


def test_the_factory_and_the_placing_platform_hear_of_a_hold(
    region: Region, tmp_path: Path, receiver: Receiver
) -> None:
    clocks = Clocks(region.end + timedelta(seconds=30))
    settings = WebhookSettings(path=None, allow_private_targets=True)
    with running_api(region, tmp_path, clocks=clocks, webhooks=settings) as api:
        keys: ApiKeyStore = cast(FastAPI, api.client.app).state.keys
        rival = keys.create("rival", parse_scope("platform")).key
        client = api.client

        def headers(scope: str) -> dict[str, str]:
            key = rival if scope == "rival" else api.keys[scope]
            return {"Authorization": f"Bearer {key}"}

        for scope, path in [
            ("platform", "/platform"),
            ("rival", "/rival"),
            (f"factory:{OKADA}", "/okada"),
            ("factory:mori-plastics", "/mori"),
        ]:
            body = {"url": receiver.url(path), "events": HOLD_EVENTS}
            made = client.post("/v1/webhooks", json=body, headers=headers(scope))
            assert made.status_code == 201, made.text

        now = api.service.now()
        window = {"start": now.isoformat(), "end": (now + timedelta(days=2)).isoformat()}

        def hold(**more: Any) -> str:
            body = {"factory": OKADA, "machine": "cnc-01", "hours": 1, "order_ref": "PO-9"}
            placed = client.post(
                "/v1/holds", json=body | window | more, headers=headers("platform")
            )
            assert placed.status_code == 201, placed.text
            return str(placed.json()["id"])

        soon, kept = hold(expires_in_s=60), hold()
        confirm = client.post(f"/v1/holds/{kept}/confirm", headers=headers(f"factory:{OKADA}"))
        assert confirm.status_code == 200
        clocks.advance(61)  # the first expires; the watcher tells of it
        wait_until(lambda: len(receiver.at("/okada")) == 4, WAIT_S, "four hold events")
        release = client.post(f"/v1/holds/{kept}/release", headers=headers("platform"))
        assert release.status_code == 200
        wait_until(lambda: len(receiver.at("/platform")) == 5, WAIT_S, "five hold events")
        wait_until(lambda: len(receiver.at("/okada")) == 5, WAIT_S, "five hold events")

    def told(path: str) -> list[tuple[str, str, str]]:
        events = sorted((a.event for a in receiver.at(path)), key=lambda e: e["created"])
        return [(e["type"], e["data"]["hold"], e["id"]) for e in events]

    platform, okada = told("/platform"), told("/okada")
    assert platform == okada  # the same events, with the same ids
    assert sorted((kind, hold) for kind, hold, _ in platform) == sorted(
        [
            ("hold.created", soon),
            ("hold.created", kept),
            ("hold.confirmed", kept),
            ("hold.expired", soon),
            ("hold.released", kept),
        ]
    )
    assert receiver.at("/rival") == []
    assert receiver.at("/mori") == []
    expired = next(a.event for a in receiver.at("/okada") if a.event["type"] == "hold.expired")
    assert expired["data"]["status"] == "expired"
    assert expired["data"]["order_ref"] == "PO-9"
