"""The capacity API's Prometheus /metrics: requests by route template, caches, snapshots."""

from pathlib import Path

from apikit import build_region, running_api
from prometheus_client.parser import text_string_to_metric_families


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_by_route_template_and_cache_outcome(tmp_path: Path) -> None:
    region = build_region(tmp_path / "store.sqlite3", 1)
    factory = next(iter(region.simulations))
    with running_api(region, tmp_path) as api:
        admin = api.headers("admin")
        for _ in range(3):
            assert api.client.get(f"/v1/factories/{factory}/capacity", headers=admin).is_success
        assert api.client.get("/v1/factories/nowhere/capacity", headers=admin).status_code == 404
        assert api.client.get("/v1/capacity").status_code == 401
        assert api.client.get("/no/such/path").status_code == 404
        response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = _samples(response.text)
    route = "/v1/factories/{factory}/capacity"  # one series per template, not per factory

    def count(path: str, status: str) -> float:
        labels = (("method", "GET"), ("route", path), ("status", status))
        return found.get(("kyoso_api_request_seconds_count", labels), 0)

    assert count(route, "200") == 3
    assert count(route, "404") == 1
    assert count("/v1/capacity", "401") == 1
    assert count("<unmatched>", "404") == 1
    assert not any(factory in str(key) for key in found)
    capacity = {
        dict(labels)["outcome"]: value
        for (name, labels), value in found.items()
        if name == "kyoso_api_cache_lookups_total" and dict(labels)["cache"] == "capacity"
    }
    assert capacity["miss"] == 1  # the first request computed it...
    assert capacity["hit"] == 2  # ...the next two were answered from the cache
    assert not any(name.startswith("kyoso_api_snapshots") for name, _ in found)  # none run
