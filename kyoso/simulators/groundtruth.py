"""The ground-truth log: what every simulated machine really did.

One JSON object a line: first a ``meta`` record, then one ``segment`` record per state
interval as it completes, per machine in time order. Tests and benchmarks compare every
figure the system derives (utilization, part counts, KPIs, capacity) with it.
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Self

from kyoso.contract import MachineState

from .behaviour import MachineModel, Segment


@dataclass(frozen=True, slots=True)
class TruthSegment:
    """A true state interval ``[start, end)`` with the parts completed in it."""

    machine: str
    start: datetime
    end: datetime
    state: MachineState
    alarm: int
    good: int
    reject: int


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")


class GroundTruthWriter:
    """Appends completed segments of a factory's machines to its log file."""

    def __init__(self, path: Path, factory: str, seed: int, origin: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("w", encoding="utf-8")
        self._written: dict[str, int] = defaultdict(int)
        meta = {"kind": "meta", "factory": factory, "seed": seed, "origin": _iso(origin)}
        self._file.write(json.dumps(meta) + "\n")

    def flush(self, models: dict[str, MachineModel], until: float) -> int:
        """Write every segment that ended at or before ``until``; return how many."""
        count = 0
        for machine, model in models.items():
            done = model.completed(until)
            for segment in done[self._written[machine] :]:
                self._file.write(json.dumps(_record(machine, segment)) + "\n")
                count += 1
            self._written[machine] = len(done)
        self._file.flush()
        return count

    def close(self) -> None:
        """Close the file; what was flushed stays."""
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _record(machine: str, segment: Segment) -> dict[str, object]:
    good, reject = segment.parts_until(segment.end)
    return {
        "kind": "segment",
        "machine": machine,
        "start": _iso(segment.start),
        "end": _iso(segment.end),
        "state": segment.state.value,
        "alarm": segment.alarm,
        "good": good,
        "reject": reject,
    }


def read_ground_truth(path: Path) -> dict[str, list[TruthSegment]]:
    """The segments of a log, per machine in time order."""
    result: dict[str, list[TruthSegment]] = defaultdict(list)
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["kind"] != "segment":
                continue
            result[record["machine"]].append(
                TruthSegment(
                    machine=record["machine"],
                    start=datetime.fromisoformat(record["start"]),
                    end=datetime.fromisoformat(record["end"]),
                    state=MachineState(record["state"]),
                    alarm=record["alarm"],
                    good=record["good"],
                    reject=record["reject"],
                )
            )
    return dict(result)


def state_seconds(
    segments: list[TruthSegment], start: datetime, end: datetime
) -> dict[MachineState, float]:
    """Seconds spent in each state within ``[start, end)``."""
    totals: dict[MachineState, float] = defaultdict(float)
    for seg in segments:
        overlap = (min(seg.end, end) - max(seg.start, start)).total_seconds()
        if overlap > 0:
            totals[seg.state] += overlap
    return dict(totals)
