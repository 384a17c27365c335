"""How fast ``kyoso demo`` answers from a fresh data directory, quiet and under a CPU hog.

Starts ``kyoso demo`` on a new data directory and measures, from the process's start:
**ready** (the guide with the page's address is printed: the API answers), **live** (the
regional capacity lists every demo factory online) and **history** (the background
backfill says it is done), then Ctrl-C, and how long the stop takes. Each case runs
``--rounds`` times, quiet and then with a busy loop on every core beside it (a laptop or a
Raspberry Pi is rarely quiet). The reference is the raw limit of the same machine in the
same run: ``kyoso --version``, an interpreter start that loads the command line and
nothing else.

    .venv/bin/python bench/demo.py --rounds 3 --backfill 7d
"""

import argparse
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_READY = re.compile(r"Overview page : (http://[\d.]+:\d+)/#key=")
_FACTORIES = 3


def _spin() -> None:
    while True:
        pass


@contextmanager
def _hog(on: bool) -> Iterator[None]:
    """A busy loop on every core while inside, if ``on``."""
    spinners = [
        multiprocessing.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 1)
    ]
    for spinner in spinners if on else []:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners if on else []:
            spinner.kill()
            spinner.join()


def _live(base: str, key: str) -> bool:
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{base}/v1/capacity?horizon_h=24", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            body = json.loads(response.read())
    except OSError:
        return False
    return sum(not f["offline"] for f in body["factories"]) == _FACTORIES


def _round(kyoso: str, backfill: str) -> dict[str, float]:
    """One demo from a fresh data directory: seconds to ready, live, history, and to stop."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "demo"
        command = [kyoso, "demo", "--data-dir", str(data), "--port", "0", "--mqtt-port", "0",
                   "--backfill", backfill]  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: list[str] = []
        marks: dict[str, float] = {}

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if "ready" not in marks and _READY.search(line):
                    marks["ready"] = time.monotonic() - started
                if "samples backfilled" in line:
                    marks["history"] = time.monotonic() - started

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = started + 600
        while "ready" not in marks and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        if "ready" not in marks:
            process.kill()
            raise SystemExit("the demo did not start:\n" + "".join(lines[-30:]))
        base = _READY.search("".join(lines))
        assert base is not None
        key = json.loads((data / "demo-keys.json").read_text())["platform"]
        while not _live(base.group(1), key) and time.monotonic() < deadline:
            time.sleep(0.05)
        marks["live"] = time.monotonic() - started
        while "history" not in marks and time.monotonic() < deadline:
            time.sleep(0.05)
        stopping = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(120)
        marks["stop"] = time.monotonic() - stopping
        reader.join(10)
        return marks


def _floor(kyoso: str) -> float:
    started = time.monotonic()
    subprocess.run([kyoso, "--version"], check=True, capture_output=True)
    return time.monotonic() - started


def _row(name: str, values: list[float]) -> str:
    return (
        f"  {name:<8} median {statistics.median(values):6.2f} s"
        f"  min {min(values):6.2f}  max {max(values):6.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="demos per case")
    parser.add_argument("--backfill", default="7d", help="history to fill, e.g. 7d or 28d")
    parser.add_argument("--quiet-only", action="store_true", help="skip the CPU-hog case")
    args = parser.parse_args()
    kyoso = str(Path(sys.executable).with_name("kyoso"))
    print(f"kyoso demo --backfill {args.backfill}, {args.rounds} rounds per case, "
          f"{os.cpu_count()} cores")  # fmt: skip
    for hog in [False] if args.quiet_only else [False, True]:
        with _hog(hog):
            floor = [_floor(kyoso) for _ in range(args.rounds)]
            rounds = [_round(kyoso, args.backfill) for _ in range(args.rounds)]
        print("with a busy loop on every core" if hog else "quiet machine")
        print(_row("floor", floor) + "   (kyoso --version: the interpreter and the CLI)")
        for mark in ("ready", "live", "history", "stop"):
            print(_row(mark, [r[mark] for r in rounds]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
