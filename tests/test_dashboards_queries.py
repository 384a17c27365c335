"""Every panel query of the generated dashboards, run against a real InfluxDB 1.6.7 loaded
with a simulated day of the three demo factories and capacity snapshots, with each data
source's own credentials as `kyoso regional` provisions them.

Before a query reaches InfluxDB, Grafana substitutes its template variables and InfluxQL
macros; :func:`expand` does the same here (``$timeFilter``, ``$__interval``, ``$interval``,
``$__interval_ms``, ``$__from``, ``$__to``, ``$__range``, ``$var``, ``${var}``,
``[[var]]``; a multi-value or "All" variable becomes a regex alternation of its escaped
values, as Grafana's InfluxDB data source writes it). Each result must have the shape the
panel expects: one column per ``AS "name"`` of the outermost SELECT, the outermost
``GROUP BY`` tags on every series, and data. Every language's set is run (tests/
test_dashboards.py proves their queries the same; this proves what Grafana loads).
"""

import asyncio
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from services import InfluxDB

from kyoso.contract import GatewayStatus, MachineDescription
from kyoso.i18n import LANGUAGES, Lang
from kyoso.influx.client import InfluxConfig
from kyoso.regional.grafana import CAPACITY_DATASOURCE, datasources
from kyoso.regional.influxdb import provision_influxdb
from kyoso.regional.passwords import resolve_passwords
from kyoso.regional.registry import load_registry
from kyoso.simulators.config import FactoryConfig, load_factory, shipped_factories
from kyoso.simulators.history import history_batches
from kyoso.simulators.runner import FactorySimulation
from kyoso.store import InfluxStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
REGISTRY = ROOT / "deploy" / "gateways.example.yaml"
ENV = {"KYOSO_INGEST_PASSWORD": "ingest-pw", "KYOSO_CAPACITY_PASSWORD": "capacity-pw"}
FACTORIES = [load_factory(p) for p in shipped_factories()]
OFFLINE_FACTORY = "mori-plastics"
"""Its capacity snapshots say its gateway is offline."""


# --- Grafana's substitution ----------------------------------------------------------------

_ROUNDED_MS = [
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000),
    (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000),
    (45_000, 30_000), (90_000, 60_000), (210_000, 120_000), (450_000, 300_000),
    (750_000, 600_000), (1_050_000, 900_000), (1_500_000, 1_200_000),
    (2_700_000, 1_800_000), (5_400_000, 3_600_000), (9_000_000, 7_200_000),
    (16_200_000, 10_800_000), (32_400_000, 21_600_000), (86_400_000, 43_200_000),
    (604_800_000, 86_400_000), (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
]  # fmt: skip
"""Grafana's interval rounding (``rangeutil.roundInterval``): below the first, the second."""


def grafana_interval_ms(range_ms: int, max_data_points: int, min_interval_ms: int) -> int:
    """``$__interval`` as Grafana computes it: range / data points, rounded, floored at the
    data source's minimum interval."""
    raw = range_ms / max_data_points
    rounded = next((r for below, r in _ROUNDED_MS if raw < below), 31_536_000_000)
    return max(rounded, min_interval_ms)


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


_REFERENCE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")


@dataclass(frozen=True)
class Variable:
    values: list[str]
    multi: bool


def expand(
    text: str, variables: Mapping[str, Variable], start_ms: int, end_ms: int, interval_ms: int
) -> str:
    """``text`` as Grafana sends it; an undefined variable raises KeyError."""
    macros = {
        "timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
        "__timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
        "__interval": _duration(interval_ms),
        "interval": _duration(interval_ms),
        "__interval_ms": str(interval_ms),
        "__from": str(start_ms),
        "__to": str(end_ms),
        "__range": _duration(end_ms - start_ms),
        "__range_s": str((end_ms - start_ms) // 1000),
        "__range_ms": str(end_ms - start_ms),
    }

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[3]
        if name in macros:
            return macros[name]
        variable = variables[name]
        if not variable.multi:
            return variable.values[0]
        escaped = [_REGEX_SPECIAL.sub(r"\\\g<0>", v) for v in variable.values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return _REFERENCE.sub(replace, text)


# --- the shape a panel expects -------------------------------------------------------------


def _top_level(query: str, keyword: str) -> list[int]:
    """Positions of ``keyword`` outside parentheses and quoted names or strings (a regex
    literal holds only balanced parentheses here)."""
    found, depth, quote = [], 0, ""
    for i, char in enumerate(query):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and query.startswith(keyword, i):
            found.append(i)
    return found


def expected_shape(query: str) -> tuple[list[str], list[str]]:
    """The outermost SELECT's names and the outermost GROUP BY's tags."""
    head = query[len("SELECT ") : _top_level(query, " FROM ")[0]]
    names = re.findall(r'AS "([^"]+)"', head)
    expressions = len(_top_level(head, ","))
    assert len(names) == expressions + 1, f"every expression needs AS: {head}"
    group_by = _top_level(query, "GROUP BY ")
    tags: list[str] = []
    if group_by:
        clause = re.split(r" fill\(| tz\(", query[group_by[-1] :])[0]
        tags = re.findall(r'"(\w+)"', clause)
    return names, tags


# --- the data ------------------------------------------------------------------------------


def quiet_thursday() -> datetime:
    """Midnight (Tokyo) starting the latest complete Thursday that is a working day in
    every demo factory: a day of shifts, with setups, breakdowns and alarms."""
    tokyo = ZoneInfo("Asia/Tokyo")
    day = datetime.now(tokyo).date() - timedelta(days=1)
    calendars = [c for f in FACTORIES for c in f.calendars.values()]
    while day.weekday() != 3 or any(c.shifts_of(day) is None for c in calendars):
        day -= timedelta(days=1)
    return datetime.combine(day, time(), tokyo)


@dataclass(frozen=True)
class Source:
    user: str
    password: str
    database: str


@dataclass(frozen=True)
class Loaded:
    server: InfluxDB
    sources: dict[str, Source]
    start_ms: int
    end_ms: int


def _descriptions(factory: FactoryConfig, at: datetime) -> list[MachineDescription]:
    return [
        MachineDescription(
            factory=factory.factory,
            gateway="gw-01",
            machine=m.id,
            name=m.name,
            updated_at=at,
            capabilities=m.capabilities,
            ideal_cycle_time_s=m.ideal_cycle_time_s,
            calendar=factory.calendars[m.calendar],
        )
        for m in factory.machines
    ]


def _capacity_lines(start: float, end: float, now: float) -> list[str]:
    """Snapshots every 30 min over the day and one just now, as the capacity service
    writes them (docs: the kyoso_capacity layout)."""
    lines = []
    moments = [*range(int(start), int(end), 1800), int(now) - 30]
    for factory in FACTORIES:
        offline = factory.factory == OFFLINE_FACTORY
        for moment in moments:
            live = moment == moments[-1]
            down = offline and live
            for machine in factory.machines:
                for capability in machine.capabilities:
                    for horizon, total in (("24h", 16.0), ("7d", 88.0)):
                        available = 0.0 if down else total * 0.4
                        lines.append(
                            f"capacity,factory={factory.factory},machine={machine.id},"
                            f"process={capability.process.value},horizon={horizon} "
                            f"total_h={total},committed_h={total * 0.5},unattainable_h="
                            f"{total * 0.1},available_h={available},confidence=0.9,"
                            f"offline={str(down).lower()},data_age_s=12.0 {moment}"
                        )
            lines.append(
                f"factory_status,factory={factory.factory} gateways_online={int(not down)}i,"
                f"gateways_offline={int(down)}i,offline={str(down).lower()},"
                f"data_age_s={900.0 if down else 12.0},machines={len(factory.machines)}i {moment}"
            )
    return lines


async def _load(server: InfluxDB, start: float, end: float) -> None:
    admin = InfluxConfig(
        url=server.url,
        username=server.admin_username,
        password=SecretStr(server.admin_password),
    )
    async with InfluxStore(admin) as store:
        for factory in FACTORIES:
            sim = FactorySimulation(factory, start - 2 * 86_400)
            for batch in history_batches(sim, start, end, gateway="gw-01"):
                refused = await store.write_samples(
                    batch.factory, batch.gateway, batch.session, batch.samples
                )
                assert refused == []
            for description in _descriptions(factory, datetime.fromtimestamp(start, UTC)):
                await store.write_description(description)
            status = GatewayStatus(
                factory=factory.factory,
                gateway="gw-01",
                session=str(uuid.uuid4()),
                status="online",
                ts=datetime.now(UTC),
                reason="connected",
                software="kyoso-gateway test",
            )
            await store.write_status(status)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    server = InfluxDB(tmp_path_factory.mktemp("influx-dashboards"), auth_enabled=True)
    server.start()
    try:
        registry = load_registry(REGISTRY)
        secrets_file = tmp_path_factory.mktemp("secrets") / "passwords.yaml"
        passwords = resolve_passwords(registry, secrets_file, ENV)
        admin = InfluxConfig(
            url=server.url,
            username=server.admin_username,
            password=SecretStr(server.admin_password),
        )
        asyncio.run(provision_influxdb(registry, passwords.influxdb, admin))
        begin = quiet_thursday()
        start, end = begin.timestamp(), (begin + timedelta(days=1)).timestamp()
        asyncio.run(_load(server, start, end))
        server.write(
            "kyoso_capacity",
            _capacity_lines(start, end, datetime.now(UTC).timestamp()),
            precision="s",
        )
        # The data sources exactly as provisioned for Grafana.
        document = datasources(registry, passwords.influxdb, server.url)
        sources = {
            s["uid"]: Source(s["user"], s["secureJsonData"]["password"], s["jsonData"]["dbName"])
            for s in document["datasources"]
        }
        yield Loaded(server, sources, int(start * 1000), int(end * 1000))
    finally:
        server.close()


def run(loaded: Loaded, uid: str, query: str) -> list[dict[str, Any]]:
    """The series of ``query`` run as data source ``uid`` would run it."""
    source = loaded.sources[uid]
    answer = loaded.server.query(
        query, source.database, epoch="ms", username=source.user, password=source.password
    )
    [result] = answer["results"]
    series: list[dict[str, Any]] = result.get("series", [])
    return series


# --- the tests -----------------------------------------------------------------------------


def load_dashboard(name: str, lang: Lang = "en") -> dict[str, Any]:
    """The committed dashboard ``name`` in ``lang`` (``ja/plant.json`` and so on)."""
    document: dict[str, Any] = json.loads((DASHBOARDS / lang / name).read_text(encoding="utf-8"))
    return document


def resolve_variables(
    loaded: Loaded, dashboard: dict[str, Any], factory: str
) -> dict[str, Variable]:
    """Every variable's value as Grafana would set it on load: a data source variable to
    ``factory``, custom ones to their default, query ones ("All") to what their query
    returns."""
    variables: dict[str, Variable] = {}
    for variable in dashboard["templating"]["list"]:
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            pattern = variable["regex"].strip("/")
            listed = sorted(uid for uid in loaded.sources if re.fullmatch(pattern, uid))
            assert listed == sorted(f.factory for f in FACTORIES)
            assert factory in listed
            variables[name] = Variable([factory], multi=False)
        elif kind == "custom":
            options = variable["query"].split(",")
            assert variable["current"]["value"] in options
            variables[name] = Variable([variable["current"]["value"]], multi=False)
        else:
            assert kind == "query", kind
            uid = expand(variable["datasource"]["uid"], variables, 0, 0, 1000)
            rows = [row for s in run(loaded, uid, variable["query"]) for row in s["values"]]
            values = sorted(str(value) for _, value in rows)
            assert values, f"variable {name} lists nothing"
            assert variable["current"]["value"] == ["$__all"]
            variables[name] = Variable(values, multi=True)
    return variables


def _targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def check_dashboard(loaded: Loaded, dashboard: dict[str, Any], factory: str) -> int:
    """Run every target of ``dashboard``; return how many ran."""
    variables = resolve_variables(loaded, dashboard, factory)
    interval_ms = grafana_interval_ms(loaded.end_ms - loaded.start_ms, 1000, 10_000)
    count = 0
    for title, target in _targets(dashboard):
        where = f"{dashboard['uid']} / {title} / {target['refId']}"
        uid = expand(target["datasource"]["uid"], variables, 0, 0, 1000)
        query = expand(target["query"], variables, loaded.start_ms, loaded.end_ms, interval_ms)
        assert not re.search(r"\$\{|\$\w|\[\[", query), f"{where}: unexpanded: {query}"
        names, tags = expected_shape(query)
        series = run(loaded, uid, query)
        assert series, f"{where}: no data for {factory}: {query}"
        for one in series:
            assert one["columns"] == ["time", *names], where
            assert set(tags) <= set(one.get("tags") or {}), where
        cells = [row[1:] for one in series for row in one["values"]]
        assert any(v is not None for row in cells for v in row), f"{where}: only nulls"
        count += 1
    return count


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("factory", [f.factory for f in FACTORIES])
def test_every_plant_panel_query_returns_its_shape(
    loaded: Loaded, factory: str, lang: Lang
) -> None:
    dashboard = load_dashboard("plant.json", lang)
    assert check_dashboard(loaded, dashboard, factory) == sum(1 for _ in _targets(dashboard))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_regional_panel_query_returns_its_shape(loaded: Loaded, lang: Lang) -> None:
    dashboard = load_dashboard("regional.json", lang)
    assert check_dashboard(loaded, dashboard, "unused") == sum(1 for _ in _targets(dashboard))


def test_live_figures_withdraw_an_offline_factory(loaded: Loaded) -> None:
    """The regional board's live figures follow the snapshots: the offline factory shows in
    the offline counts, and its capacity is zero."""
    dashboard = load_dashboard("regional.json")
    variables = resolve_variables(loaded, dashboard, "unused")
    queries = {title: target["query"] for title, target in _targets(dashboard)}

    def single(title: str) -> Any:
        query = expand(queries[title], variables, loaded.start_ms, loaded.end_ms, 60_000)
        [series] = run(loaded, CAPACITY_DATASOURCE, query)
        return series["values"][0][1]

    assert single("Factories offline") == 1
    assert single("Gateways offline") == 1
    by_factory = expand(
        queries["Available hours by capability and factory"],
        variables,
        loaded.start_ms,
        loaded.end_ms,
        60_000,
    )
    series = run(loaded, CAPACITY_DATASOURCE, by_factory)
    totals: dict[str, float] = {}
    for one in series:
        totals[one["tags"]["factory"]] = totals.get(one["tags"]["factory"], 0) + one["values"][0][1]
    assert totals[OFFLINE_FACTORY] == 0
    assert all(v > 0 for f, v in totals.items() if f != OFFLINE_FACTORY)


def test_expand_writes_what_grafana_sends() -> None:
    variables = {
        "machine": Variable(["cnc-01", "a.b/c"], multi=True),
        "one": Variable(["cnc-01"], multi=True),
        "horizon": Variable(["24h"], multi=False),
    }
    text = "WHERE $timeFilter AND m =~ /^$machine$/ AND o =~ /^${one}$/ AND h = '[[horizon]]'"
    assert expand(text, variables, 1000, 2000, 60_000) == (
        "WHERE time >= 1000ms and time <= 2000ms AND m =~ /^(cnc-01|a\\.b\\/c)$/ "
        "AND o =~ /^cnc-01$/ AND h = '24h'"
    )
    assert expand("GROUP BY time($__interval) $interval", {}, 0, 1, 600_000) == (
        "GROUP BY time(10m) 10m"
    )
    with pytest.raises(KeyError):
        expand("$nope", {}, 0, 1, 1000)
    # A day at 1000 points is 86.4 s: Grafana rounds to 1 m; never below the minimum.
    assert grafana_interval_ms(86_400_000, 1000, 10_000) == 60_000
    assert grafana_interval_ms(3_600_000, 1000, 10_000) == 10_000
