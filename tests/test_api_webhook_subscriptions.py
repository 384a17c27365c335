"""Webhook subscriptions: each key's own, checked against what the key may see, and the
URLs deliveries may go to (kyoso/api/routes/webhooks.py); and the events other features
send (:meth:`kyoso.api.webhooks.WebhookHub.emit`). A real ``kyoso api``, except where the
app's defaults are the point: then the app in process, over real stores."""

import asyncio
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from apikit import Region, build_region, running_api
from fastapi import FastAPI
from fastapi.testclient import TestClient
from ingestkit import wait_until
from webhookkit import (
    OKADA,
    SATO,
    WAIT_S,
    ApiServer,
    Receiver,
    fresh_region,
    receiver,
    server,
)

from kyoso.api.app import create_app
from kyoso.api.settings import ApiSettings
from kyoso.api.webhook_config import WebhookSettings
from kyoso.api.webhooks import Audience, WebhookHub
from kyoso.store import SqliteStore

__all__ = ["fresh_region", "receiver", "server"]  # fixtures

# --- subscriptions ---------------------------------------------------------------------------

NO_SUCH = "wh_" + "0" * 24


def test_a_key_sees_and_touches_only_its_own_subscriptions(
    server: ApiServer, receiver: Receiver
) -> None:
    made = server.subscribe("platform", url=receiver.url("/p"), events=["factory.offline"])
    assert made["secret"].startswith("whsec_")
    for scope in (f"factory:{OKADA}", "admin"):
        assert server.ask("GET", "/v1/webhooks", scope).json() == []
        for method, suffix in [("GET", ""), ("GET", "/deliveries"), ("DELETE", "")]:
            theirs = server.ask(method, f"/v1/webhooks/{made['id']}{suffix}", scope)
            none = server.ask(method, f"/v1/webhooks/{NO_SUCH}{suffix}", scope)
            assert theirs.status_code == none.status_code == 404, (scope, method, suffix)
            assert theirs.json()["detail"].replace(made["id"], NO_SUCH) == none.json()["detail"]
    listed = server.ask("GET", "/v1/webhooks", "platform").json()
    assert [w["id"] for w in listed] == [made["id"]]
    assert "secret" not in listed[0]  # shown once, at creation
    assert server.ask("GET", f"/v1/webhooks/{made['id']}", "platform").json() == listed[0]
    assert {**listed[0], "secret": made["secret"]} == made
    assert server.ask("DELETE", f"/v1/webhooks/{made['id']}", "platform").status_code == 204
    assert server.ask("GET", f"/v1/webhooks/{made['id']}", "platform").status_code == 404


def _refused(answer: httpx.Response, where: list[str]) -> str:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    [error] = answer.json()["errors"]
    assert error["loc"][: len(where)] == where, error
    message: str = error["msg"]
    return message


def test_a_subscription_asks_only_for_what_its_key_may_see(
    fresh_region: Region, tmp_path: Path, receiver: Receiver
) -> None:
    server = ApiServer(fresh_region, tmp_path / "api", max_subscriptions_per_key="2")

    async def unshare() -> None:  # okada's grinder: its capacity is not the region's
        async with SqliteStore(server.region.path) as store:
            [grinder] = [d for d in await store.machines(OKADA) if d.machine == "grind-01"]
            unshared = grinder.sharing.model_copy(update={"capacity": False})
            await store.write_description(grinder.model_copy(update={"sharing": unshared}))

    asyncio.run(unshare())
    url = receiver.url("/hook")
    down = ["machine.down", "machine.up"]
    try:
        server.start()
        own, platform = f"factory:{OKADA}", "platform"
        cases: list[tuple[str, dict[str, Any], list[str], str]] = [
            (own, {"factory": SATO}, ["body", "factory"], f"no factory {SATO!r}"),
            (own, {"factory": "no-such"}, ["body", "factory"], "no factory 'no-such'"),
            (own, {"events": down, "machines": [f"{SATO}/laser-01"]}, ["body", "machines", "0"],
             f"no machine '{SATO}/laser-01'"),
            (platform, {"events": down, "machines": [f"{OKADA}/grind-01"]},
             ["body", "machines", "0"], f"no machine '{OKADA}/grind-01'"),
            (platform, {"events": down, "machines": [f"{OKADA}/no-such"]},
             ["body", "machines", "0"], f"no machine '{OKADA}/no-such'"),
            (platform, {"events": ["capacity.threshold"], "process": "cnc_turning"}, ["body"],
             "capacity.threshold needs a threshold"),
            (platform, {"events": ["capacity.threshold"], "threshold": {"min_available_h": 8}},
             ["body"], "capacity.threshold needs the process"),
            (platform, {"events": ["factory.offline"], "machines": [f"{OKADA}/cnc-01"]},
             ["body"], "machine.down and machine.up need machines"),
            (platform, {"url": "https://" + "a" * 2100 + ".example/"}, ["body", "url"],
             "at most 2048 characters"),
        ]  # fmt: skip
        for scope, body, where, message in cases:
            asked = {"url": url, "events": ["factory.offline"], **body}
            message_found = _refused(server.ask("POST", "/v1/webhooks", scope, asked), where)
            assert message in message_found, (body, message_found)
        # What the key may see is taken: a factory key's unshared machine, for instance.
        server.subscribe(own, url=url, events=down, machines=[f"{OKADA}/grind-01"])
        server.subscribe(own, url=url, events=["factory.offline"])
        third = {"url": url, "events": ["factory.online"]}
        too_many = server.ask("POST", "/v1/webhooks", own, third)
        assert too_many.status_code == 409
        assert "2 subscriptions" in too_many.json()["detail"]
        assert server.ask("GET", "/v1/webhooks", platform).json() == []  # others' count apart
    finally:
        server.close()


# --- in process: the defaults, and events other features send --------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("history") / "store.sqlite3", 2, interval_s=600)


def test_private_and_plain_http_targets_are_refused_by_default(
    region: Region, tmp_path: Path
) -> None:
    assert ApiSettings().webhooks.allow_private_targets is False
    with running_api(region, tmp_path) as api:  # the app's webhooks at their defaults
        for url, message in [
            ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
            ("https://localhost/hook", "is a loopback address"),
            ("https://[::1]/hook", "::1 is a loopback address"),
            ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
            ("https://192.168.1.20:8443/hook", "192.168.1.20 is a private address"),
            ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local"),
            ("https://[::ffff:127.0.0.1]/hook", "127.0.0.1 is a loopback address"),
            ("https://0.0.0.0/hook", "0.0.0.0 is not a host's address"),
            ("http://8.8.8.8/hook", "the URL must be https"),
            ("ftp://8.8.8.8/hook", "the URL must be https://host/"),
            ("https://user:secret@8.8.8.8/hook", "no credentials in the URL"),
            ("https://no-such-host.invalid/hook", "no-such-host.invalid does not resolve"),
        ]:
            body = {"url": url, "events": ["factory.offline"]}
            asked = api.client.post("/v1/webhooks", json=body, headers=api.headers("platform"))
            assert message in _refused(asked, ["body", "url"]), url
        public = {"url": "https://8.8.8.8/hook", "events": ["factory.offline"]}
        made = api.client.post("/v1/webhooks", json=public, headers=api.headers("platform"))
        assert made.status_code == 201, made.text


def test_other_features_emit_events_to_the_keys_they_may_reach(
    region: Region, tmp_path: Path, receiver: Receiver
) -> None:
    """``hub.emit`` (a hold placed, say): the factory's own keys, and the platform keys when
    regional (only those named, if any); subscriptions filtered on another factory or
    process, and other factories' keys, are not told."""
    with running_api(region, tmp_path) as api:
        app = cast(FastAPI, api.client.app)
        settings = WebhookSettings(path=None, allow_private_targets=True)
        webhooks = create_app(api.service, app.state.keys, webhooks=settings)
        with TestClient(webhooks) as client:

            def subscribe(scope: str, path: str, **filters: Any) -> None:
                body = {"url": receiver.url(path), "events": ["factory.offline"], **filters}
                made = client.post("/v1/webhooks", json=body, headers=api.headers(scope))
                assert made.status_code == 201, made.text

            subscribe("platform", "/platform")
            subscribe("platform", "/platform-sato", factory=SATO)
            subscribe("platform", "/platform-turning", process="cnc_turning")
            subscribe(f"factory:{OKADA}", "/okada")
            subscribe(f"factory:{SATO}", "/sato")
            hub: WebhookHub = webhooks.state.webhooks
            data = {"factory": OKADA, "process": "cnc_milling_5axis"}
            assert client.portal is not None  # the app runs
            emit = client.portal.call
            told = emit(hub.emit, "factory.offline", data, Audience(OKADA, regional=True))
            wait_until(lambda: len(receiver.arrivals) == 2, WAIT_S, "two deliveries")
            only_own = emit(hub.emit, "factory.offline", data, Audience(OKADA))
            platform_key = {api.keys["platform"].split("_")[1]}
            only_named = Audience(OKADA, regional=True, key_ids=frozenset(platform_key))
            named = emit(hub.emit, "factory.offline", data, only_named)
            wait_until(lambda: len(receiver.arrivals) == 5, WAIT_S, "five deliveries")
            with pytest.raises(ValueError, match=r"unknown event type 'order\.shipped'"):
                emit(hub.emit, "order.shipped", data, Audience(OKADA))
    by_event = {
        event: sorted(a.path for a in receiver.arrivals if a.event["id"] == event)
        for event in (told, only_own, named)
    }
    # Naming keys narrows the regional keys told; the factory's own are told still.
    assert by_event == {
        told: ["/okada", "/platform"],
        only_own: ["/okada"],
        named: ["/okada", "/platform"],
    }
    assert receiver.arrivals[0].event["data"] == data
