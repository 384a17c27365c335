"""Settings of ``kyoso api``: a YAML file, environment variables, or both.

Every option has a default, so the API runs with no file at all on the embedded store.
Environment variables override the file: ``KYOSO_API_`` plus the option's path in capitals,
levels joined by ``__``, e.g. ``KYOSO_API_INFLUX__URL``. The commented example with every
option is ``kyoso/api/api.example.yaml``.
"""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from kyoso.capacity.rules import CapacityRules
from kyoso.store.choice import StoreChoice
from kyoso.validation import FileSettings, load_yaml_settings

from .limits_config import RequestLimits
from .webhook_config import WebhookSettings

__all__ = ["ENV_PREFIX", "ApiSettings", "load_settings"]

ENV_PREFIX = "KYOSO_API_"


class ApiSettings(StoreChoice, FileSettings):
    """Everything ``kyoso api`` needs (the store options: :class:`StoreChoice`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=0, le=65535, description="Port; 0 picks a free one.")
    keys: Path = Field(
        Path("var/api-keys.sqlite3"),
        description="API key store; `kyoso api --config FILE keys ...` manages this one.",
    )
    bookings_path: Path = Field(
        Path("var/bookings.sqlite3"),
        description="Bookings factories declare, the platform's holds and orders, and the "
        "factories' audit log of both.",
    )
    profile_cache_path: Path | None = Field(
        Path("var/profiles.sqlite3"),
        description="Learnt load profiles kept between restarts, so that the first answer "
        "reads only the hours since (null: learn them from the store at every start).",
    )
    capacity: CapacityRules = Field(default_factory=CapacityRules)
    limits: RequestLimits = Field(default_factory=RequestLimits)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (https://platform.example) whose pages may call the API "
        "from a browser (CORS); empty: none, as for any API not meant for browsers.",
    )
    snapshots: bool = Field(
        True, description="Write capacity snapshots into the shared capacity store."
    )


def load_settings(path: Path | None = None) -> ApiSettings:
    """Read ``path`` (if given) and the environment; ``ConfigError`` lists every problem."""
    return load_yaml_settings(ApiSettings, path, ENV_PREFIX)
