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

Shifts: InfluxQL cannot read a shift calendar, so "by shift" is a grid of equal shifts
(``shift_length`` from ``shift_start`` in ``timezone``: 8 h from 06:00 in Asia/Tokyo by
default, the demo factories' early, late and night shifts).
"""

# ruff: noqa: S608 - the queries are Grafana templates built from constants, run by Grafana
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

from kyoso.regional.grafana import CAPACITY_DATASOURCE

from .influxql import (
    INFLUXDB,
    LIVE_WINDOW,
    InfluxQL,
    datasource,
    kyoso_dashboard,
    transformation,
)

__all__ = ["STATE_COLORS", "plant_dashboard"]

UID = "kyoso-plant"

STATE_COLORS = {
    "running": "green",
    "setup": "blue",
    "down": "red",
    "idle": "yellow",
    "planned_stop": "#8e8e8e",
    "unknown": "#404040",
}
"""The contract's machine states and their colours."""

_FACTORY = datasource("${factory}")
_CAPACITY = datasource(CAPACITY_DATASOURCE)
_MACHINES = '"machine" =~ /^$machine$/'
_WHERE = f"WHERE $timeFilter AND {_MACHINES}"
_APT = 'sum("running_s")'
_PBT = 'sum("running_s") + sum("setup_s") + sum("down_s") + sum("idle_s")'
_AUBT = 'sum("running_s") + sum("setup_s") + sum("down_s")'
_PRODUCED = 'sum("good_delta") + sum("reject_delta")'


def _state_mappings() -> list[models.ValueMapping]:
    options = {
        state: models.ValueMappingResult(text=state.replace("_", " "), color=color, index=i)
        for i, (state, color) in enumerate(STATE_COLORS.items())
    }
    return [models.ValueMap(options=options)]


def _variables(board: dashboard.Dashboard) -> None:
    board.with_variable(
        dashboard.DatasourceVariable("factory")
        .label("Factory")
        .type(INFLUXDB)
        .regex(f"/^(?!{CAPACITY_DATASOURCE}$).+$/")
    )
    board.with_variable(
        dashboard.QueryVariable("machine")
        .label("Machine")
        .datasource(_FACTORY)
        .query('SHOW TAG VALUES FROM "samples" WITH KEY = "machine"')
        .multi(True)
        .include_all(True)
        .current(models.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
    )
    for name, label, values, default in (
        ("horizon", "Capacity horizon", ["24h", "7d"], "24h"),
        ("shift_length", "Shift length", ["8h", "12h", "24h"], "8h"),
        ("shift_start", "First shift starts", [f"{h}h" for h in range(24)], "6h"),
        ("timezone", "Shift time zone", ["Asia/Tokyo", "UTC"], "Asia/Tokyo"),
    ):
        board.with_variable(
            dashboard.CustomVariable(name)
            .label(label)
            .values(",".join(values))
            .current(models.VariableOption(selected=True, text=default, value=default))
        )


def _now(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Now"))
    board.with_panel(
        table.Panel()
        .title("Machine state")
        .description("Each machine's state at its latest sample in the time range.")
        .with_target(
            InfluxQL(
                f'SELECT last("state") AS "state" FROM "samples" {_WHERE} GROUP BY "machine"',
                _FACTORY,
            ).table()
        )
        .mappings(_state_mappings())
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .height(8)
        .span(6)
    )
    board.with_panel(
        table.Panel()
        .title("Gateways")
        .description("The status each gateway last reported (offline: its last will).")
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
                        "online": models.ValueMappingResult(color="green", index=0),
                        "offline": models.ValueMappingResult(color="red", index=1),
                    }
                )
            ]
        )
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .height(8)
        .span(6)
    )
    board.with_panel(
        table.Panel()
        .title("Live available capacity ($horizon)")
        .description(
            "The capacity service's latest snapshot (none older than "
            f"{LIVE_WINDOW}): hours free per machine and capability over the horizon."
        )
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
        .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
        .unit("h")
        .decimals(1)
        .override_by_name("confidence", [models.DynamicConfigValue("unit", "percentunit")])
        .height(8)
        .span(12)
    )


def _time(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Time"))
    board.with_panel(
        statetimeline.Panel()
        .title("State timeline")
        .with_target(
            InfluxQL(
                f"""
                SELECT last("state") AS "state" FROM "samples" {_WHERE}
                GROUP BY time($__interval), "machine" fill(none)
                """,
                _FACTORY,
            ).alias("$tag_machine")
        )
        .mappings(_state_mappings())
        .show_value(common_models.VisibilityMode.NEVER)
        .merge_values(True)
        .height(10)
        .span(24)
    )
    board.with_panel(
        bargauge.Panel()
        .title("Utilization by machine")
        .description("Utilization efficiency UE = running / (running + setup + down).")
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
        .title("Utilization by shift")
        .description("UE per shift of the grid set by shift_length, shift_start and timezone.")
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
        .draw_style(common_models.GraphDrawStyle.BARS)
        .fill_opacity(60)
        .height(9)
        .span(16)
    )


def _oee(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("OEE"))
    for title, expression, description in (
        ("Availability", f"{_APT} / ({_PBT})", "A = APT / PBT over the selected machines."),
        ("Utilization", f"{_APT} / ({_AUBT})", "UE = APT / AUBT over the selected machines."),
        (
            "Quality",
            f'sum("good_delta") / ({_PRODUCED})',
            "QR = good parts / parts produced over the selected machines.",
        ),
    ):
        board.with_panel(
            stat.Panel()
            .title(title)
            .description(description)
            .with_target(
                InfluxQL(
                    f'SELECT {expression} AS "{title.lower()}" FROM "samples" {_WHERE}', _FACTORY
                )
            )
            .unit("percentunit")
            .decimals(1)
            .graph_mode(common_models.BigValueGraphMode.NONE)
            .height(6)
            .span(4)
        )
    board.with_panel(
        table.Panel()
        .title("OEE by machine")
        .description(
            "Availability, effectiveness (ideal cycle time x produced / running time), "
            "quality and OEE = A x E x QR per machine."
        )
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
                        "renameByName": {"oee": "OEE"},
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


def _parts(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Parts and scrap"))
    board.with_panel(
        timeseries.Panel()
        .title("Parts and scrap")
        .with_target(
            InfluxQL(
                f"""
                SELECT sum("good_delta") AS "good", sum("reject_delta") AS "scrap"
                FROM "samples" {_WHERE} GROUP BY time($__interval) fill(0)
                """,
                _FACTORY,
            )
        )
        .draw_style(common_models.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
        .override_by_name(
            "scrap", [models.DynamicConfigValue("color", {"mode": "fixed", "fixedColor": "red"})]
        )
        .height(8)
        .span(14)
    )
    board.with_panel(
        table.Panel()
        .title("Parts by machine")
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
        .override_by_name("scrap_rate", [models.DynamicConfigValue("unit", "percentunit")])
        .height(8)
        .span(10)
    )


def _downtime(board: dashboard.Dashboard) -> None:
    board.with_row(dashboard.Row("Downtime"))
    board.with_panel(
        barchart.Panel()
        .title("Down time by alarm code")
        .description("Pareto: hours down, by the alarm code each alarmed sample ends with.")
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
        .unit("h")
        .height(9)
        .span(12)
    )
    board.with_panel(
        barchart.Panel()
        .title("Down time by machine")
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
        .unit("h")
        .height(9)
        .span(12)
    )


def plant_dashboard() -> dashboard.Dashboard:
    """The plant manager's dashboard (see the module docstring)."""
    board = kyoso_dashboard(
        "Kyoso plant",
        UID,
        "One factory's machines: state, utilization, OEE, parts, downtime, capacity.",
    )
    _variables(board)
    _now(board)
    _time(board)
    _oee(board)
    _parts(board)
    _downtime(board)
    return board
