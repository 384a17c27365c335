"""The ``broker`` section of a gateway's configuration: how the publisher
(:mod:`kyoso.gateway.publisher`) reaches the regional broker and paces what it sends."""

from pydantic import Field

from kyoso import __version__
from kyoso.contract import MAX_SAMPLES_PER_BATCH, Id
from kyoso.mqtt import BrokerConnection

__all__ = ["PublisherConfig"]


class PublisherConfig(BrokerConnection):
    """How the gateway reaches the regional broker and paces what it sends."""

    factory: Id = Field(description="This gateway's factory id (first topic level).")
    gateway: Id = Field(description="This gateway's id within its factory.")
    client_id: str | None = Field(
        None,
        description="None: the username (a broker binding client ids to usernames, as the "
        "regional one does, uses it whatever is sent), else kyoso-<factory>-<gateway>.",
    )
    max_inflight: int = Field(20, ge=1, le=65535, description="Most batches awaiting PUBACK.")
    max_samples_per_batch: int = Field(
        500, ge=1, le=MAX_SAMPLES_PER_BATCH, description="Most samples per batch."
    )
    replay_rate_samples_per_s: float = Field(
        100.0, gt=0, description="Backlog replay rate; live samples are not limited."
    )
    shutdown_timeout_s: float = Field(10.0, ge=0, description="Longest wait of stop().")
    software: str = Field(
        f"kyoso-gateway {__version__}", max_length=64, description="Sent in the status."
    )
