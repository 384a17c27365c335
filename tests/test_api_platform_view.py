"""What the matching platform sees of one factory beyond capacity, on a real app over the
simulated region: its shared machines' public description, and KPIs summed over the
machines whose factory shares them (``sharing.kpis``), never per machine."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from apikit import Api, Region, build_region, get_json, running_api
from test_api_machine_search import redescribed, write

from kyoso.contract import Capability, Sharing

OKADA = "okada-machining"
UNSHARED = {(OKADA, "grind-01"), ("mori-plastics", "blow-01")}
"""Machines whose factory shares neither their capacity nor their KPIs."""
CONSENTING = {"cnc-02": "cnc_milling_3axis", "cnc-03": "cnc_milling_3axis", "cnc-04": "cnc_turning"}
"""Okada's machines that share their KPIs (capacity too), and their process."""
KPI_ONLY = "manual-lathe"
"""Okada's machine that shares its KPIs but not its capacity."""
PUBLIC_KEYS = {"machine", "name", "capabilities", "timezone"}


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    built = build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", 2, interval_s=600)
    write(
        built,
        [
            *(
                redescribed(built, f, m, sharing=Sharing(capacity=False, kpis=False))
                for f, m in UNSHARED
            ),
            *(redescribed(built, OKADA, m, sharing=Sharing(kpis=True)) for m in CONSENTING),
            redescribed(built, OKADA, KPI_ONLY, sharing=Sharing(capacity=False, kpis=True)),
        ],
    )
    return built


@pytest.fixture(scope="module")
def api(region: Region, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(region, tmp_path_factory.mktemp("api")) as started:
        yield started


def _window(region: Region) -> dict[str, str]:
    return {
        "start": (region.end - timedelta(days=1)).isoformat(),
        "end": region.end.isoformat(),
    }


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield key
            yield from _strings(child)
    elif isinstance(value, list):
        for child in value:
            yield from _strings(child)


# --- machines -------------------------------------------------------------------------------


def test_the_platform_lists_shared_machines_by_their_public_description(
    api: Api, region: Region
) -> None:
    for factory, config in region.configs.items():
        listed = get_json(api, f"/v1/factories/{factory}/machines", "platform")
        shared = {m.id for m in config.machines if (factory, m.id) not in UNSHARED} - (
            {KPI_ONLY} if factory == OKADA else set()
        )
        assert {m["machine"] for m in listed} == shared
        for machine in listed:
            assert set(machine) == PUBLIC_KEYS  # no live state, gateway, shifts, cycle time
            described = next(m for m in config.machines if m.id == machine["machine"])
            assert machine["name"] == described.name
            assert [Capability.model_validate(c) for c in machine["capabilities"]] == (
                described.capabilities
            )
            assert machine["timezone"] == "Asia/Tokyo"
    [cnc_01] = [
        m for m in get_json(api, f"/v1/factories/{OKADA}/machines", "platform")
        if m["machine"] == "cnc-01"
    ]  # fmt: skip
    assert cnc_01["capabilities"][0]["tolerance_mm"] == 0.005
    assert cnc_01["capabilities"][0]["envelope_mm"] == [500, 450, 400]


def test_an_unshared_machine_is_never_in_the_platforms_list(api: Api, region: Region) -> None:
    hidden = {m for _, m in UNSHARED} | {KPI_ONLY}
    for factory in region.configs:
        listed = get_json(api, f"/v1/factories/{factory}/machines", "platform")
        assert hidden.isdisjoint(_strings(listed)), factory


def test_a_factory_key_still_sees_its_own_machines_in_full_and_no_other_factorys(
    api: Api,
) -> None:
    own = get_json(api, f"/v1/factories/{OKADA}/machines", f"factory:{OKADA}")
    assert {"grind-01", KPI_ONLY} <= {m["machine"] for m in own}
    assert all({"gateway", "state", "calendar", "share_kpis"} <= m.keys() for m in own)
    other = api.client.get(
        f"/v1/factories/{OKADA}/machines", headers=api.headers("factory:mori-plastics")
    )
    assert other.status_code == 404
    missing = api.client.get("/v1/factories/nowhere/machines", headers=api.headers("platform"))
    assert missing.status_code == 404


# --- KPIs -----------------------------------------------------------------------------------


def test_the_platform_sees_consenting_machines_summed_never_one_machine(
    api: Api, region: Region
) -> None:
    window = _window(region)
    shared = get_json(api, f"/v1/factories/{OKADA}/kpis", "platform", **window)
    own = get_json(api, f"/v1/factories/{OKADA}/kpis", f"factory:{OKADA}", **window)
    rows = {r["machine"]: r for r in own["machines"]}
    consenting = {*CONSENTING, KPI_ONLY}
    assert consenting < rows.keys()  # the factory's own view: every machine

    assert set(shared) == {"factory", "start", "end", "machines", "by_process", "total"}
    assert shared["machines"] == len(consenting)
    machine_ids = {m.id for config in region.configs.values() for m in config.machines}
    assert machine_ids.isdisjoint(_strings(shared))  # no machine named anywhere

    def summed(machines: set[str], element: str) -> float:
        return float(sum(rows[m]["time"][element] for m in machines))

    for element in ("pbt", "apt", "adot", "no_data"):
        assert shared["total"]["time"][element] == pytest.approx(
            summed(consenting, element), abs=1e-3
        )
    availability = summed(consenting, "apt") / summed(consenting, "pbt")
    assert shared["total"]["kpis"]["availability"] == pytest.approx(availability, abs=1e-5)
    assert shared["total"]["good"] == pytest.approx(
        sum(rows[m]["good"] for m in consenting), abs=1e-3
    )
    by_process = {p["process"]: p for p in shared["by_process"]}
    expected = {"cnc_milling_3axis": {"cnc-02", "cnc-03"}, "cnc_turning": {"cnc-04", KPI_ONLY}}
    assert by_process.keys() == expected.keys()  # cnc-01's 5-axis milling does not share
    for process, machines in expected.items():
        assert by_process[process]["machines"] == len(machines)
        assert by_process[process]["time"]["apt"] == pytest.approx(
            summed(machines, "apt"), abs=1e-3
        )


def test_the_platform_cannot_ask_for_one_machines_kpis(api: Api, region: Region) -> None:
    for machine in ("cnc-02", "no-such-machine"):
        answer = api.client.get(
            f"/v1/factories/{OKADA}/kpis",
            params={**_window(region), "machine": machine},
            headers=api.headers("platform"),
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["detail"] == "a platform key sees KPIs summed over machines"


def test_a_factory_sharing_no_kpis_answers_empty_whatever_its_machines(
    api: Api, region: Region
) -> None:
    """Sato (six machines) and Mori (six, one of them unshared) share no KPIs: both answer
    the same empty sum, so the answer tells nothing of the machines there are."""
    window = _window(region)
    answers = {
        factory: get_json(api, f"/v1/factories/{factory}/kpis", "platform", **window)
        for factory in ("sato-sheetmetal", "mori-plastics")
    }
    for factory, answer in answers.items():
        assert answer["factory"] == factory
        assert (answer["machines"], answer["by_process"]) == (0, [])
        assert set(answer["total"]["time"].values()) == {0}
        assert set(answer["total"]["kpis"].values()) == {None}
    sato, mori = ({k: v for k, v in a.items() if k != "factory"} for a in answers.values())
    assert sato == mori


def test_a_factory_key_still_reads_its_own_kpis_per_machine_and_no_other(
    api: Api, region: Region
) -> None:
    window = _window(region)
    own = get_json(api, "/v1/factories/sato-sheetmetal/kpis", "factory:sato-sheetmetal", **window)
    assert {r["machine"] for r in own["machines"]} == {
        m.id for m in region.configs["sato-sheetmetal"].machines
    }
    other = api.client.get(
        f"/v1/factories/{OKADA}/kpis", params=window, headers=api.headers("factory:sato-sheetmetal")
    )
    assert other.status_code == 404
    assert other.json()["detail"] == f"no factory {OKADA!r}"
