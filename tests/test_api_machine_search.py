"""Machine-aware search (``GET /v1/search``): the part's size, thickness, force, weight and
tolerance matched against what the machines' descriptions state, on a real app over the
simulated region, some of whose descriptions the test rewrites."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from apikit import GATEWAY, Api, Region, build_region, get_json, running_api

from kyoso.contract import Capability, MachineDescription, Material, Process
from kyoso.simulators.history import history_descriptions
from kyoso.store import SqliteStore

MILL = Process.CNC_MILLING_3AXIS
BRAKE = Process.PRESS_BRAKING
WITHIN_DAYS = 2

CAPABILITIES = {
    ("okada-machining", "cnc-02"): Capability(
        process=MILL,
        materials=[Material.ALUMINIUM, Material.STEEL],
        envelope_mm=(762, 406, 508),
        max_part_kg=300,
        tolerance_mm=0.01,
    ),
    ("okada-machining", "cnc-03"): Capability(  # states no weight limit and no tolerance
        process=MILL, materials=[Material.ALUMINIUM], envelope_mm=(500, 300, 300)
    ),
    ("mori-plastics", "mill-01"): Capability(
        process=MILL,
        materials=[Material.STEEL],
        envelope_mm=(1000, 520, 500),
        max_part_kg=500,
        tolerance_mm=0.005,
    ),
    ("sato-sheetmetal", "brake-01"): Capability(
        process=BRAKE, materials=[Material.STEEL], max_thickness_mm=10, force_kn=1300
    ),
    ("sato-sheetmetal", "brake-02"): Capability(  # states no force
        process=BRAKE, materials=[Material.STEEL], max_thickness_mm=6
    ),
}
"""The capabilities the test gives these machines (the only mills and press brakes)."""


def redescribed(region: Region, factory: str, machine: str, **update: Any) -> MachineDescription:
    """``machine``'s description as its gateway published it, changed by ``update`` and
    dated at the region's end (a newer description replaces the retained one)."""
    config = region.configs[factory]
    found = next(
        d
        for d in history_descriptions(config, region.origin.timestamp(), gateway=GATEWAY)
        if d.machine == machine
    )
    return found.model_copy(update={**update, "updated_at": region.end})


def write(region: Region, descriptions: list[MachineDescription]) -> None:
    async def store() -> None:
        async with SqliteStore(region.path) as opened:
            for description in descriptions:
                await opened.write_description(description)

    asyncio.run(store())


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    built = build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 2, interval_s=600)
    write(
        built,
        [
            redescribed(built, factory, machine, capabilities=[capability])
            for (factory, machine), capability in CAPABILITIES.items()
        ],
    )
    return built


@pytest.fixture(scope="module")
def api(region: Region, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(region, tmp_path_factory.mktemp("api")) as started:
        yield started


def search(api: Api, process: Process = MILL, hours: float = 1, **asked: Any) -> Any:
    return get_json(
        api,
        "/v1/search",
        "platform",
        process=process.value,
        hours=hours,
        within_days=WITHIN_DAYS,
        **asked,
    )


def qualified(api: Api, process: Process = MILL, **asked: Any) -> dict[str, set[str]]:
    """The qualified machines of each candidate."""
    body = search(api, process, **asked)
    return {c["factory"]: set(c["qualified_machines"]) for c in body["candidates"]}


def test_without_attributes_every_shared_machine_of_the_process_qualifies(api: Api) -> None:
    body = search(api)
    by_factory = {c["factory"]: c for c in body["candidates"]}
    assert {f: set(c["qualified_machines"]) for f, c in by_factory.items()} == {
        "okada-machining": {"cnc-02", "cnc-03"},
        "mori-plastics": {"mill-01"},
    }
    okada = by_factory["okada-machining"]
    assert okada["machines"] == 2
    assert set(okada) == {  # the answer of before, and the machines that qualified
        "factory",
        "available",
        "confidence",
        "machines",
        "covers",
        "largest_machine",
        "machines_needed",
        "data_age_s",
        "qualified_machines",
    }


def test_a_part_fits_rotated_and_not_when_too_large_in_every_orientation(api: Api) -> None:
    # As given, 700 mm along y is more than cnc-02's 406: it fits turned on its side.
    assert qualified(api, part_mm="400,700,200") == {
        "okada-machining": {"cnc-02"},  # cnc-03's 500 x 300 x 300 is too small for it
        "mori-plastics": {"mill-01"},
    }
    assert qualified(api, part_mm="100,1000,100") == {"mori-plastics": {"mill-01"}}
    assert qualified(api, part_mm="800,600,600") == {}


def test_thickness_and_force_filter_the_press_brakes(api: Api) -> None:
    assert qualified(api, BRAKE, thickness_mm=5) == {"sato-sheetmetal": {"brake-01", "brake-02"}}
    assert qualified(api, BRAKE, thickness_mm=8) == {"sato-sheetmetal": {"brake-01"}}
    assert qualified(api, BRAKE, thickness_mm=12) == {}
    # brake-02 states no force: however little is needed, it cannot be promised.
    assert qualified(api, BRAKE, force_kn=50) == {"sato-sheetmetal": {"brake-01"}}
    assert qualified(api, BRAKE, force_kn=1300) == {"sato-sheetmetal": {"brake-01"}}
    assert qualified(api, BRAKE, force_kn=1301) == {}


def test_weight_and_tolerance_filter_and_an_unstated_one_does_not_qualify(api: Api) -> None:
    assert qualified(api, part_kg=100) == {
        "okada-machining": {"cnc-02"},  # cnc-03 states no weight limit
        "mori-plastics": {"mill-01"},
    }
    assert qualified(api, part_kg=400) == {"mori-plastics": {"mill-01"}}
    assert qualified(api, tolerance_mm=0.01) == {
        "okada-machining": {"cnc-02"},
        "mori-plastics": {"mill-01"},
    }
    assert qualified(api, tolerance_mm=0.005) == {"mori-plastics": {"mill-01"}}
    assert qualified(api, tolerance_mm=0.001) == {}
    # The loosest tolerance there is: cnc-03 states none, so it still does not qualify.
    assert "cnc-03" not in qualified(api, tolerance_mm=10).get("okada-machining", set())


def test_attributes_combine_with_the_material(api: Api) -> None:
    part = "400,700,200"
    assert qualified(api, material="steel", part_mm=part) == {
        "okada-machining": {"cnc-02"},
        "mori-plastics": {"mill-01"},
    }
    assert qualified(api, material="aluminium", part_mm=part) == {"okada-machining": {"cnc-02"}}
    assert qualified(api, material="aluminium") == {"okada-machining": {"cnc-02", "cnc-03"}}
    assert qualified(api, material="aluminium", tolerance_mm=0.02, part_kg=10) == {
        "okada-machining": {"cnc-02"}
    }


def test_one_machine_takes_the_hours_whole_on_a_qualifying_machine(api: Api) -> None:
    mills = {
        m["machine"]: m
        for m in get_json(
            api, "/v1/factories/okada-machining/capacity", horizon_h=WITHIN_DAYS * 24
        )["machines"]
        if m["machine"] in {"cnc-02", "cnc-03"}
    }
    assert all(m["available"] > 0.5 and m["confidence"] > 0 for m in mills.values()), mills
    largest = max(m["available"] for m in mills.values())
    hours = largest + min(m["available"] for m in mills.values()) / 2  # both, not one

    def okada(**asked: Any) -> Any:
        body = search(api, hours=hours, material="aluminium", **asked)
        return next(c for c in body["candidates"] if c["factory"] == "okada-machining")

    together = okada()
    assert (together["covers"], together["machines_needed"], together["machines"]) == (True, 2, 2)
    alone = okada(one_machine="true")
    assert (alone["covers"], alone["machines_needed"], alone["machines"]) == (False, None, 1)
    assert set(alone["qualified_machines"]) == {"cnc-02", "cnc-03"}
    # With a weight asked only cnc-02 qualifies: it alone is offered, with its own hours.
    heavy = okada(one_machine="true", part_kg=100)
    assert heavy["qualified_machines"] == ["cnc-02"]
    assert heavy["machines"] == 1
    assert heavy["available"] == pytest.approx(mills["cnc-02"]["available"], abs=1e-3)
    fits = search(api, hours=mills["cnc-02"]["available"] / 2, part_kg=100, one_machine="true")
    assert next(c for c in fits["candidates"] if c["factory"] == "okada-machining")["covers"]


@pytest.mark.parametrize(
    ("part_mm", "message"),
    [
        ("400,700", "String should match pattern"),
        ("400,700,200,1", "String should match pattern"),
        ("400,-700,200", "String should match pattern"),
        ("400,nan,200", "String should match pattern"),
        ("0,700,200", "each size must be > 0 and at most 100000 mm"),
        ("400,700,100001", "each size must be > 0 and at most 100000 mm"),
    ],
)
def test_a_part_size_is_three_positive_millimetre_figures(
    api: Api, part_mm: str, message: str
) -> None:
    params = {"process": MILL.value, "hours": 1, "within_days": 1, "part_mm": part_mm}
    answer = api.client.get("/v1/search", params=params, headers=api.headers("platform"))
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["loc"] == ["query", "part_mm"]
    assert error["msg"].startswith(message)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("tolerance_mm", "0", "Input should be greater than or equal to 0.0001"),
        ("tolerance_mm", "11", "Input should be less than or equal to 10"),
        ("thickness_mm", "0", "Input should be greater than 0"),
        ("force_kn", "-1", "Input should be greater than 0"),
        ("part_kg", "inf", "Input should be less than or equal to 100000"),
    ],
)
def test_attribute_bounds_are_refused_by_name(
    api: Api, name: str, value: str, message: str
) -> None:
    params = {"process": BRAKE.value, "hours": 1, "within_days": 1, name: value}
    answer = api.client.get("/v1/search", params=params, headers=api.headers("platform"))
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert (error["loc"], error["msg"]) == (["query", name], message)
