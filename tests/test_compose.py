"""The regional stack's docker-compose.yml, checked without Docker: valid against the
Compose specification's JSON schema, every variable in .env.example and every password
required (the stack refuses to start without it), every mounted file present and parsed,
the generated files where their readers look, the ingest's environment accepted by the
ingest's own settings (an account per worker), every broker listener binding the client id
to the user name, and both broker configurations started with the real Mosquitto
(:func:`compose_broker`, which tests/test_broker_isolation.py attacks).

The schema is the Compose specification's ``compose-spec.json`` as vendored by the
``check-jsonschema`` package (``check_jsonschema/builtin_schemas/vendor``).
"""

import json
import os
import re
import subprocess
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from services import LOOPBACK, Mosquitto, mqtt_connack

from kyoso.api.settings import ApiSettings
from kyoso.ingest.config import IngestSettings
from kyoso.regional.mosquitto import TlsFiles, write_mosquitto
from kyoso.regional.passwords import resolve_passwords
from kyoso.regional.registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def example_env() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = (line.partition("=") for line in lines if line.strip() and line[0] != "#")
    return {name: value for name, _, value in pairs}


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution: ``${V}``, ``${V:-default}``, ``${V-default}``,
    ``${V:?error}``, ``${V?error}``, ``$$`` for a literal ``$``. A required variable that
    is missing (or empty, with ``:?``) raises ValueError, as `docker compose` refuses."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2], match[3]
        value = env.get(name)
        empty = value is None or (operator is not None and operator.startswith(":") and not value)
        if operator is not None and operator.endswith("?") and empty:
            raise ValueError(f"required variable {name} is missing a value: {argument}")
        if operator is not None and operator.endswith("-") and empty:
            return argument
        return value or ""

    return _VARIABLE.sub(replace, node.replace("$$", "\0")).replace("\0", "$")


def filled_env() -> dict[str, str]:
    """.env.example with every empty value filled, as a newcomer's .env."""
    return {k: v or f"generated-{k.lower()}" for k, v in example_env().items()}


# --- the specification ---------------------------------------------------------------------


def _validator() -> jsonschema.protocols.Validator:
    vendor = files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator: jsonschema.protocols.Validator = validator_class(schema)
    return validator


def test_compose_file_follows_the_compose_specification() -> None:
    validator = _validator()
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    interpolated = interpolate(compose(), filled_env())
    assert [e.message for e in validator.iter_errors(interpolated)] == []
    # The validator does refuse what Compose refuses.
    broken = compose()
    broken["services"]["ingest"]["restart"] = 5
    broken["services"]["mosquitto"]["helthcheck"] = {}
    assert len(list(validator.iter_errors(broken))) == 2


def test_every_variable_is_in_the_example_and_no_password_has_a_default() -> None:
    text = COMPOSE.read_text()
    example = example_env()
    referenced = {m[1] for m in _VARIABLE.finditer(text)}
    assert referenced <= set(example), referenced - set(example)
    secrets = {name for name in referenced if "PASSWORD" in name}
    assert secrets == {
        "KYOSO_INFLUXDB_ADMIN_PASSWORD",
        "KYOSO_GRAFANA_ADMIN_PASSWORD",
        "KYOSO_INGEST_PASSWORD",
        "KYOSO_CAPACITY_PASSWORD",
    }
    for match in _VARIABLE.finditer(text):
        if match[1] in secrets:
            assert match[2] == ":?", f"{match[0]}: a password must be required, never defaulted"
    assert all(example[name] == "" for name in secrets)  # nothing to forget to change
    # Without one of them the stack does not start; with all of them it resolves.
    for name in secrets:
        with pytest.raises(ValueError, match=name):
            interpolate(compose(), {**filled_env(), name: ""})
    interpolate(compose(), filled_env())
    # No literal secret anywhere: every password-like setting comes from a variable.
    for service, spec in compose()["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "TOKEN", "SECRET")):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), (service, key)


# --- mounts and generated files ------------------------------------------------------------


def _mounts(spec: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read only) of each short-syntax volume."""
    mounts = []
    for entry in spec.get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts.append((source, target, mode == ["ro"]))
    return mounts


def test_every_mounted_file_exists_and_parses() -> None:
    document = interpolate(compose(), filled_env())
    named = set(document["volumes"])
    used: set[str] = set()
    for service, spec in document["services"].items():
        for source, _, _ in _mounts(spec):
            if not source.startswith("."):
                assert source in named, (service, source)
                used.add(source)
                continue
            path = ROOT / source
            assert path.exists(), (service, source)
            files = sorted(f for f in path.rglob("*") if f.is_file())  # dashboards/ja too
            for each in files if path.is_dir() else [path]:
                _parse(each)
    assert used == named  # no volume declared for nothing
    # The registry the stack reads by default is a valid one.
    load_registry(ROOT / example_env()["KYOSO_REGISTRY"])
    # Grafana finds the dashboards where the providers look, and its home dashboard.
    provisioning = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/kyoso.yaml").read_text()
    )
    mounted = "/var/lib/kyoso/dashboards/"
    grafana = document["services"]["grafana"]
    assert ("./dashboards", mounted.rstrip("/"), True) in _mounts(grafana)
    for provider in provisioning["providers"]:
        folder = provider["options"]["path"]
        assert folder.startswith(mounted), provider
        assert list((ROOT / "dashboards" / folder.removeprefix(mounted)).glob("*.json"))
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounted)
    assert (ROOT / "dashboards" / home.removeprefix(mounted)).is_file()


def _parse(path: Path) -> None:
    """Parse a mounted file by its kind; fail on anything unexpected."""
    if path.suffix in (".yaml", ".yml"):
        assert yaml.safe_load(path.read_text()), path
    elif path.suffix == ".json":
        assert json.loads(path.read_text())["uid"], path
    elif path.suffix == ".conf":
        assert _directives(path.read_text()), path  # and started below, for the brokers
    else:
        assert path.name == "README.md", path  # deploy/tls holds only its README here


def listener_options(conf: str) -> dict[str, list[str]]:
    """``listener`` port -> the listener options after it, in order (the option's name, and
    its value for ``use_username_as_clientid``); options before any listener under ``""``
    (Mosquitto gives them to a default listener on 1883), listed only if there are such."""
    scoped = ("use_username_as_clientid", "certfile", "keyfile", "cafile", "tls_version",
              "require_certificate", "max_connections", "protocol", "socket_domain")  # fmt: skip
    found: dict[str, list[str]] = {}
    current = ""
    for line in conf.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "listener":
            current = words[1]
            found[current] = []
        elif words[0] in scoped:
            option = " ".join(words) if words[0] == "use_username_as_clientid" else words[0]
            found.setdefault(current, []).append(option)
    return found


def test_every_listener_takes_the_user_name_as_the_client_id(tmp_path: Path) -> None:
    """Mosquitto binds a session to the client id only: without this, one account could
    resume or end another's session (docs/regional.md, tenant isolation). The option is a
    listener's, so it must follow each listener line in the file declaring it."""
    registry = load_registry(ROOT / example_env()["KYOSO_REGISTRY"])
    passwords = resolve_passwords(registry, tmp_path / "passwords.yaml", filled_env()).mqtt
    tls = TlsFiles(Path("/etc/kyoso/tls/server.crt"), Path("/etc/kyoso/tls/server.key"))
    write_mosquitto(registry, passwords, tmp_path, tls)
    for conf, port in (
        (ROOT / "deploy/mosquitto/mosquitto.conf", "1883"),
        (tmp_path / "conf.d" / "kyoso.conf", "8883"),
    ):
        listeners = listener_options(conf.read_text())
        assert list(listeners) == [port], conf
        assert listeners[port][:1] == ["use_username_as_clientid true"], conf


def _directives(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_generated_files_are_where_their_readers_look() -> None:
    services = compose()["services"]
    setup = services["setup"]
    command = setup["command"][0].split()
    out = Path(command[command.index("--out") + 1])
    targets = {source: target for source, target, _ in _mounts(setup)}
    # The broker reads the generated files at the path setup wrote them to.
    assert targets["mosquitto-config"] == str(out / "mosquitto")
    mosquitto = {source: target for source, target, _ in _mounts(services["mosquitto"])}
    assert mosquitto["mosquitto-config"] == targets["mosquitto-config"]
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert f"include_dir {out / 'mosquitto' / 'conf.d'}" in conf.splitlines()
    assert mosquitto["./deploy/tls"] == targets["./deploy/tls"]  # TLS paths are absolute too
    # Grafana reads the data sources file setup writes into its volume.
    assert targets["grafana-datasources"] == str(out / "grafana")
    grafana = {source: target for source, target, _ in _mounts(services["grafana"])}
    assert grafana["grafana-datasources"] == "/etc/grafana/provisioning/datasources"
    # Each demo gateway reads the configuration generated for its registry user.
    registry = load_registry(ROOT / example_env()["KYOSO_REGISTRY"])
    gateways = {name: spec for name, spec in services.items() if name.startswith("gateway-")}
    configured = set()
    for spec in gateways.values():
        gateway_mounts = {source: target for source, target, _ in _mounts(spec)}
        assert (
            gateway_mounts["gateway-config"] == targets["gateway-config"] == str(out / "gateways")
        )
        path = Path(spec["command"][spec["command"].index("--config") + 1])
        assert path.parent == out / "gateways"
        configured.add(path.stem)
    assert configured == {g.user for g in registry.gateways}
    # Services run long, with health checks; setup runs once.
    for name, spec in services.items():
        if name == "setup":
            assert spec["restart"] == "no"
            continue
        assert "healthcheck" in spec, name
        assert "restart" in spec or "<<" in spec, name


def _settings_from(environment: Mapping[str, Any], settings: type[Any]) -> Any:
    """``settings`` read from a service's environment only, as its container would."""
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({k: str(v) for k, v in environment.items()})
        return settings()
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_the_ingest_and_api_environment() -> None:
    document = interpolate(compose(), filled_env())
    registry = load_registry(ROOT / example_env()["KYOSO_REGISTRY"])
    ingest = _settings_from(document["services"]["ingest"]["environment"], IngestSettings)
    assert ingest.store == "influxdb"
    assert ingest.mqtt.host == "mosquitto"
    assert ingest.mqtt.password.get_secret_value() == filled_env()["KYOSO_INGEST_PASSWORD"]
    assert ingest.influx.create_databases is False
    assert ingest.mqtt.username == registry.ingest.username == ingest.influx.username
    # The broker takes the user name as the client id, so each ingest worker logs in with an
    # account of its own (the registry's `ingest.workers`), and names itself after it.
    workers = [
        _settings_from(spec["environment"], IngestSettings)
        for spec in document["services"].values()
        if spec.get("command") == ["ingest"]
    ]
    assert sorted(w.mqtt.username for w in workers) == sorted(registry.ingest.mqtt_users)
    assert all(w.mqtt.session_id == w.mqtt.username for w in workers)
    assert len({w.mqtt.shared_group for w in workers}) == 1  # one group (None: one worker)
    assert (workers[0].mqtt.shared_group is None) == (len(workers) == 1)
    api_service = document["services"]["api"]
    api = _settings_from(api_service["environment"], ApiSettings)
    assert (api.host, api.port, api.store) == ("0.0.0.0", 8000, "influxdb")  # noqa: S104
    assert api.influx.username == registry.capacity.username
    assert api.influx.password.get_secret_value() == filled_env()["KYOSO_CAPACITY_PASSWORD"]
    assert api.influx.create_databases is False
    data = [Path(target) for source, target, _ in _mounts(api_service) if source == "api-data"]
    assert api.keys.parent in data
    assert api.bookings_path.parent in data
    assert api.profile_cache_path is not None
    assert api.profile_cache_path.parent in data
    assert f"{data[0]}/first-admin.key" in api_service["command"][0]


def test_dockerfile_builds_one_unprivileged_image() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert any(line.startswith("RUN pip install .") for line in lines)
    assert "USER kyoso" in lines
    assert 'ENTRYPOINT ["kyoso"]' in lines
    builds = [s for s in compose()["services"].values() if s.get("build")]
    assert {s["image"] for s in builds} == {"kyoso:local"}


# --- the broker configurations on the real Mosquitto ---------------------------------------


def compose_broker(
    tmp_path: Path, service: str, volumes: Mapping[str, Path] | None = None, **kwargs: Any
) -> Mosquitto:
    """A real Mosquitto (not started yet) running the compose service's configuration file,
    with its container paths mapped to directories here (a named volume to ``volumes[name]``
    if given, else to ``tmp_path/<service>/<name>``) and its listener on a free loopback
    port; ``kwargs`` go to :class:`Mosquitto`."""
    spec = compose()["services"][service]
    broker = Mosquitto(tmp_path / service, **kwargs)
    mapping: dict[str, Path] = {}
    config: str | None = None
    for source, target, _ in _mounts(spec):
        if target == "/mosquitto/config/mosquitto.conf":
            config = (ROOT / source).read_text()
        elif source.startswith("."):
            mapping[target] = ROOT / source
        else:
            mapping[target] = (volumes or {}).get(source, tmp_path / service / source)
            mapping[target].mkdir(parents=True, exist_ok=True)
    assert config is not None
    for target in sorted(mapping, key=len, reverse=True):
        config = config.replace(target, str(mapping[target]))
    config = re.sub(r"^listener 1883$", f"listener {broker.port} {LOOPBACK}", config, flags=re.M)
    if os.geteuid() == 0:
        config += "user root\n"  # as tests/services.py does, for its temporary directories
    broker.config_path.write_text(config)
    return broker


def _healthcheck(spec: Mapping[str, Any], broker: Mosquitto) -> int:
    test = spec["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        command = ["sh", "-c", test[1].replace("$$", "$")]
    else:
        command = [part.replace("$$", "$") for part in test[1:]]
    command = [part.replace("1883", str(broker.port)) for part in command]
    if "-p" not in " ".join(command):
        command += ["-p", str(broker.port)]
    return subprocess.run(command, capture_output=True, timeout=20, check=False).returncode


@pytest.mark.integration
def test_the_regional_broker_configuration_runs(tmp_path: Path) -> None:
    registry = load_registry(ROOT / example_env()["KYOSO_REGISTRY"])
    env = filled_env()
    passwords = resolve_passwords(registry, tmp_path / "passwords.yaml", env).mqtt
    generated = tmp_path / "mosquitto" / "mosquitto-config"
    write_mosquitto(registry, passwords, generated)  # as setup writes it, at the mapped path
    ingest = registry.ingest.username
    broker = compose_broker(
        tmp_path, "mosquitto", probe_username=ingest, probe_password=passwords[ingest]
    )
    try:
        broker.start()
        assert (tmp_path / "mosquitto" / "mosquitto-data").is_dir()
        anonymous = mqtt_connack(LOOPBACK, broker.port)
        assert anonymous is not None
        assert anonymous.is_failure
        gateway = mqtt_connack(
            LOOPBACK,
            broker.port,
            username="okada-machining-gw-01",
            password=passwords["okada-machining-gw-01"],
        )
        assert gateway is not None
        assert not gateway.is_failure
        assert _healthcheck(compose()["services"]["mosquitto"], broker) == 0
    finally:
        broker.close()
    assert _healthcheck(compose()["services"]["mosquitto"], broker) != 0  # stopped: unhealthy


@pytest.mark.integration
def test_the_shop_floor_broker_configuration_runs(tmp_path: Path) -> None:
    broker = compose_broker(tmp_path, "sensor-broker")
    try:
        broker.start()
        assert _healthcheck(compose()["services"]["sensor-broker"], broker) == 0
    finally:
        broker.close()
