"""Identifiers shared by every component.

Factory, gateway and machine ids travel as MQTT topic levels and as InfluxDB tag values,
so the contract admits only characters that are safe in both without escaping.
"""

import re
from typing import Annotated

from pydantic import AfterValidator

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Lowercase letters, digits, ``_`` and ``-``; first a letter or digit; 1 to 63 characters."""

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
"""Counter and signal names: snake_case, unit in the name (``power_kw``)."""

_ID_RE = re.compile(ID_PATTERN)
_NAME_RE = re.compile(NAME_PATTERN)


class InvalidIdError(ValueError):
    """An id or name that the contract does not admit."""


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid factory, gateway or machine id, else raise."""
    if not _ID_RE.fullmatch(value):
        raise InvalidIdError(
            f"{what} {value[:80]!r} is not a valid id: use 1-63 characters of a-z, 0-9, "
            "'_' and '-', starting with a letter or digit"
        )
    return value


def check_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a valid counter or signal name, else raise."""
    if not _NAME_RE.fullmatch(value):
        raise InvalidIdError(
            f"{what} {value[:80]!r} is not a valid name: use 1-63 characters of a-z, 0-9 "
            "and '_', starting with a letter"
        )
    return value


Id = Annotated[str, AfterValidator(check_id)]
"""A factory, gateway or machine id."""

Name = Annotated[str, AfterValidator(check_name)]
"""A counter or signal name."""
