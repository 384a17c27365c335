"""Fair use of the capacity API (issue S7): one key flooding it gets 429 with Retry-After,
while other keys and ``/healthz`` are served as before.

The rate limit is checked on the real app with the limiter's clock frozen, so the counts
are exact: with rate r and burst b, exactly b requests pass, then 429 until a token is back.
The bound on expensive requests is checked with slots held through the limiter itself (in
the app's event loop), so which request finds the bound reached is certain, and on a real
``kyoso api`` process flooded with KPI reports over long windows, where only what holds
whatever the timing is asserted: every answer is 200 or 429, never more than the bound at
once, the other tenant and ``/healthz`` always 200. No test measures a latency.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from apikit import ORIGIN, Api, Clocks, Region, build_region, running_api
from examples import documented_defaults
from fastapi import HTTPException
from ingestkit import wait_until
from prometheus_client.parser import text_string_to_metric_families
from services import free_port

from kyoso.api.keys import ApiKeyStore, Principal, Scope, ScopeKind, parse_scope
from kyoso.api.limits import Limiter, RequestLimits
from kyoso.api.settings import load_settings
from kyoso.validation import ConfigError

OWN = "okada-machining"
"""The flooding key's factory."""
OTHER = "mori-plastics"
"""Another tenant's factory."""
FLOODER = f"factory:{OWN}"
KPIS = f"/v1/factories/{OWN}/kpis"
EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "api" / "api.example.yaml"
UNLIMITED = ("/healthz", "/readyz", "/metrics", "/", "/openapi.json", "/docs", "/redoc")


def _window(days: float) -> dict[str, str]:
    """A KPI window of ``days`` ending at the region's origin + 1 day."""
    end = ORIGIN + timedelta(days=1)
    return {
        "start": (end - timedelta(days=days)).isoformat(),
        "end": end.isoformat(),
    }


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 1, interval_s=600)


@contextlib.contextmanager
def limited_api(
    region: Region, workdir: Path, limits: RequestLimits, clocks: Clocks | None = None
) -> Iterator[Api]:
    """The harness' API (apikit) with ``limits``, the limiter on ``clocks``."""
    clocks = clocks or Clocks(region.end + timedelta(seconds=30))
    with running_api(region, workdir, limits=limits, clocks=clocks) as api:
        yield api


def _metrics(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _limited(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """``kyoso_api_rate_limited_total`` by ``<scope_kind>/<reason>``."""
    return {
        f"{dict(labels)['scope_kind']}/{dict(labels)['reason']}": value
        for (name, labels), value in found.items()
        if name == "kyoso_api_rate_limited_total"
    }


def _is_429(response: Any, retry_after: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == retry_after
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"]) == (429, "too_many_requests")
    assert isinstance(body["detail"], str)


# --- the rate per key ------------------------------------------------------------------


def test_a_flooding_key_gets_exactly_its_burst_then_429_and_no_one_else_does(
    region: Region, tmp_path: Path
) -> None:
    clock = Clocks(region.end + timedelta(seconds=30))
    limits = RequestLimits(rate_per_s=0.25, burst=5)
    with limited_api(region, tmp_path, limits, clock) as api:
        flooder = api.headers(FLOODER)
        statuses = [
            api.client.get(f"/v1/factories/{OWN}/machines", headers=flooder).status_code
            for _ in range(5)
        ]
        assert statuses == [200] * 5
        for _ in range(5):  # a token is back in 1 / 0.25 s = 4 s
            _is_429(api.client.get(f"/v1/factories/{OWN}/gateways", headers=flooder), "4")
        _is_429(api.client.get(KPIS, params=_window(90), headers=flooder), "4")

        # The others are served while the flooder is limited: each key has its own bucket,
        # and routes without a key have none.
        for path in UNLIMITED * 10:
            assert api.client.get(path).status_code == 200, path
        assert api.client.get("/v1/capacity").status_code == 401  # no key: not limited
        for scope, path in [
            ("platform", "/v1/capacity"),
            (f"factory:{OTHER}", f"/v1/factories/{OTHER}/machines"),
            ("admin", f"/v1/factories/{OWN}/capacity"),
        ]:
            assert api.client.get(path, headers=api.headers(scope)).status_code == 200, scope
        _is_429(api.client.get(f"/v1/factories/{OWN}/machines", headers=flooder), "4")

        clock.advance(3.0)  # 0.75 token: not yet
        _is_429(api.client.get(f"/v1/factories/{OWN}/machines", headers=flooder), "1")
        clock.advance(1.0)  # one token, exactly one request
        assert api.client.get(f"/v1/factories/{OWN}/machines", headers=flooder).status_code == 200
        _is_429(api.client.get(f"/v1/factories/{OWN}/machines", headers=flooder), "4")
        clock.advance(3600.0)  # refilled up to the burst, no further
        statuses = [
            api.client.get(f"/v1/factories/{OWN}/machines", headers=flooder).status_code
            for _ in range(6)
        ]
        assert statuses == [200] * 5 + [429]
        limited = _limited(_metrics(api))
    assert limited == {
        f"{kind}/{reason}": (10.0 if (kind, reason) == ("factory", "rate") else 0.0)
        for kind in ("platform", "factory", "admin")
        for reason in ("rate", "concurrency")
    }


# --- expensive requests ----------------------------------------------------------------


def test_expensive_requests_are_bounded_per_key_and_in_all(region: Region, tmp_path: Path) -> None:
    limits = RequestLimits(max_concurrent=2, max_concurrent_total=3, max_wait_s=0)
    with limited_api(region, tmp_path, limits) as api:
        app: Any = api.client.app
        limiter: Limiter = app.state.limiter
        keys: ApiKeyStore = app.state.keys

        def principal(scope: str) -> Principal:
            found = keys.authenticate(api.keys[scope])
            assert found is not None
            return found

        def held(scope: str) -> contextlib.AbstractContextManager[None]:
            """An expensive request of ``scope``'s key running until the block ends."""
            portal = api.client.portal
            assert portal is not None
            return portal.wrap_async_context_manager(limiter.slot(principal(scope)))

        flooder, other = api.headers(FLOODER), api.headers(f"factory:{OTHER}")
        window = _window(90)
        with held(FLOODER), held(FLOODER):
            _is_429(api.client.get(KPIS, params=window, headers=flooder), "1")
            _is_429(api.client.get(f"/v1/factories/{OWN}/capacity", headers=flooder), "1")
            # Cheap requests of the same key, and everyone else's, are served.
            assert api.client.get(f"/v1/factories/{OWN}/machines", headers=flooder).is_success
            assert api.client.get("/healthz").status_code == 200
            found = _metrics(api)
            running = ("kyoso_api_expensive_running", (("scope_kind", "factory"),))
            assert found[running] == 2
            other_kpis = f"/v1/factories/{OTHER}/kpis"
            assert api.client.get(other_kpis, params=window, headers=other).status_code == 200
            with held("platform"):  # three running: every key is bounded now
                _is_429(api.client.get(other_kpis, params=window, headers=other), "1")
                assert api.client.get(f"/v1/factories/{OTHER}/machines", headers=other).is_success
                assert api.client.get("/healthz").status_code == 200
            assert api.client.get(other_kpis, params=window, headers=other).status_code == 200
        for _ in range(3):  # a refused or failed request gives its slot back
            ghost = api.client.get("/v1/factories/nowhere/kpis", params=window, headers=flooder)
            assert ghost.status_code == 404
        assert api.client.get(KPIS, params=window, headers=flooder).status_code == 200
        found = _metrics(api)
    assert _limited(found)["factory/concurrency"] == 3
    assert _limited(found)["factory/rate"] == 0
    peak = ("kyoso_api_expensive_running_peak", (("scope_kind", "factory"),))
    assert found[peak] == 3  # the flooder's two and the other factory's one
    assert found["kyoso_api_expensive_running", (("scope_kind", "factory"),)] == 0


def test_a_request_waits_for_a_slot_so_long_and_no_longer() -> None:
    flooder = Principal("0123456789ab", "flooder", Scope(ScopeKind.FACTORY, "a"))
    other = Principal("ba9876543210", "other", Scope(ScopeKind.PLATFORM))

    async def scenario(limiter: Limiter, *, waits: bool) -> list[str]:
        order: list[str] = []
        first, second = asyncio.Event(), asyncio.Event()

        async def running(name: str, done: asyncio.Event) -> None:
            async with limiter.slot(flooder):
                order.append(f"{name} runs")
                await done.wait()
            order.append(f"{name} ends")

        async def third() -> None:
            async with limiter.slot(flooder):
                order.append("third runs")

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(running("first", first))
            tasks.create_task(running("second", second))
            await asyncio.sleep(0)
            if waits:
                waiting = tasks.create_task(third())
                await asyncio.sleep(0)
                assert order == ["first runs", "second runs"]  # queued, not run beside them
                first.set()
                await waiting  # admitted as soon as a slot was freed
            else:  # both are held past the wait
                with pytest.raises(HTTPException) as caught:
                    await third()
                assert caught.value.status_code == 429
                assert caught.value.headers == {"Retry-After": "1"}
                with pytest.raises(HTTPException):  # the bound of all keys: two running
                    async with limiter.slot(other):
                        pass
                first.set()
            second.set()
        assert limiter.running.total() == 0
        return order

    def limiter(wait_s: float) -> Limiter:
        limits = RequestLimits(max_concurrent=2, max_concurrent_total=2, max_wait_s=wait_s)
        return Limiter(limits, expensive=())

    patient = limiter(60.0)
    assert asyncio.run(scenario(patient, waits=True)) == [
        "first runs",
        "second runs",
        "first ends",
        "third runs",
        "second ends",
    ]
    assert patient.rejected.total() == 0
    assert patient.peak == Counter({ScopeKind.FACTORY: 2})
    hurried = limiter(0.05)
    assert asyncio.run(scenario(hurried, waits=False)) == [
        "first runs",
        "second runs",
        "first ends",
        "second ends",
    ]
    assert hurried.rejected == Counter(
        {(ScopeKind.FACTORY, "concurrency"): 1, (ScopeKind.PLATFORM, "concurrency"): 1}
    )


def test_a_real_server_flooded_with_kpi_reports_keeps_serving_the_others(
    region: Region, tmp_path: Path
) -> None:
    """40 distinct 90-day KPI reports at concurrency 20 from one key (the issue's flood)
    against ``kyoso api`` with its default limits, while another tenant and ``/healthz``
    are asked too."""
    keys_path = tmp_path / "keys.sqlite3"
    with ApiKeyStore(keys_path, create=True) as keys:
        made = {
            scope: keys.create(scope.replace(":", "-"), parse_scope(scope)).key
            for scope in (FLOODER, "platform")
        }
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KYOSO_API_")},
        "KYOSO_API_PORT": str(port),
        "KYOSO_API_SQLITE_PATH": str(region.path),
        "KYOSO_API_KEYS": str(keys_path),
        "KYOSO_API_BOOKINGS_PATH": str(tmp_path / "bookings.sqlite3"),
        "KYOSO_API_PROFILE_CACHE_PATH": str(tmp_path / "profiles.sqlite3"),
        "KYOSO_API_WEBHOOKS__PATH": str(tmp_path / "webhooks.sqlite3"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "kyoso.cli", "api"], env=env, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"

    def get(path: str, scope: str | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(base + path)  # noqa: S310 (loopback)
        if scope is not None:
            request.add_header("Authorization", f"Bearer {made[scope]}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def kpis(day: int) -> tuple[int, dict[str, str], bytes]:
        window = _window(90 - day / 10)
        query = "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in window.items())
        return get(f"{KPIS}?{query}", FLOODER)

    try:
        wait_until(lambda: _answers(f"{base}/healthz"), what="the API")
        with ThreadPoolExecutor(22) as pool:
            flood = [pool.submit(kpis, day) for day in range(40)]
            healthz = [pool.submit(get, "/healthz") for _ in range(20)]
            tenant = [get("/v1/capacity?horizon_h=24", "platform")[0] for _ in range(10)]
            answers = [f.result() for f in flood]
            health = [h.result()[0] for h in healthz]
        metrics = get("/metrics")[2].decode()
    finally:
        server.terminate()
        server.wait(30)
    assert tenant == [200] * 10
    assert health == [200] * 20
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {200, 429}
    assert 200 in statuses
    for status, headers, body in answers:
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            assert json.loads(body)["code"] == "too_many_requests"
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert 1 <= found["kyoso_api_expensive_running_peak", (("scope_kind", "factory"),)] <= 2
    refused = (("reason", "concurrency"), ("scope_kind", "factory"))
    assert found["kyoso_api_rate_limited_total", refused] == statuses.count(429)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):  # noqa: S310 (loopback)
            return True
    except OSError:
        return False


# --- settings and the document -----------------------------------------------------------


def test_the_limits_are_settings_with_documented_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("KYOSO_API_"):
            monkeypatch.delenv(name)
    documented = documented_defaults(EXAMPLE, "limits")
    assert documented == {key: field.default for key, field in RequestLimits.model_fields.items()}
    monkeypatch.setenv("KYOSO_API_LIMITS__RATE_PER_S", "5")
    assert load_settings(EXAMPLE).limits.rate_per_s == 5
    path = tmp_path / "api.yaml"
    path.write_text("limits:\n  max_concurrent: 9\n  max_concurrent_total: 4\n")
    with pytest.raises(ConfigError, match="max_concurrent"):
        load_settings(path)


def test_the_document_names_429_on_every_route_with_a_key(region: Region, tmp_path: Path) -> None:
    with running_api(region, tmp_path) as api:
        document = api.client.get("/openapi.json").json()
    operations = [op for methods in document["paths"].values() for op in methods.values()]
    assert operations
    for operation in operations:
        assert "429" in operation["responses"], operation["operationId"]
        assert "Retry-After" in operation["responses"]["429"]["headers"]
