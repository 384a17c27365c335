"""The settings of the API's request limits (docs/api.md, "Fair use"), apart from the
limiter itself (:mod:`kyoso.api.limits`), so that reading settings loads no web framework."""

from typing import Self

from pydantic import Field, model_validator

from kyoso.validation import ConfigModel

__all__ = ["RequestLimits"]


class RequestLimits(ConfigModel):
    """How much each key may ask (docs/api.md, "Fair use"): the ``limits`` section of the
    API's settings."""

    rate_per_s: float = Field(
        20.0, gt=0, description="Requests per second a key may make, on average (any route)."
    )
    burst: int = Field(40, ge=1, description="Requests a key may make at once, above the rate.")
    max_concurrent: int = Field(
        2,
        ge=1,
        description="Expensive requests (KPIs, capacity, region, search, cover) of one key "
        "computed at once.",
    )
    max_concurrent_total: int = Field(
        4,
        ge=1,
        description="Expensive requests of all keys computed at once; keep it below the "
        "worker threads (min(32, CPUs + 4)), which authentication needs too.",
    )
    max_wait_s: float = Field(
        2.0, ge=0, le=60, description="How long an expensive request waits for a slot (429 then)."
    )

    @model_validator(mode="after")
    def _one_key_within_all(self) -> Self:
        if self.max_concurrent > self.max_concurrent_total:
            raise ValueError(
                f"max_concurrent ({self.max_concurrent}) is more than max_concurrent_total"
                f" ({self.max_concurrent_total}) allows"
            )
        return self
