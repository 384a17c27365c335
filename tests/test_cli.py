"""The ``kyoso`` command line: structured logs and the commissioning probe."""

import asyncio
import json
import sys
from datetime import UTC, datetime

import pytest

from kyoso.simulators.config import load_factory, shipped_factories
from kyoso.simulators.endpoints import Endpoint
from kyoso.simulators.runner import SimClock, Simulation, SimulationOptions


async def _kyoso(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kyoso.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.integration
def test_json_logs_are_one_object_a_line() -> None:
    code, _, err = asyncio.run(
        _kyoso("--log-format", "json", "--log-level", "INFO", "simulate", "--ephemeral-ports",
               "--duration", "0.3s")
    )  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in err.splitlines()]
    assert records
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"] == "kyoso.simulators.modbus" for r in records)


@pytest.mark.integration
def test_gateway_probe_reads_the_commissioning_test_pattern() -> None:
    factory = next(
        f for f in map(load_factory, shipped_factories()) if f.factory == "okada-machining"
    )

    async def main() -> tuple[int, str, str]:
        start = datetime(2026, 1, 7, tzinfo=UTC).timestamp()
        options = SimulationOptions(ephemeral_ports=True)
        async with Simulation([factory], SimClock(start), options) as sim:
            endpoint = sim.endpoints[factory.factory]["cnc-02"]  # word order CDAB
            assert isinstance(endpoint, Endpoint)
            return await _kyoso(
                "gateway", "probe", f"{endpoint.host}:{endpoint.port}", "--unit",
                str(endpoint.unit), "--table", "input", "--address", "114", "--count", "2",
            )  # fmt: skip

    code, out, err = asyncio.run(main())
    assert code == 0, err
    assert "123.456" in out  # the test pattern's float32, found among the interpretations
    assert "CDAB" in out
