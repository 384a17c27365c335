"""Gateway configurations for simulated factories: how a technician would commission them.

Each Modbus machine is read through the documented register map (one request for the
live block), each MTConnect machine through its agent's state and faults presets and its
part counts, each OPC UA machine through the umati state preset and its vendor nodes
(subscribed), each SLMP machine through the same live block on D devices, each clamp
through its vendor JSON with current thresholds half-way between the clamp's state levels.
The demo and the tests use these; they double as worked examples of a gateway
configuration.
"""

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .config import (
    ClampSourceConfig,
    FactoryConfig,
    MTConnectSourceConfig,
    OpcuaSourceConfig,
    RegisterMapConfig,
)
from .endpoints import AgentEndpoint, Endpoint, ServerEndpoint, SlmpEndpoint

_LIVE_FIELDS = [
    {"name": "state_code", "address": 0, "dtype": "uint16"},
    {"name": "alarm_code", "address": 1, "dtype": "uint16"},
    {"name": "good_count", "address": 2, "dtype": "uint32"},
    {"name": "reject_count", "address": 4, "dtype": "uint32"},
    {"name": "load_pct", "address": 6, "dtype": "float32"},
    {"name": "power_kw", "address": 8, "dtype": "float32"},
]
_COUNTERS = {"good": {"field": "good_count"}, "reject": {"field": "reject_count"}}
_THRESHOLD_STATES = ("running", "setup", "idle")
_MTCONNECT_FIELDS = {
    "state_code": {"preset": "state"},
    "alarm_code": {"preset": "fault_code"},
    "good_count": {"data_item": "part_good"},
    "reject_count": {"data_item": "part_bad"},
    "spindle_rpm": {"data_item": "spindle"},
}
_MTCONNECT_STATES = {
    # The codes of the gateway's state preset (kyoso/gateway/mtconnect_xml.py): an
    # interruption is a stop; the active Fault's nativeCode is the alarm's code, as a
    # Modbus machine's alarm register gives it.
    "from_code": {"field": "state_code", "map": {1: "running", 2: "idle", 3: "setup", 4: "down"}},
    "alarm": {"field": "alarm_code"},
}


def gateway_config(
    factory: FactoryConfig,
    endpoints: Mapping[str, Endpoint | AgentEndpoint | ServerEndpoint | SlmpEndpoint],
    *,
    gateway: str,
    broker: dict[str, Any],
    outbox_path: Path,
    sensor_broker: dict[str, Any] | None = None,
    poll_interval_s: float = 1.0,
    publish_interval_s: float = 10.0,
) -> dict[str, Any]:
    """A gateway configuration (as loaded from YAML) reading every machine of ``factory``."""
    machines = []
    for machine in factory.machines:
        entry: dict[str, Any] = {
            "id": machine.id,
            "name": machine.name,
            "calendar": machine.calendar,
            "capabilities": [
                c.model_dump(mode="json", exclude_none=True) for c in machine.capabilities
            ],
            "ideal_cycle_time_s": machine.ideal_cycle_time_s,
            "counters": _COUNTERS,
        }
        source = machine.source
        if isinstance(source, MTConnectSourceConfig):
            agent = endpoints[machine.id]
            assert isinstance(agent, AgentEndpoint), machine.id
            entry["source"] = {
                "mtconnect": {
                    "agent": agent.url,
                    "device": agent.device,
                    "fields": _MTCONNECT_FIELDS,
                }
            }
            entry["state"] = _MTCONNECT_STATES
            entry["signals"] = ["spindle_rpm"]
        elif isinstance(source, OpcuaSourceConfig):
            server = endpoints[machine.id]
            assert isinstance(server, ServerEndpoint), machine.id
            entry["source"] = {"opcua": _opcua_source(server)}
            entry["state"] = _MTCONNECT_STATES  # the umati preset yields the same codes
            entry["signals"] = ["spindle_rpm"]
        elif isinstance(source, RegisterMapConfig):
            endpoint = endpoints[machine.id]
            if isinstance(endpoint, SlmpEndpoint):
                entry["source"] = {"slmp": _slmp_source(endpoint, source)}
            else:
                assert isinstance(endpoint, Endpoint), machine.id
                entry["source"] = {
                    "modbus": {
                        "host": endpoint.host,
                        "port": endpoint.port,
                        "unit": endpoint.unit,
                        "word_order": source.word_order,
                        "fields": _LIVE_FIELDS,
                    }
                }
            entry["state"] = {
                "from_code": {
                    "field": "state_code",
                    "map": {code: state for state, code in source.state_codes.items()},
                },
                "alarm": {"field": "alarm_code"},
            }
            entry["signals"] = ["load_pct", "power_kw"]
        else:
            entry["source"] = {"mqtt": _clamp_source(source)}
            entry["state"] = {"from_threshold": _thresholds(source)}
            entry["signals"] = ["current_a"]
        machines.append(entry)
    config: dict[str, Any] = {
        "factory": factory.factory,
        "gateway": gateway,
        "broker": broker,
        "outbox": {"path": str(outbox_path)},
        "poll_interval_s": poll_interval_s,
        "publish_interval_s": publish_interval_s,
        "calendars": {
            name: calendar.model_dump(mode="json") for name, calendar in factory.calendars.items()
        },
        "machines": machines,
    }
    if sensor_broker is not None:
        config["sensor_broker"] = sensor_broker
    return config


def _opcua_source(server: ServerEndpoint) -> dict[str, Any]:
    """The umati state preset on the machine object, the alarm from its alarm events; the
    counts and the spindle by node id."""
    return {
        "endpoint": server.url,
        "fields": {
            "state_code": {"node": server.machine_path, "preset": "state", "channel": "Channel1"},
            "alarm_code": {"node": server.messages_path, "preset": "fault_code"},
            "good_count": {"node": server.node("PartsGood")},
            "reject_count": {"node": server.node("PartsBad")},
            "spindle_rpm": {"node": server.node("SpindleSpeed")},
        },
    }


def _slmp_source(plc: SlmpEndpoint, source: RegisterMapConfig) -> dict[str, Any]:
    """The live block on D0-D9 (kyoso/simulators/slmp.py), the same fields as over Modbus."""
    return {
        "host": plc.host,
        "port": plc.port,
        "transport": plc.transport,
        "frame": plc.frame,
        "word_order": source.word_order,
        "fields": {
            f["name"]: {"device": f"D{f['address']}", "type": f["dtype"]} for f in _LIVE_FIELDS
        },
    }


def _clamp_source(source: ClampSourceConfig) -> dict[str, Any]:
    return {
        "topic": f"sensors/{source.sensor}/tele/SENSOR",
        "values": {
            "current_a": "ENERGY.Current",
            "good_count": "COUNTER.C1",
            "reject_count": "COUNTER.C2",
        },
        "timeout_s": 3 * source.period_s,
    }


def _thresholds(source: ClampSourceConfig) -> dict[str, Any]:
    """Levels half-way between the clamp's mean currents, highest first."""
    amps = source.amps
    ordered = sorted((*_THRESHOLD_STATES, "down"), key=lambda s: amps[s], reverse=True)
    levels = [
        {"state": state, "above": round((amps[state] + amps[below]) / 2, 3)}
        for state, below in itertools.pairwise(ordered)
    ]
    return {"field": "current_a", "levels": levels, "otherwise": ordered[-1], "hysteresis": 0.1}
