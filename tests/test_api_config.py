"""API settings: the shipped example, the environment over the file, clear errors."""

import os
from pathlib import Path
from typing import Any

import pytest
from examples import documented_defaults, uncommented_lines
from pydantic import BaseModel

from kyoso.api.settings import ApiSettings, load_settings
from kyoso.api.webhook_config import WebhookSettings
from kyoso.capacity.rules import CapacityRules
from kyoso.cli import main
from kyoso.influx.client import InfluxConfig
from kyoso.validation import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "api" / "api.example.yaml"


@pytest.fixture(autouse=True)
def _no_api_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KYOSO_API_"):
            monkeypatch.delenv(name)


def test_the_example_loads_and_explains_every_option() -> None:
    settings = load_settings(EXAMPLE)
    assert (settings.store, settings.influx.username, settings.port) == (
        "influxdb",
        "kyoso-api",
        8000,
    )
    assert uncommented_lines(EXAMPLE.read_text()) == []


def _real_default(model: type[BaseModel], key: str) -> Any:
    default = model.model_fields[key].get_default(call_default_factory=True)
    return str(default) if isinstance(default, Path) else default


@pytest.mark.parametrize(
    ("section", "model"),
    [
        (None, ApiSettings),
        ("capacity", CapacityRules),
        ("influx", InfluxConfig),
        ("webhooks", WebhookSettings),
    ],
)
def test_the_documented_defaults_are_the_real_ones(
    section: str | None, model: type[BaseModel]
) -> None:
    documented = documented_defaults(EXAMPLE, section)
    assert documented
    assert documented == {key: _real_default(model, key) for key in documented}


def test_the_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYOSO_API_CAPACITY__STALE_AFTER_S", "90")
    monkeypatch.setenv("KYOSO_API_INFLUX__PASSWORD", "from-env")
    settings = load_settings(EXAMPLE)
    assert settings.capacity.stale_after_s == 90
    assert settings.influx.password is not None
    assert settings.influx.password.get_secret_value() == "from-env"


def test_a_wrong_option_is_named_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "api.yaml"
    path.write_text("capacity: {lookback_days: 0, unknown: 1}\nport: -1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.splitlines() == [
        f"{path}:2: port: Input should be greater than or equal to 0",
        f"{path}:1: capacity.lookback_days: Input should be greater than or equal to 1",
        f"{path}:1: capacity.unknown: Extra inputs are not permitted",
    ]


def test_an_environment_error_names_the_environment_not_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "api.yaml"
    path.write_text("port: 8000\ncapacity:\n  lookback_days: 0\n  stale_after_s: 60\n")
    monkeypatch.setenv("KYOSO_API_PORT", "eighty")
    monkeypatch.setenv("KYOSO_API_CAPACITY__STALE_AFTER_S", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(caught.value).splitlines() == [
        "environment (KYOSO_API_*): port: Input should be a valid integer, unable to parse"
        " string as an integer",
        f"{path}:3: capacity.lookback_days: Input should be greater than or equal to 1",
        "environment (KYOSO_API_*): capacity.stale_after_s: Input should be greater than 0",
    ]


def test_an_environment_value_that_is_not_json_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KYOSO_API_CAPACITY", "{lookback_days: 3")
    with pytest.raises(ConfigError, match=r"^environment \(KYOSO_API_\*\): error parsing value"):
        load_settings(EXAMPLE)


def test_check_reports_the_settings_and_serve_needs_a_key_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api", "--config", str(EXAMPLE), "--check"]) == 0
    assert "ok: store influxdb (http://influxdb:8086)" in capsys.readouterr().out
    config = tmp_path / "api.yaml"
    config.write_text(f"keys: {tmp_path / 'missing.sqlite3'}\n")
    assert main(["api", "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        f"no API key store at {tmp_path / 'missing.sqlite3'} (create one with: kyoso api"
        f" --config {config} keys create --name NAME --scope SCOPE)\n"
    )
