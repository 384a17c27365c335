"""The plant manager's dashboard: one factory's machines, from its own data source.

The ``factory`` variable lists the factory data sources Grafana has (every InfluxDB data
source but the capacity one), so the same dashboard serves each factory with that
factory's read user, and a Grafana organisation holding one factory's data source shows
that factory only. Panels:

- **Now**: each machine's current state, the gateways' status, live available capacity
  (from the capacity data source: aggregated figures the factory shares anyway).
- **Time**: state timeline; utilization by machine and by shift.
- **OEE** (ISO 22400-2): availability A = APT / PBT (running over running, setup, down and
  idle: planned-stop and unknown time are outside planned busy time), effectiveness E =
  ideal cycle time x parts produced / APT, quality QR = good / produced, OEE = A x E x QR,
  and utilization efficiency UE = APT / AUBT (running over running, setup and down). E
  needs each machine's ideal cycle time from the ``machines`` measurement, which InfluxQL
  cannot join to ``samples``; the OEE table joins the two queries by machine and computes
  E and OEE with Grafana transformations.
- **Parts and scrap** over time and by machine.
- **Downtime**: Pareto of down time by alarm code (each alarmed sample's down time counted
  under the alarm it ends with) and by machine.

Every word on it comes from the catalog (:class:`~kyoso.dashboards.words.Words`): the
same builder makes the English and the Japanese dashboard.

Shifts: InfluxQL cannot read a shift calendar, so "by shift" is a grid of equal shifts
(``shift_length`` from ``shift_start`` in ``timezone``: 8 h from 06:00 in Asia/Tokyo by
default, the demo factories' early, late and night shifts).
"""

# ruff: noqa: S608 - the queries are Grafana templates built from constants, run by Grafana
from typing import get_args

from grafana_foundation_sdk.builders import (
    barchart,
    bargauge,
    common,
    dashboard,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

from kyoso.contract import GatewayReason
from kyoso.i18n import DEFAULT, Lang
from kyoso.regional.grafana import CAPACITY_DATASOURCE

from .influxql import (
    INFLUXDB,
    LIVE_WINDOW,
    LIVE_WINDOW_MIN,
    InfluxQL,
    datasource,
    kyoso_dashboard,
    transformation,
)
from .words import Words

__all__ = ["UID", "plant_dashboard"]

UID = "kyoso-plant"
"""The English dashboard's uid; the Japanese one's is ``kyoso-plant-ja``."""

_FACTORY = datasource("${factory}")
_CAPACITY = datasource(CAPACITY_DATASOURCE)
_MACHINES = '"machine" =~ /^$machine$/'
_WHERE = f"WHERE $timeFilter AND {_MACHINES}"
_APT = 'sum("running_s")'
_PBT = 'sum("running_s") + sum("setup_s") + sum("down_s") + sum("idle_s")'
_AUBT = 'sum("running_s") + sum("setup_s") + sum("down_s")'
_PRODUCED = 'sum("good_delta") + sum("reject_delta")'
_CAPACITY_FIGURES = [
    "available_h", "committed_h", "unattainable_h", "total_h", "confidence", "offline",
]  # fmt: skip
_GATEWAY_REASONS = get_args(GatewayReason)


def _variables(board: dashboard.Dashboard, words: Words) -> None:
    board.with_variable(
        dashboard.DatasourceVariable("factory")
        .label(words("variable_factory"))
        .type(INFLUXDB)
        .regex(f"/^(?!{CAPACITY_DATASOURCE}$).+$/")
    )
    board.with_variable(
        dashboard.QueryVariable("machine")
        .label(words("variable_machine"))
        .datasource(_FACTORY)
        .query('SHOW TAG VALUES FROM "samples" WITH KEY = "machine"')
        .multi(True)
        .include_all(True)
        .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
    )
    for name, values, default in (
        ("horizon", ["24h", "7d"], "24h"),
        ("shift_length", ["8h", "12h", "24h"], "8h"),
        ("shift_start", [f"{h}h" for h in range(24)], "6h"),
        ("timezone", ["Asia/Tokyo", "UTC"], "Asia/Tokyo"),
    ):
        board.with_variable(
            dashboard.CustomVariable(name)
            .label(words(f"variable_{name}"))
            .values(",".join(values))
            .current(models.VariableOption(selected=True, text=default, value=default))
        )


def _now(board: dashboard.Dashboard, words: Words) -> None:
    board.with_row(dashboard.Row(words("row_now")))
    board.with_panel(
        words.columns(table.Panel(), ["machine", "state"])
        .title(words("machine_state"))
        .description(words("machine_state_description"))
        .with_target(
            InfluxQL(
                f'SELECT last("state") AS "state" FROM "samples" {_WHERE} GROUP BY "machine"',
                _FACTORY,
            ).table()
        )
        .mappings(words.states())
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .height(8)
        .span(6)
    )
    board.with_panel(
        words.columns(table.Panel(), ["gateway", "status", "reason", "software"])
        .title(words("gateways"))
        .description(words("gateways_description"))
        .with_target(
            InfluxQL(
                'SELECT last("status") AS "status", last("reason") AS "reason", '
                'last("software") AS "software" FROM "gateway_status" GROUP BY "gateway"',
                _FACTORY,
            ).table()
        )
        .mappings(
            [
                models.ValueMap(
                    options={
                        "online": models.ValueMappingResult(
                            text=words("gateway_online"), color="green", index=0
                        ),
                        "offline": models.ValueMappingResult(
                            text=words("gateway_offline"), color="red", index=1
                        ),
                        **{
                            reason: models.ValueMappingResult(
                                text=words(f"gateway_{reason}"), index=i
                            )
                            for i, reason in enumerate(_GATEWAY_REASONS, 2)
                        },
                    }
                )
            ]
        )
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .height(8)
        .span(6)
    )
    board.with_panel(
        words.columns(
            table.Panel(),
            [*_CAPACITY_FIGURES, "machine", "process"],
            {"confidence": [models.DynamicConfigValue("unit", "percentunit")]},
        )
        .title(words("live_capacity"))
        .description(words("live_capacity_description", minutes=LIVE_WINDOW_MIN))
        .with_target(
            InfluxQL(
                f"""
                SELECT last("available_h") AS "available_h", last("committed_h") AS "committed_h",
                  last("unattainable_h") AS "unattainable_h", last("total_h") AS "total_h",
                  last("confidence") AS "confidence", last("offline") AS "offline"
                FROM "capacity"
                WHERE "factory" = '$factory' AND "horizon" = '$horizon' AND {_MACHINES}
                  AND time > now() - {LIVE_WINDOW}
                GROUP BY "machine", "process"
                """,
                _CAPACITY,
            ).table()
        )
        .mappings([words.yes_no()])
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .unit(words.unit("unit_hours"))
        .decimals(1)
        .height(8)
        .span(12)
    )


def _time(board: dashboard.Dashboard, words: Words) -> None:
    board.with_row(dashboard.Row(words("row_time")))
    board.with_panel(
        statetimeline.Panel()
        .title(words("state_timeline"))
        .with_target(
            InfluxQL(
                f"""
                SELECT last("state") AS "state" FROM "samples" {_WHERE}
                GROUP BY time($__interval), "machine" fill(none)
                """,
                _FACTORY,
            ).alias("$tag_machine")
        )
        .mappings(words.states())
        .show_value(common_models.VisibilityMode.NEVER)
        .merge_values(True)
        .height(10)
        .span(24)
    )
    board.with_panel(
        bargauge.Panel()
        .title(words("utilization_by_machine"))
        .description(words("utilization_by_machine_description"))
        .with_target(
            InfluxQL(
                f'SELECT {_APT} / ({_AUBT}) AS "utilization" FROM "samples" {_WHERE} '
                'GROUP BY "machine"',
                _FACTORY,
            ).alias("$tag_machine")
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .height(9)
        .span(8)
    )
    board.with_panel(
        timeseries.Panel()
        .title(words("utilization_by_shift"))
        .description(words("utilization_by_shift_description"))
        .with_target(
            InfluxQL(
                f"""
                SELECT {_APT} / ({_AUBT}) AS "utilization" FROM "samples" {_WHERE}
                GROUP BY time($shift_length, $shift_start), "machine" fill(none)
                tz('$timezone')
                """,
                _FACTORY,
            ).alias("$tag_machine")
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .axis_label(words("column_utilization"))
        .draw_style(common_models.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .height(9)
        .span(16)
    )


def _oee(board: dashboard.Dashboard, words: Words) -> None:
    board.with_row(dashboard.Row(words("row_oee")))
    for name, expression in (
        ("availability", f"{_APT} / ({_PBT})"),
        ("utilization", f"{_APT} / ({_AUBT})"),
        ("quality", f'sum("good_delta") / ({_PRODUCED})'),
    ):
        board.with_panel(
            stat.Panel()
            .title(words(f"column_{name}"))
            .description(words(f"{name}_description"))
            .with_target(
                InfluxQL(f'SELECT {expression} AS "{name}" FROM "samples" {_WHERE}', _FACTORY)
            )
            .unit("percentunit")
            .decimals(1)
            .graph_mode(common_models.BigValueGraphMode.NONE)
            .height(6)
            .span(4)
        )
    board.with_panel(
        words.columns(table.Panel(), ["machine", "availability", "effectiveness", "quality", "oee"])
        .title(words("oee_by_machine"))
        .description(words("oee_by_machine_description"))
        .with_target(
            InfluxQL(
                f"""
                SELECT {_APT} / ({_PBT}) AS "availability",
                  sum("good_delta") / ({_PRODUCED}) AS "quality",
                  {_APT} AS "running_s", {_PRODUCED} AS "produced"
                FROM "samples" {_WHERE} GROUP BY "machine"
                """,
                _FACTORY,
            ).table()
        )
        .with_target(
            InfluxQL(
                'SELECT last("ideal_cycle_time_s") AS "ideal_cycle_time_s" FROM "machines" '
                f'WHERE {_MACHINES} GROUP BY "machine"',
                _FACTORY,
                ref_id="B",
            ).table()
        )
        .transformations(
            [
                transformation("joinByField", {"byField": "machine", "mode": "outer"}),
                _product("ideal_cycle_time_s", "*", "produced", "ideal_s"),
                _product("ideal_s", "/", "running_s", "effectiveness"),
                _product("availability", "*", "effectiveness", "availability_effectiveness"),
                _product("availability_effectiveness", "*", "quality", "oee"),
                transformation(
                    "organize",
                    {
                        "excludeByName": dict.fromkeys(
                            [
                                "Time",
                                "Time 1",
                                "Time 2",
                                "running_s",
                                "produced",
                                "ideal_cycle_time_s",
                                "ideal_s",
                                "availability_effectiveness",
                            ],
                            True,
                        ),
                        "indexByName": {
                            "machine": 0,
                            "availability": 1,
                            "effectiveness": 2,
                            "quality": 3,
                            "oee": 4,
                        },
                    },
                ),
            ]
        )
        .unit("percentunit")
        .decimals(1)
        .height(6)
        .span(12)
    )


def _product(left: str, operator: str, right: str, alias: str) -> models.DataTransformerConfig:
    """A ``calculateField`` transformation: ``alias = left <operator> right``, row by row."""
    return transformation(
        "calculateField",
        {
            "mode": "binary",
            "binary": {"left": left, "operator": operator, "right": right},
            "alias": alias,
        },
    )


def _parts(board: dashboard.Dashboard, words: Words) -> None:
    board.with_row(dashboard.Row(words("row_parts")))
    board.with_panel(
        words.columns(
            timeseries.Panel(),
            ["good", "scrap"],
            {"scrap": [models.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"})]},
        )
        .title(words("parts_and_scrap"))
        .with_target(
            InfluxQL(
                f"""
                SELECT sum("good_delta") AS "good", sum("reject_delta") AS "scrap"
                FROM "samples" {_WHERE} GROUP BY time($__interval) fill(0)
                """,
                _FACTORY,
            ).alias("$col")
        )
        .axis_label(words("parts"))
        .draw_style(common_models.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
        .height(8)
        .span(14)
    )
    board.with_panel(
        words.columns(
            table.Panel(),
            ["machine", "good", "scrap", "scrap_rate"],
            {"scrap_rate": [models.DynamicConfigValue("unit", "percentunit")]},
        )
        .title(words("parts_by_machine"))
        .with_target(
            InfluxQL(
                f"""
                SELECT sum("good_delta") AS "good", sum("reject_delta") AS "scrap",
                  sum("reject_delta") / ({_PRODUCED}) AS "scrap_rate"
                FROM "samples" {_WHERE} GROUP BY "machine"
                """,
                _FACTORY,
            ).table()
        )
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .height(8)
        .span(10)
    )


def _downtime(board: dashboard.Dashboard, words: Words) -> None:
    board.with_row(dashboard.Row(words("row_downtime")))
    board.with_panel(
        words.columns(barchart.Panel(), ["alarm", "down_h (sum)"])
        .title(words("down_by_alarm"))
        .description(words("down_by_alarm_description"))
        .with_target(
            InfluxQL(
                f"""
                SELECT "alarm" AS "alarm", "down_s" / 3600 AS "down_h" FROM "samples"
                {_WHERE} AND "alarm" > 0
                """,
                _FACTORY,
            ).table()
        )
        .transformations(
            [
                transformation(
                    "groupBy",
                    {
                        "fields": {
                            "alarm": {"operation": "groupby", "aggregations": []},
                            "down_h": {"operation": "aggregate", "aggregations": ["sum"]},
                        }
                    },
                ),
                transformation("sortBy", {"sort": [{"field": "down_h (sum)", "desc": True}]}),
                transformation(
                    "convertFieldType",
                    {"conversions": [{"targetField": "alarm", "destinationType": "string"}]},
                ),
            ]
        )
        .x_field("alarm")
        .axis_label(words("column_down_h"))
        .unit(words.unit("unit_hours"))
        .height(9)
        .span(12)
    )
    board.with_panel(
        words.columns(barchart.Panel(), ["machine", "down_h"])
        .title(words("down_by_machine"))
        .with_target(
            InfluxQL(
                f'SELECT sum("down_s") / 3600 AS "down_h" FROM "samples" {_WHERE} '
                'GROUP BY "machine"',
                _FACTORY,
            ).table()
        )
        .transformations(
            [
                transformation("organize", {"excludeByName": {"Time": True}}),
                transformation("sortBy", {"sort": [{"field": "down_h", "desc": True}]}),
            ]
        )
        .x_field("machine")
        .axis_label(words("column_down_h"))
        .unit(words.unit("unit_hours"))
        .height(9)
        .span(12)
    )


def plant_dashboard(lang: Lang = DEFAULT) -> dashboard.Dashboard:
    """The plant manager's dashboard in ``lang`` (see the module docstring)."""
    words = Words(lang)
    board = kyoso_dashboard(words, UID, "plant")
    _variables(board, words)
    _now(board, words)
    _time(board, words)
    _oee(board, words)
    _parts(board, words)
    _downtime(board, words)
    return board
