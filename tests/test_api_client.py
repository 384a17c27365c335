"""A client generated from the server's own OpenAPI document by a generator nobody here
wrote (openapi-python-client, failing on any warning about the document), asking a live
``kyoso api`` the matching platform's questions through its typed functions and models."""

import importlib
import json
import os
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from test_overview import Server, server

from kyoso.capacity.forecast import Reason

__all__ = ["server"]  # test_overview's fixture: a real `kyoso api` on uvicorn

PACKAGE = "kyoso_platform_client"


@pytest.fixture(scope="module")
def generated(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The generated package, imported."""
    workdir = tmp_path_factory.mktemp("client")
    with urllib.request.urlopen(f"{server.base}/openapi.json", timeout=10) as response:  # noqa: S310 (loopback)
        document = json.load(response)
    path = workdir / "openapi.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    bin_dir = str(Path(sys.executable).parent)  # the generator formats with ruff from there
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    generator = [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(path)]
    done = subprocess.run(
        [
            *generator,
            "--output-path",
            str(workdir / PACKAGE),
            "--meta",
            "none",
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout
    sys.path.insert(0, str(workdir))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_the_platform_asks_through_a_generated_client(generated: Any, server: Server) -> None:
    client = generated.AuthenticatedClient(base_url=server.base, token=server.keys["platform"])
    models = _module("models")
    # How much of each process does the region have in the next day?
    region = _module("api.capacity.get_region_capacity").sync(client=client, horizon_h=24)
    assert isinstance(region, models.RegionCapacityOut)
    processes = {p.process.value for p in region.by_process}
    assert "cnc_milling_3axis" in processes
    assert {f.factory for f in region.factories} == set(server.region.simulations)
    for figures in region.by_process:
        assert figures.available <= figures.total
        assert {r.value for r in figures.reasons} <= set(get_args(Reason))
    # Who can take 10 hours of milling within a week?
    found = _module("api.search.search_capacity").sync(
        client=client, process=models.Process.CNC_MILLING_3AXIS, hours=10, within_days=7
    )
    assert isinstance(found, models.SearchOut)
    assert found.candidates
    best = found.candidates[0]
    assert best.factory in server.region.simulations
    # That factory's capacity (aggregated: a platform key sees no machines).
    factory = _module("api.capacity.get_factory_capacity").sync(
        client=client, factory=best.factory, horizon_h=24
    )
    assert isinstance(factory, models.FactoryCapacityOut)
    assert factory.factory == best.factory
    assert not factory.machines  # null or unset for the platform
    # What its shared machines can do, and its KPIs summed where it shares them (none here).
    machines = _module("api.factories.list_machines").sync(client=client, factory=best.factory)
    assert machines
    assert all(isinstance(m, models.PublicMachineOut) for m in machines)
    assert all(m.capabilities and m.timezone for m in machines)
    kpis = _module("api.factories.get_kpis").sync(
        client=client,
        factory=best.factory,
        start=server.region.end - timedelta(days=1),
        end=server.region.end,
    )
    assert isinstance(kpis, models.SharedKpiReport)
    assert (kpis.machines, kpis.by_process) == (0, [])


def test_problems_arrive_as_typed_models(generated: Any, server: Server) -> None:
    models = _module("models")
    client = generated.AuthenticatedClient(base_url=server.base, token=server.keys["platform"])
    answer = _module("api.capacity.get_factory_capacity").sync_detailed(
        client=client, factory="nowhere", horizon_h=24
    )
    assert answer.status_code == 404
    assert isinstance(answer.parsed, models.Problem)
    assert answer.parsed.code.value == "not_found"
    stranger = generated.AuthenticatedClient(base_url=server.base, token="kyo_x_y")  # noqa: S106
    refused = _module("api.capacity.get_region_capacity").sync_detailed(client=stranger)
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Problem)
    too_far = _module("api.capacity.get_region_capacity").sync_detailed(
        client=client, horizon_h=10_000
    )
    assert too_far.status_code == 422
    assert isinstance(too_far.parsed, models.Problem)
    assert [e.loc for e in too_far.parsed.errors] == [["query", "horizon_h"]]
