"""The regional board: who has free capacity, by capability and factory, and whom to trust.

Reads only the shared ``kyoso_capacity`` database, through the capacity data source (the
regional reader's credentials): the capacity service's snapshots, one point per machine,
capability and horizon in ``capacity`` and one per factory in ``factory_status``. A live
figure is the latest snapshot of each series no older than
:data:`~kyoso.dashboards.influxql.LIVE_WINDOW`, summed over machines; a trend sums, per
time bucket, each series' latest value in that bucket (summing every snapshot of a bucket
would count a machine once per snapshot). Its words come from the catalog, as the plant
dashboard's do.
"""

# ruff: noqa: S608 - the queries are Grafana templates built from constants, run by Grafana
from grafana_foundation_sdk.builders import barchart, bargauge, dashboard, stat, table, timeseries
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

from kyoso.i18n import DEFAULT, Lang
from kyoso.regional.grafana import CAPACITY_DATASOURCE

from .influxql import LIVE_WINDOW, InfluxQL, datasource, kyoso_dashboard, transformation
from .words import Words

__all__ = ["UID", "regional_dashboard"]

UID = "kyoso-regional"
"""The English board's uid; the Japanese one's is ``kyoso-regional-ja``."""

_CAPACITY = datasource(CAPACITY_DATASOURCE)
_SELECTED = (
    '"horizon" = \'$horizon\' AND "process" =~ /^$capability$/ AND "factory" =~ /^$factory$/'
)
_LIVE = f"time > now() - {LIVE_WINDOW}"


def _latest(field: str, measurement: str, where: str, group_by: str) -> str:
    """The inner query: each series' latest ``field``."""
    return (
        f'SELECT last("{field}") AS "{field}" FROM "{measurement}" WHERE {where} '
        f"GROUP BY {group_by}"
    )


def _live_available(group_by: str) -> str:
    """The live available hours of the selected machines, summed by ``group_by``."""
    latest = _latest(
        "available_h", "capacity", f"{_SELECTED} AND {_LIVE}", '"factory", "machine", "process"'
    )
    return f'SELECT sum("available_h") AS "available_h" FROM ({latest}) GROUP BY {group_by}'


def _variables(board: dashboard.Dashboard, words: Words) -> None:
    board.with_variable(
        dashboard.CustomVariable("horizon")
        .label(words("variable_horizon"))
        .values("24h,7d")
        .current(models.VariableOption(selected=True, text="24h", value="24h"))
    )
    for name, key in (("capability", "process"), ("factory", "factory")):
        board.with_variable(
            dashboard.QueryVariable(name)
            .label(words(f"variable_{name}"))
            .datasource(_CAPACITY)
            .query(f'SHOW TAG VALUES FROM "capacity" WITH KEY = "{key}"')
            .multi(True)
            .include_all(True)
            .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
            .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
        )


def _now(board: dashboard.Dashboard, words: Words) -> None:
    board.with_row(dashboard.Row(words("row_available_now")))
    status_where = f'"factory" =~ /^$factory$/ AND {_LIVE}'
    for name, query in (
        (
            "gateways_offline",
            'SELECT sum("gateways_offline") AS "gateways_offline" FROM ('
            + _latest("gateways_offline", "factory_status", status_where, '"factory"')
            + ")",
        ),
        (
            "factories_offline",
            'SELECT count("offline") AS "factories_offline" FROM ('
            + _latest("offline", "factory_status", status_where, '"factory"')
            + ') WHERE "offline" = true',
        ),
    ):
        board.with_panel(
            stat.Panel()
            .title(words(f"column_{name}"))
            .description(words("offline_description"))
            .with_target(InfluxQL(query, _CAPACITY))
            .graph_mode(common_models.BigValueGraphMode.NONE)
            .no_value("0")
            .thresholds(
                dashboard.ThresholdsConfig()
                .mode(models.ThresholdsMode.ABSOLUTE)
                .steps([models.Threshold(None, "green"), models.Threshold(1, "red")])
            )
            .height(5)
            .span(4)
        )
    board.with_panel(
        bargauge.Panel()
        .title(words("available_by_capability"))
        .with_target(
            InfluxQL(
                _live_available('"process"'),
                _CAPACITY,
            ).alias("$tag_process")
        )
        .unit(words.unit("unit_hours"))
        .decimals(0)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .height(10)
        .span(16)
    )
    board.with_panel(
        words.columns(barchart.Panel(), ["process\\factory"])
        .title(words("available_by_capability_and_factory"))
        .with_target(
            InfluxQL(
                _live_available('"process", "factory"'),
                _CAPACITY,
            ).table()
        )
        .with_transformation(
            transformation(
                "groupingToMatrix",
                {"columnField": "factory", "rowField": "process", "valueField": "available_h"},
            )
        )
        .x_field("process\\factory")
        .stacking(common_models.StackingMode.NORMAL)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .axis_label(words("column_available_h"))
        .unit(words.unit("unit_hours"))
        .height(10)
        .span(24)
    )
    board.with_panel(
        words.columns(
            table.Panel(),
            ["factory", "gateways_online", "gateways_offline", "offline", "machines", "data_age_s"],
            {"data_age_s": [models.DynamicConfigValue("unit", words.unit("unit_seconds"))]},
        )
        .title(words("factories"))
        .description(words("factories_description"))
        .with_target(
            InfluxQL(
                f"""
                SELECT last("gateways_online") AS "gateways_online",
                  last("gateways_offline") AS "gateways_offline", last("offline") AS "offline",
                  last("machines") AS "machines", last("data_age_s") AS "data_age_s"
                FROM "factory_status" WHERE {status_where} GROUP BY "factory"
                """,
                _CAPACITY,
            ).table()
        )
        .mappings([words.yes_no()])
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .height(8)
        .span(24)
    )


def _trends(board: dashboard.Dashboard, words: Words) -> None:
    board.with_row(dashboard.Row(words("row_trends")))
    buckets = "time($__interval)"
    board.with_panel(
        timeseries.Panel()
        .title(words("available_over_time"))
        .with_target(
            InfluxQL(
                'SELECT sum("available_h") AS "available_h" FROM ('
                + _latest(
                    "available_h",
                    "capacity",
                    f"$timeFilter AND {_SELECTED}",
                    f'{buckets}, "factory", "machine", "process"',
                )
                + f') GROUP BY {buckets}, "process" fill(none)',
                _CAPACITY,
            ).alias("$tag_process")
        )
        .axis_label(words("column_available_h"))
        .unit(words.unit("unit_hours"))
        .height(9)
        .span(12)
    )
    board.with_panel(
        timeseries.Panel()
        .title(words("gateways_offline_over_time"))
        .with_target(
            InfluxQL(
                'SELECT sum("gateways_offline") AS "gateways_offline" FROM ('
                + _latest(
                    "gateways_offline",
                    "factory_status",
                    '$timeFilter AND "factory" =~ /^$factory$/',
                    f'{buckets}, "factory"',
                )
                + f") GROUP BY {buckets} fill(none)",
                _CAPACITY,
            ).alias(words("column_gateways_offline"))
        )
        .axis_label(words("column_gateways_offline"))
        .draw_style(common_models.GraphDrawStyle.BARS)
        .height(9)
        .span(6)
    )
    board.with_panel(
        timeseries.Panel()
        .title(words("confidence_by_factory"))
        .description(words("confidence_by_factory_description"))
        .with_target(
            InfluxQL(
                f"""
                SELECT mean("confidence") AS "confidence" FROM "capacity"
                WHERE $timeFilter AND {_SELECTED}
                GROUP BY {buckets}, "factory" fill(none)
                """,
                _CAPACITY,
            ).alias("$tag_factory")
        )
        .axis_label(words("column_confidence"))
        .unit("percentunit")
        .min(0)
        .max(1)
        .height(9)
        .span(6)
    )


def regional_dashboard(lang: Lang = DEFAULT) -> dashboard.Dashboard:
    """The regional board in ``lang`` (see the module docstring)."""
    words = Words(lang)
    board = kyoso_dashboard(words, UID, "regional")
    _variables(board, words)
    _now(board, words)
    _trends(board, words)
    return board
