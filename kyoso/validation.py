"""Configuration errors a person can act on: one line per problem, with its location, and
the settings loader every service shares (a YAML file, overridden by the environment)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

__all__ = ["ConfigError", "FileSettings", "error_lines", "load_yaml_model", "load_yaml_settings"]


class FileSettings(BaseSettings):
    """A service's settings: from a file (passed as keyword arguments by
    :func:`load_yaml_settings`) and the environment, the environment winning."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init arguments; the environment overrides it.
        return env_settings, init_settings


_S = TypeVar("_S", bound=FileSettings)
_M = TypeVar("_M", bound=BaseModel)


class ConfigError(ValueError):
    """Settings that cannot be used, with every problem and where it is."""


def error_lines(source: object, exc: ValidationError) -> str:
    """``<source>: <dotted.location>: <message>``, one line per error of ``exc``."""
    return "\n".join(
        f"{source}: {'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )


def load_yaml_model(model: type[_M], path: Path, error: type[ValueError]) -> _M:
    """``model`` validated from the YAML file at ``path``; ``error`` names the file and
    every problem (one line each) if it cannot be read or is not valid."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(error_lines(path, exc)) from exc


def load_yaml_settings(cls: type[_S], path: Path | None, env_prefix: str) -> _S:
    """``cls`` from the YAML file at ``path`` (if given) and the environment, which the
    settings class lets override the file; :class:`ConfigError` lists every problem."""
    data: Mapping[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of options")
        data = loaded or {}
    try:
        return cls(**data)
    except ValidationError as exc:
        source = str(path) if path is not None else f"environment ({env_prefix}*)"
        raise ConfigError(error_lines(source, exc)) from exc
