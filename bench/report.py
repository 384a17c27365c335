"""BENCHMARKS.md from the rounds of ``python -m bench``: what each figure is, its baseline,
its target, and how the table is written.

A :class:`Figure` reads one number out of a benchmark's ``--json`` figures, and its
baseline out of the same file: the same run of the same benchmark (the same influxd,
broker, API server or simulated machines), so that both saw the same machine at the same
moment. Over the rounds it is shown as the median with the spread (min-max), beside the
baseline's median and the ratio (the median of the rounds' ratios, not the ratio of
medians). A :class:`Target` is the issue's, judged on the median: of the figure, or of the
ratio for a target relative to its baseline.
"""

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Data = Mapping[str, Any]
"""One benchmark's ``--json`` figures of one round."""


def at(*keys: str) -> Callable[[Data], float | None]:
    """The number at ``keys`` (a list's items by their index) in a benchmark's figures, or
    None where there is none."""

    def get(data: Data) -> float | None:
        found: Any = data
        for key in keys:
            if isinstance(found, list) and key.isdigit() and int(key) < len(found):
                found = found[int(key)]
            elif isinstance(found, Mapping) and key in found:
                found = found[key]
            else:
                return None
        return float(found) if isinstance(found, int | float) else None

    return get


@dataclass(frozen=True)
class Unit:
    """How a figure is written: ``scale`` times the JSON value, ``digits`` decimals."""

    name: str
    scale: float = 1.0
    digits: int = 0

    def format(self, value: float | None) -> str:
        if value is None:
            return "—"
        return f"{value * self.scale:,.{self.digits}f}"


RATE = Unit("samples/s")
POINTS = Unit("points/s")
REQUESTS = Unit("req/s")
SECONDS = Unit("s", digits=2)
MILLISECONDS = Unit("ms", scale=1000.0, digits=1)
PERCENT = Unit("% of a core", digits=2)
MIB = Unit("MiB", digits=1)


@dataclass(frozen=True)
class Target:
    """The issue's target for a figure: ``text`` says it, ``met`` judges the medians of the
    figure and of its ratio to the baseline."""

    text: str
    met: Callable[[float, float | None], bool]


def below(limit: float, unit: Unit) -> Target:
    return Target(f"< {limit * unit.scale:g} {unit.name}", lambda v, _: v < limit)


def ratio_at_least(ratio: float, baseline: str) -> Target:
    return Target(f"≥ {ratio:g}x {baseline}", lambda _, r: r is not None and r >= ratio)


@dataclass(frozen=True)
class Figure:
    """One row: a figure of a benchmark beside its baseline from the same run."""

    name: str
    unit: Unit
    value: Callable[[Data], float | None]
    baseline_name: str
    baseline: Callable[[Data], float | None]
    target: Target | None = None


@dataclass
class Row:
    """A figure over the rounds."""

    figure: Figure
    values: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, figure: Figure, rounds: Iterable[Data]) -> "Row":
        row = cls(figure)
        for data in rounds:
            value, baseline = figure.value(data), figure.baseline(data)
            if value is not None:
                row.values.append(value)
            if baseline is not None:
                row.baselines.append(baseline)
            if value is not None and baseline:
                row.ratios.append(value / baseline)
        return row

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def verdict(self) -> str | None:
        """``met``, ``missed`` or ``not measured``; None without a target."""
        target, median = self.figure.target, self.median
        if target is None:
            return None
        if median is None:
            return "not measured"
        return "met" if target.met(median, self.ratio) else "missed"

    @property
    def shown(self) -> str:
        """The median with its unit."""
        unit = self.figure.unit
        return f"{unit.format(self.median)} {unit.name}" if self.values else "—"

    def cells(self) -> list[str]:
        unit = self.figure.unit
        spread = (
            f"{unit.format(min(self.values))}-{unit.format(max(self.values))}"
            if self.values
            else "—"
        )
        baseline = (
            f"{unit.format(statistics.median(self.baselines))} {unit.name}"
            if self.baselines
            else "—"
        )
        target = self.figure.target
        return [
            self.figure.name,
            self.shown,
            spread,
            self.figure.baseline_name,
            baseline,
            self.ratio_shown,
            target.text if target else "",
            emphasized(self.verdict),
        ]

    @property
    def ratio_shown(self) -> str:
        return f"{self.ratio:.2f}x" if self.ratio is not None else "—"


def emphasized(verdict: str | None) -> str:
    """A verdict as the tables show it: what is not met in bold."""
    if verdict is None:
        return ""
    return verdict if verdict == "met" else f"**{verdict}**"


HEADER = ["Figure", "Median", "Spread (min-max)", "Baseline, same run", "Baseline median"]
HEADER += ["Ratio", "Target", ""]


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def notes(text: str) -> str:
    """Hand-written notes (bench/NOTES.md) under this file's "Notes" heading: their own
    title dropped, their headings one level down."""
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines).strip()
