"""Gateway configuration: the shipped example, secrets from the environment, clear errors."""

import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from examples import documented_defaults, uncommented_lines
from pydantic import BaseModel

from kyoso.gateway.config import ConfigError, MachineConfig, load_config
from kyoso.gateway.outbox import OutboxConfig
from kyoso.gateway.publisher import PublisherConfig
from kyoso.ops import HttpConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"
ENV = {"KYOSO_BROKER_PASSWORD": "s3cret: with {yaml} chars"}


def refusal(source: dict[str, Any]) -> str:
    """Why a machine reading through ``source`` is refused, its state from field ``s``: the
    validation error's text (each source kind's tests give the sources)."""
    machine = {
        "id": "m1",
        "name": "M1",
        "calendar": "c",
        "source": source,
        "state": {"from_code": {"field": "s", "map": {1: "running"}}},
    }
    with pytest.raises(ValueError, match="validation error") as caught:
        MachineConfig.model_validate(machine)
    return str(caught.value)


def test_the_example_loads_with_every_section() -> None:
    config = load_config(EXAMPLE, ENV)
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == ENV["KYOSO_BROKER_PASSWORD"]
    assert (config.broker.factory, config.broker.gateway) == ("okada-machining", "gw-01")
    transports = {m.source.modbus.transport for m in config.machines if m.source.modbus}
    assert transports == {"tcp", "rtu"}
    assert any(m.source.mqtt for m in config.machines)


def test_every_example_option_has_a_comment() -> None:
    """Up to the first machine every option is explained; later machines only show sources."""
    text = EXAMPLE.read_text()
    assert uncommented_lines(text[: text.index("  - id: manual-lathe")]) == []


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "gateway.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line(text: str) -> int:
    """The line of the example that starts with ``text``."""
    return next(
        i for i, line in enumerate(EXAMPLE.read_text().splitlines(), 1) if line.startswith(text)
    )


def test_an_unknown_environment_variable_is_named_with_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, {})
    assert str(caught.value) == (
        f"{EXAMPLE}:{_line('  password: ${KYOSO_BROKER_PASSWORD}')}: broker.password: "
        "unknown environment variable KYOSO_BROKER_PASSWORD"
    )


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = _edited(tmp_path, "  port: 8883 ", "  port: [8883 ")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    line = _line("  port: 8883")
    assert str(caught.value) == (
        f"{path}:{line + 1}:3: expected ',' or ']', but got '<scalar>'"
        f" (while parsing a flow sequence at {line}:9)"
    )


def test_a_schema_error_names_its_line(tmp_path: Path) -> None:
    path = _edited(tmp_path, "  keepalive_s: 30 ", "  keepalive_s: soon ")
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    assert str(caught.value) == (
        f"{path}:{_line('  keepalive_s: 30')}: broker.keepalive_s: Input should be a valid"
        " integer, unable to parse string as an integer"
    )


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("factory: okada-machining ", "factory: Okada Works ",
         "factory: Value error, id 'Okada Works' is not a valid id"),
        ("gateway: gw-01 ", "gateway: GW 01 ",
         "gateway: Value error, id 'GW 01' is not a valid id"),
        ("factory: okada-machining ", "# factory: okada-machining ", "factory: Field required"),
    ],
)  # fmt: skip
def test_a_bad_gateway_identity_is_reported_once(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    """The identity is copied into the broker section: its error is still reported once."""
    path = _edited(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ENV)
    errors = str(caught.value).splitlines()
    assert len(errors) == 1, errors
    assert error in errors[0]


def _broken(tmp_path: Path, change: dict[str, object]) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.update(change)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"factory": "Okada Works"}, "factory: Value error, id 'Okada Works' is not a valid id"),
        ({"poll_interval_s": 0}, "poll_interval_s: Input should be greater than 0"),
        ({"publish_interval_s": 0.5}, "publish_interval_s must be at least poll_interval_s"),
        ({"sensor_broker": None}, "machine manual-lathe reads MQTT: give sensor_broker"),
        ({"unknown_option": 1}, "unknown_option: Extra inputs are not permitted"),
    ],
)
def test_errors_name_their_location(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"gateway\.yaml") as caught:
        load_config(_broken(tmp_path, change), ENV)
    assert message in str(caught.value)


def test_a_machine_reading_an_unread_field_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["machines"][0]["signals"] = ["spindle_rpm"]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"machines\.0: Value error, fields \['spindle_rpm'\]"):
        load_config(path, ENV)


def test_check_command_prints_the_plan_or_the_errors(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kyoso.cli", "gateway", "--config", str(path), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"KYOSO_BROKER_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
        )

    good = check(EXAMPLE)
    assert good.returncode == 0, good.stderr
    assert "holding        start 0     count 12" in good.stdout
    bad = check(_broken(tmp_path, {"poll_interval_s": -1}))
    assert bad.returncode == 2
    assert "poll_interval_s: Input should be greater than 0" in bad.stderr


@pytest.mark.parametrize(
    ("section", "model"),
    [("broker", PublisherConfig), ("outbox", OutboxConfig), ("http", HttpConfig)],
)
def test_documented_defaults_are_the_real_ones(section: str, model: type[BaseModel]) -> None:
    documented = documented_defaults(EXAMPLE, section, ignore={"software"})  # has the version
    assert documented, section
    for key, value in documented.items():
        default = model.model_fields[key].default
        if isinstance(default, Enum | Path):
            default = str(getattr(default, "value", default))
        if key == "max_bytes":
            default //= 1024 * 1024  # documented as "512 MiB"
        assert value == default, (section, key, value, default)


def test_single_options_are_overridden_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As the ingest's and the API's: KYOSO_GATEWAY_ plus the option's path."""
    monkeypatch.setenv("KYOSO_GATEWAY_POLL_INTERVAL_S", "2.5")
    monkeypatch.setenv("KYOSO_GATEWAY_BROKER__HOST", "broker.other.example")
    config = load_config(EXAMPLE, ENV)
    assert config.poll_interval_s == 2.5
    assert config.broker.host == "broker.other.example"
    assert config.broker.factory == "okada-machining"  # the file's identity still applies
    monkeypatch.setenv("KYOSO_GATEWAY_POLL_INTERVAL_S", "often")
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE, ENV)
    assert str(caught.value).startswith("environment (KYOSO_GATEWAY_*): poll_interval_s: ")
