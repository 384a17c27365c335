"""The alerts' errors: one root, and a type for each side that can fail."""

__all__ = ["AlertsError", "ApiReadError", "DeliveryError", "StateInUseError"]


class AlertsError(Exception):
    """Anything the alerts could not do."""


class ApiReadError(AlertsError):
    """The API could not be read (unreachable, or an answer other than the one expected):
    the factory's rules are not evaluated this look, so nothing recovers by mistake."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The HTTP status of the answer; None: no answer."""


class DeliveryError(AlertsError):
    """A channel did not take a message: it is tried again later."""


class StateInUseError(AlertsError):
    """Another process holds the state file."""
