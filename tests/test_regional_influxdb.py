"""InfluxDB users and grants from the registry, against a real InfluxDB 1.6.7 with auth on:
each factory's read user reads its own database only, the services get their roles, a run
again changes passwords and takes back privileges, and `kyoso regional setup` writes what
the compose stack's services read."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr
from services import InfluxDB, InfluxDBError

from kyoso.cli import main
from kyoso.gateway.config import load_config
from kyoso.influx.client import InfluxConfig
from kyoso.regional.influxdb import grants, provision_influxdb
from kyoso.regional.passwords import resolve_passwords
from kyoso.regional.registry import Registry, load_registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = ROOT / "deploy" / "gateways.example.yaml"
ENV = {"KYOSO_INGEST_PASSWORD": "ingest-pw", "KYOSO_CAPACITY_PASSWORD": "capacity-pw"}
FACTORIES = ["mori-plastics", "okada-machining", "sato-sheetmetal"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    influx = InfluxDB(tmp_path_factory.mktemp("influx-auth"), auth_enabled=True)
    influx.start()
    try:
        yield influx
    finally:
        influx.close()


def admin(server: InfluxDB) -> InfluxConfig:
    return InfluxConfig(
        url=server.url,
        username=server.admin_username,
        password=SecretStr(server.admin_password),
        max_retry_time_s=5,
    )


def provision(server: InfluxDB, registry: Registry, passwords: dict[str, str]) -> None:
    asyncio.run(provision_influxdb(registry, passwords, admin(server)))


def can_read(server: InfluxDB, database: str, user: str, password: str) -> bool:
    try:
        server.query('SELECT * FROM "m" LIMIT 1', database, username=user, password=password)
    except InfluxDBError as exc:
        if exc.status not in (401, 403):  # a wrong password, or no privilege
            raise
        return False
    return True


def can_write(server: InfluxDB, database: str, user: str, password: str) -> bool:
    try:
        server.write(database, "m f=1", username=user, password=password)
    except InfluxDBError as exc:
        if exc.status not in (401, 403):  # a wrong password, or no privilege
            raise
        return False
    return True


def test_each_user_gets_its_role_and_nothing_more(server: InfluxDB, tmp_path: Path) -> None:
    registry = load_registry(REGISTRY)
    passwords = dict(resolve_passwords(registry, tmp_path / "p.yaml", ENV).influxdb)
    provision(server, registry, passwords)
    databases = [f"kyoso_{f}" for f in FACTORIES] + ["kyoso_capacity"]
    for database in databases:
        server.write(database, "m f=1")  # they exist; a point to read
    users = {row[0]: row[1] for row in _values(server.query("SHOW USERS"))}
    assert {u: users[u] for u in registry.influx_users} == dict.fromkeys(
        registry.influx_users, False
    )  # nobody but the admin is an admin
    expected = grants(registry, "kyoso_")
    for user in registry.influx_users:
        pw = passwords[user]
        for database in databases:
            privilege = expected[user].get(database)
            assert can_read(server, database, user, pw) == (privilege in ("READ", "ALL")), (
                user,
                database,
            )
            assert can_write(server, database, user, pw) == (privilege in ("WRITE", "ALL")), (
                user,
                database,
            )
    # The factory user reads its own database, and never another one.
    assert expected["okada-machining"] == {"kyoso_okada-machining": "READ"}
    assert expected["kyoso-region"] == {"kyoso_capacity": "READ"}


def test_a_second_run_changes_passwords_and_takes_back_privileges(
    server: InfluxDB, tmp_path: Path
) -> None:
    registry = load_registry(REGISTRY)
    passwords = dict(resolve_passwords(registry, tmp_path / "p.yaml", ENV).influxdb)
    provision(server, registry, passwords)
    # Someone granted okada's user another factory's database; the ingest's password moved.
    server.query('GRANT READ ON "kyoso_mori-plastics" TO "okada-machining"')
    assert can_read(server, "kyoso_mori-plastics", "okada-machining", passwords["okada-machining"])
    changed = {**passwords, "kyoso-ingest": "a-new-ingest-password"}
    provision(server, registry, changed)
    assert not can_read(
        server, "kyoso_mori-plastics", "okada-machining", passwords["okada-machining"]
    )
    assert can_read(
        server, "kyoso_okada-machining", "okada-machining", passwords["okada-machining"]
    )
    assert not can_write(server, "kyoso_okada-machining", "kyoso-ingest", "ingest-pw")
    assert can_write(server, "kyoso_okada-machining", "kyoso-ingest", "a-new-ingest-password")


def test_setup_writes_what_the_stack_reads(
    server: InfluxDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    out, secrets_file = tmp_path / "generated", tmp_path / "secrets" / "passwords.yaml"
    arguments = [
        "regional", "setup", "--registry", str(REGISTRY), "--secrets", str(secrets_file),
        "--out", str(out), "--influx-url", server.url, "--influx-admin", server.admin_username,
        "--grafana-influx-url", "http://influxdb:8086",
    ]  # fmt: skip
    monkeypatch.delenv("KYOSO_INFLUXDB_ADMIN_PASSWORD", raising=False)
    assert main(arguments) == 2  # no admin password: refused before anything is written
    assert not out.exists()
    monkeypatch.setenv("KYOSO_INFLUXDB_ADMIN_PASSWORD", server.admin_password)
    assert main(arguments) == 0
    stored = yaml.safe_load(secrets_file.read_text())

    # Grafana: one data source per factory with its read user, and the capacity one.
    provisioning = yaml.safe_load((out / "grafana" / "kyoso.yaml").read_text())
    assert (out / "grafana" / "kyoso.yaml").stat().st_mode & 0o777 == 0o600
    sources = {s["uid"]: s for s in provisioning["datasources"]}
    assert sorted(sources) == sorted([*FACTORIES, "kyoso-capacity"])
    okada = sources["okada-machining"]
    assert okada["user"] == "okada-machining"
    assert okada["jsonData"]["dbName"] == "kyoso_okada-machining"
    assert okada["secureJsonData"]["password"] == stored["influxdb"]["okada-machining"]
    assert okada["url"] == "http://influxdb:8086"
    capacity = sources["kyoso-capacity"]
    assert (capacity["user"], capacity["jsonData"]["dbName"]) == ("kyoso-region", "kyoso_capacity")
    for uid, source in sources.items():
        database = source["jsonData"]["dbName"]
        password = source["secureJsonData"]["password"]
        assert can_read(server, database, source["user"], password), uid

    # The broker files, and a gateway configuration per demo factory that the gateway loads.
    assert (out / "mosquitto" / "conf.d" / "kyoso.conf").is_file()
    assert sorted(p.name for p in (out / "gateways").iterdir()) == [
        f"{f}-gw-01.yaml" for f in FACTORIES
    ]
    config = load_config(out / "gateways" / "okada-machining-gw-01.yaml")
    assert (config.factory, config.gateway) == ("okada-machining", "gw-01")
    assert config.broker.host == "mosquitto"
    assert config.broker.username == "okada-machining-gw-01"
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == stored["mqtt"]["okada-machining-gw-01"]
    # Its machines are reached on the simulators' service, over Modbus and MTConnect alike.
    sources = {m.id: m.source for m in config.machines}
    modbus, mtconnect = sources["cnc-02"].modbus, sources["cnc-01"].mtconnect
    assert modbus is not None
    assert modbus.host == "simulators"
    assert mtconnect is not None
    assert mtconnect.agent.host == "simulators"
    assert config.sensor_broker is not None
    assert config.sensor_broker.host == "sensor-broker"

    # Again: the same passwords, nothing breaks.
    assert main(arguments) == 0
    assert yaml.safe_load(secrets_file.read_text()) == stored


def _values(answer: dict[str, object]) -> list[list[object]]:
    results = answer["results"]
    assert isinstance(results, list)
    series = results[0].get("series", [])
    return [row for s in series for row in s.get("values", [])]
