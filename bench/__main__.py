"""The benchmark suite: every figure beside its baseline from the same run, in BENCHMARKS.md.

Run from the repository root::

    .venv/bin/python -m bench                    # 3 rounds at full size: BENCHMARKS.md
    .venv/bin/python -m bench --rounds 5 --output /tmp/BENCHMARKS.md --json /tmp/rounds.json
    .venv/bin/python -m bench --only ingest api  # some sections only
    .venv/bin/python -m bench --quick            # 1 round, tiny sizes: what CI runs

Each round runs the benchmarks of ``bench/`` as each runs alone (``python bench/<name>.py
... --json FILE``: a fresh interpreter each, its printed output shown as it comes): the
ingest beside raw InfluxDB (1 and 2 connections), the raw broker and Node-RED; end to end
from a register change to the API; the API under load, quiet and with a core busy; the
gateway's footprint at 50, 200 and 400 machines beside a bare poller; the InfluxDB writer
beside raw writes. The rounds interleave the benchmarks, so that a slow spell of the
machine spreads over all of them rather than sinking one. Node-RED is installed from npm
into ``bench/.cache/`` before the first round (``bench/nodered.py``; reused when there).

BENCHMARKS.md then holds the machine (and its load when the suite started), the versions,
and per figure its median and spread over the rounds beside its baseline's, the ratio, and
the issue's target where there is one, met or missed (the figures each benchmark gives:
``bench/sections.py``; the tables: ``bench/report.py``); the counts
behind the figures (samples received, written, stored, missing); a line under "What holds
figures back" per missed target, and ``bench/NOTES.md``, written by hand, inlined after it.
The suite exits 1 when a benchmark failed or reported a loss (the file is written all the
same), not when a target is missed: it is no timed test. ``tests/test_bench_suite.py`` runs
``--quick`` once so that it keeps working.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(BENCH) not in sys.path:  # the benchmarks import each other as top-level modules
    sys.path.insert(0, str(BENCH))

import nodered  # noqa: E402
import report  # noqa: E402
from report import Row  # noqa: E402
from sections import BENCHES, FULL, QUICK, Bench, Sizes  # noqa: E402

Json = dict[str, Any]


# --- the machine --------------------------------------------------------------------------------


def _first_line(command: list[str]) -> str:
    try:
        made = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except OSError as exc:
        return f"unknown ({exc})"
    lines = (made.stdout + made.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def machine() -> list[tuple[str, str]]:
    """CPU, cores, memory and the load average now."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        "unknown",  # (not platform.processor(): it runs uname)
    )
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        ("CPU", model),
        ("cores", str(os.cpu_count())),
        ("memory", f"{kib / 1024**2:.1f} GiB"),
        ("load average at start (1, 5, 15 min)", load),
        ("system", f"{platform.system()} {platform.release()}, {platform.machine()}"),
    ]


def versions(installed: nodered.Installed | None) -> list[tuple[str, str]]:
    """Python, Kyoso's git revision, the libraries, servers and Node-RED the figures ran on."""
    found = [
        ("Python", platform.python_version()),
        ("kyoso (git)", _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])),
    ]
    for package in ("paho-mqtt", "pydantic", "fastapi", "uvicorn", "pymodbus"):
        found.append((package, importlib.metadata.version(package)))
    mosquitto = "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "mosquitto"
    found += [
        ("influxd", _first_line([shutil.which("influxd") or "/usr/bin/influxd", "version"])),
        ("mosquitto", _first_line([mosquitto, "-h"])),
    ]
    if installed is not None:
        node = installed.versions()
        install = (
            f"{installed.install_s:.1f} s (npm ci, this run)"
            if installed.install_s is not None
            else f"reused from {installed.folder.relative_to(ROOT)}"
        )
        found += [
            ("Node.js", node["node"]),
            ("Node-RED", node["node-red"]),
            ("node-red-contrib-influxdb", node["node-red-contrib-influxdb"]),
            ("Node-RED install", install),
        ]
    return found


# --- running -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A benchmark's rounds: the figures of those that gave some, and what went wrong."""

    bench: Bench
    rounds: list[Json]
    problems: list[str]


def run_round(bench: Bench, sizes: Sizes, number: int, total: int, work: Path) -> Json | None:
    """One run of a benchmark script; its figures, or None if it wrote none."""
    out = work / f"{bench.key}-{number}.json"
    command = [sys.executable, str(BENCH / bench.script), *bench.arguments(sizes)]
    shown = " ".join(["python", f"bench/{bench.script}", *command[2:]])
    print(f"\n=== round {number}/{total}: {bench.title}: {shown}", flush=True)
    started = time.monotonic()
    code = subprocess.run([*command, "--json", str(out)], cwd=ROOT, check=False).returncode
    print(f"=== {bench.key}: exit {code} in {time.monotonic() - started:.0f} s", flush=True)
    if not out.is_file():
        return None
    figures: Json = json.loads(out.read_text())
    figures["exit_code"] = code
    return figures


def render(
    outcomes: list[Outcome],
    sizes: Sizes,
    header: list[tuple[str, str]],
    about_machine: list[tuple[str, str]],
    about_versions: list[tuple[str, str]],
) -> str:
    """BENCHMARKS.md."""
    parts = ["# Benchmarks", ""]
    parts += [
        "Written by `python -m bench` (bench/__main__.py); do not edit by hand except "
        "bench/NOTES.md, inlined at the end. Each figure is the median over the rounds, with "
        "the spread (min-max), beside its baseline measured in the same run of the same "
        "benchmark (same influxd, broker, server or simulated machines), and the ratio (the "
        "median of the rounds' ratios). Targets are the issue's, judged on the median.",
        "",
        report.table([list(row) for row in header], ["Run", ""]),
        "",
        "## Machine",
        "",
        report.table([list(row) for row in about_machine], ["", ""]),
        "",
        "## Versions",
        "",
        report.table([list(row) for row in about_versions], ["", ""]),
    ]
    all_rows: list[tuple[Bench, Row]] = []
    for outcome in outcomes:
        bench = outcome.bench
        rows = [Row.of(figure, outcome.rounds) for figure in bench.figures(sizes)]
        all_rows += [(bench, row) for row in rows]
        parts += ["", f"## {bench.title} (bench/{bench.script})", ""]
        if outcome.rounds:
            parts += [bench.summary(outcome.rounds[0]), ""]
        parts.append(report.table([row.cells() for row in rows]))
        counts = [line for i, r in enumerate(outcome.rounds, 1) for line in bench.counts(i, r)]
        counts += outcome.problems
        if counts:
            parts += ["", *(f"- {line}" for line in counts)]
    targets = [(bench, row) for bench, row in all_rows if row.figure.target is not None]
    parts += ["", "## Targets", ""]
    parts.append(
        report.table(
            [
                [
                    bench.title,
                    f"{row.figure.name} (vs {row.figure.baseline_name})",
                    row.figure.target.text if row.figure.target else "",
                    row.shown + (f", {row.ratio_shown}" if row.ratio is not None else ""),
                    report.emphasized(row.verdict),
                ]
                for bench, row in targets
            ],
            ["Section", "Figure", "Target", "Median, ratio", ""],
        )
    )
    parts += ["", "## What holds figures back", ""]
    held = []
    for bench, row in targets:
        target = row.figure.target.text if row.figure.target else ""
        if row.verdict == "missed":
            ratio = f" ({row.ratio_shown} {row.figure.baseline_name})" if row.ratio else ""
            held.append(
                f"- {bench.title}, {row.figure.name}: {row.shown}{ratio}, target {target}: "
                "see notes below."
            )
        elif row.verdict == "not measured":
            held.append(
                f"- {bench.title}, {row.figure.name}: not measured (the benchmark failed: "
                f"see its output), target {target}."
            )
    parts += held or ["Every target is met in this run."]
    hand = BENCH / "NOTES.md"
    parts += ["", "## Notes", "", report.notes(hand.read_text()) if hand.is_file() else ""]
    return "\n".join(parts).rstrip() + "\n"


def main() -> int:
    keys = [bench.key for bench in BENCHES]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="one round of tiny sizes (CI: keeps it working)"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "BENCHMARKS.md", help="default: BENCHMARKS.md"
    )
    parser.add_argument("--only", nargs="+", choices=keys, help="these sections only")
    parser.add_argument("--json", type=Path, help="also write every round's figures here")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    sizes = QUICK if args.quick else FULL
    selected = [bench for bench in BENCHES if not args.only or bench.key in args.only]
    started, start_wall = time.monotonic(), datetime.now(UTC)
    about_machine = machine()
    installed = nodered.install() if any(b.key == "ingest" for b in selected) else None
    outcomes = [Outcome(bench, [], []) for bench in selected]
    with tempfile.TemporaryDirectory(prefix="kyoso-bench-suite-") as tmp:
        for number in range(1, rounds + 1):
            for outcome in outcomes:
                figures = run_round(outcome.bench, sizes, number, rounds, Path(tmp))
                if figures is None:
                    outcome.problems.append(f"round {number}: **failed**, no figures")
                    continue
                if figures["exit_code"] != 0:
                    outcome.problems.append(
                        f"round {number}: **exit code {figures['exit_code']}** (a loss or an "
                        "error: see the counts above and its output)"
                    )
                outcome.rounds.append(figures)
    minutes = (time.monotonic() - started) / 60
    header = [
        ("started", start_wall.strftime("%Y-%m-%d %H:%M UTC")),
        ("command", "python -m bench " + " ".join(sys.argv[1:])),
        ("rounds", f"{rounds}{' (quick: tiny sizes)' if args.quick else ''}"),
        ("took", f"{minutes:.1f} min"),
    ]
    text = render(outcomes, sizes, header, about_machine, versions(installed))
    args.output.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({o.bench.key: o.rounds for o in outcomes}, indent=2) + "\n")
    print(f"\n{args.output} written ({minutes:.1f} min)")
    return 1 if any(outcome.problems for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
