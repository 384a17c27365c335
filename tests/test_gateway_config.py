"""Gateway configuration: the shipped example, secrets from the environment, clear errors."""

import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest
import yaml
from examples import documented_defaults, uncommented_lines
from pydantic import BaseModel

from kyoso.gateway.config import ConfigError, load_config, substitute_env
from kyoso.gateway.outbox import OutboxConfig
from kyoso.gateway.publisher import PublisherConfig
from kyoso.ops import HttpConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "gateway" / "gateway.example.yaml"
ENV = {"KYOSO_BROKER_PASSWORD": "s3cret: with {yaml} chars"}


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


def test_environment_substitution() -> None:
    data = {"a": "${X}", "b": ["x-${X}-${Y}"], "c": "$${X}", "d": 5}
    assert substitute_env(data, {"X": "1", "Y": "2"}) == {
        "a": "1",
        "b": ["x-1-2"],
        "c": "${X}",
        "d": 5,
    }
    with pytest.raises(ConfigError, match="unknown environment variables: X, Y"):
        substitute_env(data, {})


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
