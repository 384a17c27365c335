"""The benchmark suite keeps working: ``python -m bench --quick`` writes every section of
BENCHMARKS.md with numbers in it.

Not a timed test: a quick run's figures on a shared machine say nothing, and no target is
checked, only that each figure and its baseline were measured. The suite starts influxd,
Mosquitto and Node-RED (``node``, and ``npm`` when bench/.cache holds no install yet)
from its benchmarks' processes, not this one: they record what they start
(:func:`executables.record_children`), and each program must be in the PROGRAMS table of
.ci/run like any a test starts itself. Node.js missing is a failure, not a skip: CI
installs it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from executables import record_children, started_in, unlisted_in

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = (
    "Machine",
    "Versions",
    "Ingest throughput",
    "End to end",
    "Capacity API under load",
    "Gateway footprint",
    "InfluxDB writer",
    "Targets",
    "What holds figures back",
    "Notes",
)
MEASURED = SECTIONS[2:7]
"""The sections of figures: a table whose every row has a median and a baseline."""
NUMBER = re.compile(r"\d")


def _sections(text: str) -> dict[str, str]:
    """Second-level heading -> the text under it."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _rows(section: str) -> list[list[str]]:
    """The cells of a section's table rows, header and rule left out."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_the_quick_suite_writes_every_section_with_numbers(tmp_path: Path) -> None:
    programs = tmp_path / "programs"
    output = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, **record_children(programs)},
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]

    sections = _sections(output.read_text())
    for title in SECTIONS:
        assert any(heading.startswith(title) for heading in sections), (title, list(sections))
    for heading, body in sections.items():
        if heading.startswith(MEASURED):
            rows = _rows(body)
            assert rows, heading
            for row in rows:
                assert NUMBER.search(row[1]), (heading, row)  # the median
                assert NUMBER.search(row[4]), (heading, row)  # the baseline's
    versions = dict(row[:2] for row in _rows(sections["Versions"]))
    for name in ("Python", "influxd", "mosquitto", "Node.js", "Node-RED"):
        assert NUMBER.search(versions[name]), (name, versions)
    machine = dict(row[:2] for row in _rows(sections["Machine"]))
    assert NUMBER.search(machine["cores"])
    assert _rows(sections["Targets"]), "no target judged"

    started = {program.name for program in started_in(programs)}
    assert {"influxd", "mosquitto", "node"} <= started, started
    assert unlisted_in(programs) == [], (
        "the benchmarks started programs the PROGRAMS table of .ci/run does not list"
    )
