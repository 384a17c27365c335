"""The gateway's exception root: every error it raises on purpose derives from it."""


class GatewayError(Exception):
    """A gateway error: configuration, Modbus, outbox or publishing."""
