"""Small simulated factories for tests: quick machines on a daily 06:00-22:00 shift."""

from typing import Any

from kyoso.simulators.config import FactoryConfig

BEHAVIOUR = {
    "cycle_time_s": 30,
    "job_parts": [5, 20],
    "setup_s": [300, 900],
    "idle_gap_s": 600,
    "mtbf_h": 1,
    "mttr_min": 10,
    "micro_stops_per_h": 2,
    "scrap_rate": 0.05,
    "alarm_codes": [1021, 2210],
}


def machine(machine_id: str, server: str, unit: int, order: str, **source: Any) -> dict[str, Any]:
    """A Modbus machine with the quick behaviour above."""
    return {
        "id": machine_id,
        "name": machine_id,
        "calendar": "days",
        "capabilities": [{"process": "cnc_turning"}],
        "ideal_cycle_time_s": 28,
        "behaviour": BEHAVIOUR,
        "source": {"kind": "modbus", "server": server, "unit": unit, "word_order": order, **source},
    }


def mtconnect_machine(machine_id: str, buffer_size: int = 1024) -> dict[str, Any]:
    """A machine tool with an MTConnect agent of its own (a free port), the same behaviour."""
    return {
        "id": machine_id,
        "name": machine_id,
        "calendar": "days",
        "capabilities": [{"process": "cnc_milling_5axis"}],
        "ideal_cycle_time_s": 28,
        "behaviour": BEHAVIOUR,
        "source": {"kind": "mtconnect", "port": 0, "buffer_size": buffer_size},
    }


def opcua_machine(machine_id: str) -> dict[str, Any]:
    """A machine tool whose control serves OPC UA (a free port), the same behaviour."""
    return {
        "id": machine_id,
        "name": machine_id,
        "calendar": "days",
        "capabilities": [{"process": "cnc_milling_3axis"}],
        "ideal_cycle_time_s": 28,
        "behaviour": BEHAVIOUR,
        "source": {"kind": "opcua", "port": 0},
    }


def slmp_machine(machine_id: str, **source: Any) -> dict[str, Any]:
    """A press with a MELSEC PLC answering SLMP (a free port), the same behaviour."""
    return {
        "id": machine_id,
        "name": machine_id,
        "calendar": "days",
        "capabilities": [{"process": "punching"}],
        "ideal_cycle_time_s": 28,
        "behaviour": BEHAVIOUR,
        "source": {"kind": "slmp", "port": 0, **source},
    }


def small_factory(
    factory: str,
    seed: int,
    servers: list[str],
    machines: list[dict[str, Any]],
    breaks: list[dict[str, str]] | None = None,
) -> FactoryConfig:
    """A factory of ``machines`` on Modbus servers with free ports, working every day."""
    shift = {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": "06:00",
        "end": "22:00",
        "breaks": breaks or [],
    }
    return FactoryConfig.model_validate(
        {
            "factory": factory,
            "name": factory.replace("-", " ").title(),
            "seed": seed,
            "calendars": {"days": {"timezone": "UTC", "shifts": [shift]}},
            "modbus_servers": {name: {"port": 0} for name in servers},
            "machines": machines,
        }
    )
