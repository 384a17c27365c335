"""Why an OPC UA field is missing: the reasons, and the status codes and exceptions of
asyncua (and of the network) sorted into them, for the source and the probe alike."""

from enum import StrEnum

from asyncua import ua
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from .source import Missing

__all__ = [
    "NODE_CODES",
    "OpcuaMissingReason",
    "SetupError",
    "classify",
    "status_name",
    "status_reason",
]


class OpcuaMissingReason(StrEnum):
    """Why a field has no value in a poll."""

    NOT_CONNECTED = "no session"
    CONNECTION = "server unreachable"
    TIMEOUT = "timeout"
    SECURITY = "secure channel refused"
    LOGIN = "login refused"
    SESSION_LOST = "session lost"
    SERVER_ERROR = "server error"
    NOT_FOUND = "no such node"
    NO_VALUE = "no value since the session started"
    BAD_STATUS = "bad status"
    UNMAPPED = "value not mapped"
    CIRCUIT_OPEN = "circuit open"


_LOGIN_CODES = frozenset(
    {"BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected"}
)
NODE_CODES = frozenset(
    {"BadNoMatch", "BadNodeIdUnknown", "BadNodeIdInvalid", "BadBrowseNameInvalid", "BadNotReadable"}
)
"""Status codes that say a node is not there (or not to be read): no such node."""


def status_name(code: int) -> str:
    """``BadUserAccessDenied`` for its code."""
    return ua.StatusCode(ua.UInt32(code)).name


def status_reason(name: str) -> OpcuaMissingReason:
    """The reason a Bad status code of a service (not of a value) gives."""
    if name in _LOGIN_CODES:
        return OpcuaMissingReason.LOGIN
    if name.startswith(("BadCertificate", "BadSecurity", "BadNonce")):
        return OpcuaMissingReason.SECURITY
    return OpcuaMissingReason.NOT_FOUND if name in NODE_CODES else OpcuaMissingReason.SERVER_ERROR


class SetupError(Exception):
    """A session that cannot even be tried: a key, certificate or password file unread."""

    def __init__(self, missing: Missing) -> None:
        super().__init__(str(missing))
        self.missing = missing


def classify(exc: BaseException) -> Missing:
    """The reason an exception of asyncua (or of the network) gives for missing values."""
    if isinstance(exc, SetupError):
        return exc.missing
    if isinstance(exc, TimeoutError):
        return Missing(OpcuaMissingReason.TIMEOUT, "no answer in time")
    if isinstance(exc, UaStatusCodeError):
        name = status_name(exc.code)
        return Missing(status_reason(name), name)
    if isinstance(exc, OSError | ConnectionError | UaError):
        return Missing(OpcuaMissingReason.CONNECTION, str(exc) or type(exc).__name__)
    return Missing(OpcuaMissingReason.SERVER_ERROR, f"{type(exc).__name__}: {exc}")
