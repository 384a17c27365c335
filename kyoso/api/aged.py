"""A JSON answer serialized once per computation of its figures, its data ages written in per
response.

The regional answer is the same for every caller until its figures are computed again, but
for the ages (``data_age_s``), which are measured when each response is sent. Building and
serializing it (1,000 machines: some 50 kB) for each request cost more than everything else
a request does; tagging its figures (the ETag) as much again. So it is built, serialized
and tagged once, and cut where each age goes: a response joins the pieces with the ages of
the moment, which costs microseconds.
"""

from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, Final

from fastapi import Request
from pydantic_core import to_json

from .deps import age_s, figures_tag

__all__ = ["AgedBodies", "AgedBody", "bodies", "same_objects"]

_AGE: Final = b'"data_age_s":null'
"""Where an age goes: every ``data_age_s`` is serialized as null, then cut out."""


class AgedBody:
    """A JSON body whose every ``data_age_s`` is the age of a sample end when it is sent.

    ``data`` is the body as :meth:`pydantic.BaseModel.model_dump` gives it (``mode="json"``),
    but for its ``data_age_s`` values: each is the end of the newest sample it is the age of
    (a datetime, or None for no sample)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._newest: list[datetime | None] = []
        _take_ages(data, self._newest)
        self.tag = figures_tag(data)
        """The ETag of its figures (:func:`~kyoso.api.deps.figures_tag`: not of its ages)."""
        # Exactly one piece more than ages: JSON text escapes its quotes, so the marker
        # is found only where an age was taken out.
        self._pieces = to_json(data).split(_AGE)

    def at(self, now: datetime) -> bytes:
        """The body with the data ages at ``now``."""
        out = [self._pieces[0]]
        for newest, piece in zip(self._newest, self._pieces[1:], strict=True):
            age = age_s(newest, now)
            out.append(b'"data_age_s":' + (b"null" if age is None else repr(age).encode()))
            out.append(piece)
        return b"".join(out)


def _take_ages(node: Any, newest: list[datetime | None]) -> None:
    """Collect the sample ends at ``data_age_s`` in the order JSON writes them (depth
    first, keys in order), leaving null in their place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data_age_s":
                newest.append(value)
                node[key] = None
            else:
                _take_ages(value, newest)
    elif isinstance(node, list):
        for value in node:
            _take_ages(value, newest)


class AgedBodies:
    """The bodies last built, by key, each kept as long as what it was built from is the
    same (the same objects: figures computed once are never changed). At most
    ``max_entries`` keys: the ones built longest ago go first."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self._bodies: dict[Hashable, tuple[Sequence[object], AgedBody]] = {}

    def get(
        self, key: Hashable, sources: Sequence[object], build: Callable[[], dict[str, Any]]
    ) -> AgedBody:
        """The body of ``key`` for ``sources``, built from ``build()`` if they changed."""
        known = self._bodies.get(key)
        if known is not None and same_objects(known[0], sources):
            return known[1]
        body = AgedBody(build())
        self._bodies.pop(key, None)
        self._bodies[key] = (sources, body)
        while len(self._bodies) > self.max_entries:
            del self._bodies[next(iter(self._bodies))]
        return body


def same_objects(a: Sequence[object], b: Sequence[object]) -> bool:
    """Whether two lists hold the same objects, in the same order (figures computed once are
    never changed: the same objects, the same figures)."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def bodies(request: Request) -> AgedBodies:
    """The app's bodies (``app.state.bodies``): the same for every caller until their
    figures are computed again."""
    found: AgedBodies = request.app.state.bodies
    return found
