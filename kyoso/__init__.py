"""Kyoso: live machine telemetry turned into shared machine capacity for a regional network."""

__version__ = "0.1.0"
