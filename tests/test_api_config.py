"""API settings: the shipped example, the environment over the file, clear errors."""

import os
from pathlib import Path
from typing import Any

import pytest
from examples import documented_defaults, uncommented_lines
from pydantic import BaseModel

from kyoso.api.settings import ApiSettings, CapacityRules, load_settings
from kyoso.cli import main
from kyoso.ingest.influx import InfluxConfig
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
    [(None, ApiSettings), ("capacity", CapacityRules), ("influx", InfluxConfig)],
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
    assert f"{path}: capacity.lookback_days: Input should be greater than or equal to 1" in message
    assert f"{path}: capacity.unknown: Extra inputs are not permitted" in message
    assert f"{path}: port: Input should be greater than or equal to 0" in message


def test_check_reports_the_settings_and_serve_needs_a_key_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api", "--config", str(EXAMPLE), "--check"]) == 0
    assert "ok: store influxdb (http://influxdb:8086)" in capsys.readouterr().out
    config = tmp_path / "api.yaml"
    config.write_text(f"keys: {tmp_path / 'missing.sqlite3'}\n")
    assert main(["api", "--config", str(config)]) == 1
    assert "kyoso api keys create" in capsys.readouterr().err
