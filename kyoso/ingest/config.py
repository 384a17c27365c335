"""Settings of ``kyoso ingest``: a YAML file, environment variables, or both.

Every option has a default, so the ingest runs with no file at all against a local broker
and the embedded store. Environment variables override the file: ``KYOSO_INGEST_`` plus the
option's path in capitals, levels joined by ``__``, e.g. ``KYOSO_INGEST_MQTT__HOST`` or
``KYOSO_INGEST_INFLUX__PASSWORD`` (the way to keep secrets out of the file). The commented
example with every option is ``kyoso/ingest/ingest.example.yaml``.
"""

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from kyoso.contract import Id, check_id
from kyoso.mqtt import BrokerConnection
from kyoso.ops import HttpConfig
from kyoso.store.choice import StoreChoice
from kyoso.validation import ConfigError, ConfigModel, FileSettings, load_yaml_settings

from .sparkplug_config import SparkplugConfig

__all__ = [
    "BatchConfig",
    "IngestConfigError",
    "IngestSettings",
    "MqttConfig",
    "PlausibilityConfig",
    "ReceiptsConfig",
    "load_settings",
]

ENV_PREFIX = "KYOSO_INGEST_"


class MqttConfig(BrokerConnection):
    """The regional broker, and how the ingest subscribes to it."""

    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="The session's id: the broker keeps the session (and queues messages) "
        "under it. None: the username (a broker that binds client ids to usernames, as the "
        "regional one does, uses it whatever is sent), else kyoso-ingest. Each worker of a "
        "shared group needs its own account.",
    )

    @property
    def session_id(self) -> str:
        """The client id sent (see ``client_id``)."""
        return self.client_id or self.username or "kyoso-ingest"

    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        le=2**32 - 1,
        description="How long the broker keeps the session and queues while the ingest is away.",
    )
    shared_group: Id | None = Field(
        None,
        description="Join this $share group for samples, so several workers split them;"
        " None: one ingest takes everything.",
    )
    receive_maximum: int = Field(
        1000,
        ge=1,
        le=65535,
        description="Most unacknowledged messages the broker may send at once (MQTT 5"
        " Receive Maximum): bounds the ingest's memory.",
    )


class BatchConfig(ConfigModel):
    """How messages are grouped into store writes, and acknowledged together."""

    max_samples: int = Field(5000, ge=1, description="A batch closes at this many samples...")
    max_delay_s: float = Field(
        0.2, gt=0, le=60, description="...or when its first message has waited this long."
    )
    max_in_flight: int = Field(
        4, ge=1, le=64, description="Batches being written at once (acknowledged in order)."
    )
    retry_min_s: float = Field(0.5, gt=0, description="First wait before retrying a batch.")
    retry_max_s: float = Field(30.0, gt=0, description="Longest wait between retries.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError("retry_max_s must be >= retry_min_s")
        return self


class ReceiptsConfig(ConfigModel):
    """Store receipts: what the ingest has taken of each gateway's samples, published back
    so the gateway can delete them from its outbox (docs/contract.md, 8.6)."""

    worker: Id | None = Field(
        None,
        description="This worker's id in the receipt topics; None: the broker username, "
        "else the client id (each worker of a shared group needs its own).",
    )
    interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Receipts with new samples are published, and gateways' gaps that "
        "changed written to the store, this often.",
    )


class PlausibilityConfig(ConfigModel):
    """Timestamps the ingest refuses (dead-letters), whatever the contract allows."""

    max_future_s: float = Field(
        300.0, ge=0, description="A sample, status or description from further ahead of now."
    )
    max_age_s: float = Field(
        90 * 24 * 3600.0,
        gt=0,
        description="A sample older than this (a gateway clock reset to 1970, a stale outbox).",
    )


class IngestSettings(StoreChoice, FileSettings):
    """Everything ``kyoso ingest`` needs (the store options: :class:`StoreChoice`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    dead_letter_path: Path = Field(
        Path("kyoso-dead-letters.sqlite3"), description="Where refused messages are kept."
    )
    batch: BatchConfig = Field(default_factory=BatchConfig)
    plausibility: PlausibilityConfig = Field(default_factory=PlausibilityConfig)
    receipts: ReceiptsConfig = Field(default_factory=ReceiptsConfig)
    http: HttpConfig = Field(default_factory=lambda: HttpConfig(port=9106))
    sparkplug: SparkplugConfig | None = Field(
        None,
        description="Read Sparkplug B edge nodes as a host application (docs/sparkplug.md);"
        " null: Kyoso gateways only.",
    )

    @property
    def worker(self) -> str:
        """This worker's id in the receipt topics (see :class:`ReceiptsConfig`)."""
        return self.receipts.worker or self.mqtt.username or self.mqtt.session_id

    @model_validator(mode="after")
    def _worker_is_an_id(self) -> Self:
        if self.receipts.worker is None:
            try:
                check_id(self.worker, "the broker username (or client id)")
            except ValueError as exc:
                raise ValueError(f"{exc}: set receipts.worker to name this worker") from exc
        return self


IngestConfigError = ConfigError
"""Settings of the ingest that cannot be used (the shared :class:`ConfigError`)."""


def load_settings(path: Path | None = None) -> IngestSettings:
    """Read ``path`` (if given) and the environment; :class:`IngestConfigError` lists errors."""
    return load_yaml_settings(IngestSettings, path, ENV_PREFIX)
