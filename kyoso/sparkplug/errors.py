"""The one exception of the Sparkplug codec."""

__all__ = ["SparkplugError"]


class SparkplugError(ValueError):
    """A malformed Sparkplug topic or payload; the message says exactly what is wrong.

    A ``ValueError``: what arrives on the wire is data, and a consumer dead-letters it.
    """
