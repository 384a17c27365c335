"""What the panels share: InfluxQL targets, data source references and layout helpers.

The SDK has no InfluxDB query type, so :class:`InfluxQLQuery` is one, in the JSON Grafana's
InfluxDB data source stores for a raw query (``rawQuery: true``). Queries follow one rule
that the tests rely on: every expression of the outermost ``SELECT`` is named with
``AS "name"``, and that name is the column (and, in tables, the field) a panel shows.
"""

from typing import Literal, Self

from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

from .words import Words, uid

__all__ = [
    "INFLUXDB",
    "LIVE_WINDOW",
    "LIVE_WINDOW_MIN",
    "InfluxQL",
    "InfluxQLQuery",
    "datasource",
    "kyoso_dashboard",
    "transformation",
]

INFLUXDB = "influxdb"
"""Grafana's plugin id of the InfluxDB data source."""

LIVE_WINDOW_MIN = 10
LIVE_WINDOW = f"{LIVE_WINDOW_MIN}m"
"""How old a capacity snapshot may be and still count as live: ten snapshot periods of the
capacity service (60 s by default). An older one means the service has stopped, and a
board must then show nothing rather than stale capacity."""

ResultFormat = Literal["time_series", "table"]


def datasource(uid: str) -> dashboard.DataSourceRef:
    """A reference to an InfluxDB data source by uid (a ``${variable}`` too)."""
    return dashboard.DataSourceRef(type_val=INFLUXDB, uid=uid)


def kyoso_dashboard(words: Words, base_uid: str, name: str) -> builders.Dashboard:
    """A dashboard as every Kyoso board starts, in the language of ``words``: titled and
    described by the catalog's ``<name>_title`` and ``<name>_description``, tagged with
    its language, linked to its twins in the other languages, the last 24 h, refreshing
    every minute, cursors synchronised across panels."""
    return (
        builders.Dashboard(words(f"{name}_title"))
        .uid(uid(base_uid, words.lang))
        .description(words(f"{name}_description"))
        .tags(["kyoso", words.lang])
        .links(words.links(base_uid))
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
    )


def transformation(kind: str, options: dict[str, object]) -> dashboard.DataTransformerConfig:
    """A Grafana transformation, ``kind`` being its id (``joinByField``, ``sortBy`` ...)."""
    return dashboard.DataTransformerConfig(id_val=kind, options=options)


class InfluxQLQuery(cogvariants.Dataquery):
    """A raw InfluxQL target."""

    def __init__(
        self,
        ref_id: str,
        query: str,
        source: dashboard.DataSourceRef,
        result_format: ResultFormat,
        alias: str | None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.datasource = source
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        """The target as Grafana stores it."""
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        return payload


class InfluxQL(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builds an :class:`InfluxQLQuery`; whitespace in ``query`` is collapsed to one space,
    so that queries can be written over several lines and read the same in Grafana."""

    def __init__(self, query: str, source: dashboard.DataSourceRef, ref_id: str = "A") -> None:
        self._query = InfluxQLQuery(ref_id, " ".join(query.split()), source, "time_series", None)

    def build(self) -> InfluxQLQuery:
        """The target."""
        return self._query

    def table(self) -> Self:
        """One row per series (``GROUP BY`` tags as columns) instead of time series."""
        self._query.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series names, e.g. ``$tag_machine``."""
        self._query.alias = alias
        return self
