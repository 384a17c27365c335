"""A circuit breaker per device, and the two options that tune it, for every source kind.

A device that failed ``failures_to_open`` polls in a row is not asked again until
``open_s`` has passed: its polls answer "circuit open" at once, so a dead machine costs
nothing and never delays the others; then one trial request decides (half-open).
"""

import time
from collections.abc import Callable
from enum import StrEnum

from pydantic import Field

from kyoso.validation import ConfigModel

__all__ = ["BreakerConfig", "CircuitBreaker", "CircuitState"]


class BreakerConfig(ConfigModel):
    """The circuit breaker's options, shared by every device configuration."""

    failures_to_open: int = Field(
        default=3, ge=1, le=1000, description="Consecutive failed polls that open the circuit."
    )
    open_s: float = Field(
        default=30.0,
        gt=0,
        le=86_400,
        description="How long an open circuit refuses polls before one trial request.",
    )


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``failures_to_open`` consecutive failures; after ``open_s`` lets one
    trial through (half-open), which closes it on success and reopens it on failure."""

    def __init__(
        self, failures_to_open: int, open_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures_to_open = failures_to_open
        self.open_s = open_s
        self._clock = clock
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = 0.0

    @classmethod
    def configured(
        cls, config: BreakerConfig, clock: Callable[[], float] = time.monotonic
    ) -> "CircuitBreaker":
        return cls(config.failures_to_open, config.open_s, clock)

    def allow(self) -> bool:
        """Whether a request may go out now; moves an open circuit whose time is up to
        half-open."""
        if self.state is CircuitState.OPEN:
            if self._clock() - self.opened_at < self.open_s:
                return False
            self.state = CircuitState.HALF_OPEN
        return True

    def remaining_s(self) -> float:
        return max(0.0, self.opened_at + self.open_s - self._clock())

    def success(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0

    def failure(self) -> bool:
        """Count a failure; True if it opened the circuit."""
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.failures_to_open:
            opened = self.state is not CircuitState.OPEN
            self.state = CircuitState.OPEN
            self.opened_at = self._clock()
            return opened
        return False
