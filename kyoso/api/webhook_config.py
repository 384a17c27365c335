"""The settings of the API's webhooks (docs/api.md, "Webhooks"), apart from the hub itself
(:mod:`kyoso.api.webhooks`), so that reading settings loads no HTTP client."""

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from kyoso.validation import ConfigModel

__all__ = ["WebhookSettings"]


class WebhookSettings(ConfigModel):
    """Where subscriptions and pending deliveries are kept, and how deliveries are tried:
    the ``webhooks`` section of the API's settings."""

    path: Path | None = Field(
        Path("var/webhooks.sqlite3"),
        description="Subscriptions, their signing secrets and the deliveries not yet made "
        "(readable by the API's account only); null: kept in memory, lost at a restart.",
    )
    allow_private_targets: bool = Field(
        False,
        description="Deliver to loopback, private and link-local addresses too, over http "
        "as well (tests, closed networks); otherwise only to public https addresses.",
    )
    max_subscriptions_per_key: int = Field(
        20, ge=1, le=1000, description="Subscriptions one API key may have."
    )
    max_attempts: int = Field(
        8, ge=1, le=50, description="Attempts of one delivery before it is marked failed."
    )
    retry_base_s: float = Field(
        120.0,
        gt=0,
        description="The first retry comes about this long after a failed attempt; each next "
        "one three times as long (with jitter), up to retry_max_s.",
    )
    retry_max_s: float = Field(
        43200.0, gt=0, description="The longest wait between two attempts (Retry-After too)."
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="One attempt, from resolving the receiver's host to its status line.",
    )
    max_concurrent: int = Field(
        16,
        ge=1,
        le=1000,
        description="Deliveries in flight at once (at most one per subscription), so that "
        "slow receivers take at most this many connections.",
    )
    max_pending_per_subscription: int = Field(
        1000,
        ge=1,
        description="Deliveries a subscription may have waiting; an event beyond is logged "
        "as failed at once (its receiver has been failing for long).",
    )
    log_retention_days: float = Field(
        7.0, gt=0, description="Delivered and failed deliveries stay in the log this long."
    )

    @model_validator(mode="after")
    def _first_retry_within_the_longest(self) -> Self:
        if self.retry_base_s > self.retry_max_s:
            raise ValueError(
                f"retry_base_s ({self.retry_base_s}) is more than retry_max_s"
                f" ({self.retry_max_s}) allows"
            )
        return self
