"""Ingest settings: the shipped example, the environment over the file, clear errors."""

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from examples import documented_defaults, uncommented_lines
from pydantic import BaseModel

from kyoso.influx.client import InfluxConfig
from kyoso.ingest.config import (
    BatchConfig,
    IngestConfigError,
    IngestSettings,
    MqttConfig,
    PlausibilityConfig,
    load_settings,
)
from kyoso.ops import HttpConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "ingest" / "ingest.example.yaml"


@pytest.fixture(autouse=True)
def _no_ingest_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KYOSO_INGEST_"):
            monkeypatch.delenv(name)


def test_the_example_loads_and_explains_every_option() -> None:
    settings = load_settings(EXAMPLE)
    assert (settings.store, settings.mqtt.port, settings.influx.url) == (
        "influxdb",
        8883,
        "http://influxdb:8086",
    )
    assert uncommented_lines(EXAMPLE.read_text()) == []


def test_no_file_means_every_default() -> None:
    assert load_settings(None) == IngestSettings()
    assert IngestSettings().http.port == 9106


def _real_default(model: type[BaseModel], key: str) -> Any:
    info = model.model_fields[key]
    default = info.get_default(call_default_factory=True)
    return str(default) if isinstance(default, Path) else default


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("mqtt", MqttConfig),
        ("influx", InfluxConfig),
        ("batch", BatchConfig),
        ("plausibility", PlausibilityConfig),
        (None, IngestSettings),
    ],
)
def test_documented_defaults_are_the_real_ones(section: str | None, model: type[BaseModel]) -> None:
    documented = documented_defaults(EXAMPLE, section)
    assert documented, section
    for key, value in documented.items():
        assert value == _real_default(model, key), (section, key)
    assert documented_defaults(EXAMPLE, "http")["port"] == IngestSettings().http.port
    assert HttpConfig().host == documented_defaults(EXAMPLE, "http")["host"]


def test_the_environment_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(
        yaml.safe_dump({"mqtt": {"host": "file-host", "port": 1884}, "store": "sqlite"})
    )
    monkeypatch.setenv("KYOSO_INGEST_MQTT__HOST", "env-host")
    monkeypatch.setenv("KYOSO_INGEST_INFLUX__PASSWORD", "s3cret")
    monkeypatch.setenv("KYOSO_INGEST_INFLUX__USERNAME", "ingest")
    settings = load_settings(path)
    assert (settings.mqtt.host, settings.mqtt.port) == ("env-host", 1884)
    assert settings.influx.password is not None
    assert settings.influx.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch: {max_samples: 0}", "ingest.yaml:1: batch.max_samples: Input should be greater"),
        ("mqtt: {shared_group: 'Bad Group'}", "ingest.yaml:1: mqtt.shared_group: Value error"),
        ("store: postgres", "ingest.yaml:1: store: Input should be 'influxdb' or 'sqlite'"),
        ("influx:\n  url: 'ftp://x'", "ingest.yaml:2: influx.url: Value error, url must be http"),
        ("\n\nnonsense: 1", "ingest.yaml:3: nonsense: Extra inputs are not permitted"),
        ("- a list", "ingest.yaml: the top level must be a mapping"),
        ("1: one", "ingest.yaml: the top level must be a mapping"),
        (
            "mqtt: [unclosed",
            "ingest.yaml:1:16: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence at 1:7)",
        ),
    ],
)
def test_errors_name_their_location(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(text)
    with pytest.raises(IngestConfigError) as caught:
        load_settings(path)
    assert message in str(caught.value)


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYOSO_INGEST_MQTT__PORT", "eighty")
    with pytest.raises(IngestConfigError, match=r"environment \(KYOSO_INGEST_\*\): mqtt.port"):
        load_settings(None)
