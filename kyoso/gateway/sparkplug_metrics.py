"""What a Kyoso gateway's Sparkplug B births and data say: the metrics of its node and of
each machine's device, their aliases, and their values from a Kyoso sample.

A machine's device (device id = machine id) has:

- one metric per field its samples carry, named as the field: each signal's last value
  (Double) and each counter's raw reading (UInt64), so that a host maps fields by name;
- Kyoso's own view, under ``Kyoso/``: ``Kyoso/State`` (the state at the sample's end, a
  String), ``Kyoso/Alarm`` (UInt32, if the machine has an alarm field), per counter
  ``Kyoso/Counters/<name>`` (parts counted in the interval, UInt64), per signal
  ``Kyoso/Signals/<field>/Mean``, ``/Min`` and ``/Max`` (Double).

A field missing in a sample (unreadable) is null there. Every metric has an alias, unique
across the node: the node's metrics first, then each machine's in configuration order, so
aliases are stable as long as the configuration is. Births name every metric with its
alias; data carry aliases only. A metric's timestamp is the sample's end, when its
values were read.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from kyoso.contract import Sample
from kyoso.sparkplug import BDSEQ, REBIRTH, DataType, Metric, Value

from .config import MachineRules

__all__ = ["DeviceMetrics", "MetricSpec", "devices", "node_birth_metrics", "node_death_metrics"]

STATE = "Kyoso/State"
ALARM = "Kyoso/Alarm"
NODE_METRICS = 2
"""bdSeq (alias 0) and Node Control/Rebirth (alias 1); devices' aliases follow."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric's name, alias and type."""

    name: str
    alias: int
    datatype: DataType


def node_birth_metrics(bdseq: int, timestamp_ms: int) -> tuple[Metric, ...]:
    """The NBIRTH's metrics: the session's bdSeq and the writable rebirth control."""
    return (
        Metric(BDSEQ, 0, timestamp_ms, DataType.UInt64, bdseq),
        Metric(REBIRTH, 1, timestamp_ms, DataType.Boolean, False),
    )


def node_death_metrics(bdseq: int) -> tuple[Metric, ...]:
    """The NDEATH's only metric: the bdSeq of the birth it ends."""
    return (Metric(BDSEQ, None, None, DataType.UInt64, bdseq),)


class DeviceMetrics:
    """The metrics of one machine's device and how a sample fills them."""

    def __init__(self, machine: MachineRules, first_alias: int) -> None:
        self.machine = machine.id
        named: list[tuple[str, DataType]] = [(STATE, DataType.String)]
        if machine.state.alarm is not None:
            named.append((ALARM, DataType.UInt32))
        for name, counter in machine.counters.items():
            named += [(counter.field, DataType.UInt64), (f"Kyoso/Counters/{name}", DataType.UInt64)]
        for field in machine.signals:
            named.append((field, DataType.Double))
            named += [
                (f"Kyoso/Signals/{field}/{s}", DataType.Double) for s in ("Mean", "Min", "Max")
            ]
        self.specs = tuple(
            MetricSpec(name, first_alias + i, kind) for i, (name, kind) in enumerate(named)
        )
        self._counters = dict(machine.counters)
        self._signals = tuple(machine.signals)

    @property
    def next_alias(self) -> int:
        """The first alias after this device's."""
        return self.specs[-1].alias + 1

    def birth(self, sample: Sample | None, timestamp_ms: int) -> tuple[Metric, ...]:
        """The DBIRTH's metrics: every one named, with its alias and its value in ``sample``
        (the machine's latest; None before its first: every value null)."""
        values = self._values(sample) if sample is not None else {}
        at = _ms(sample) if sample is not None else timestamp_ms
        return tuple(
            _metric(spec, values.get(spec.name), at, name=spec.name) for spec in self.specs
        )

    def data(self, sample: Sample, *, historical: bool) -> tuple[Metric, ...]:
        """A DDATA's metrics for ``sample``, by alias only."""
        values, at = self._values(sample), _ms(sample)
        return tuple(
            _metric(spec, values.get(spec.name), at, historical=historical) for spec in self.specs
        )

    def _values(self, sample: Sample) -> dict[str, Value]:
        values: dict[str, Value] = {STATE: str(sample.state), ALARM: sample.alarm}
        for name, config in self._counters.items():
            counter = sample.counters.get(name)
            if counter is not None:
                values[config.field] = counter.total
                values[f"Kyoso/Counters/{name}"] = counter.delta
        for field in self._signals:
            stats = sample.signals.get(field)
            if stats is not None:
                values[field] = stats.last
                for stat in ("Mean", "Min", "Max"):
                    values[f"Kyoso/Signals/{field}/{stat}"] = getattr(stats, stat.lower())
        return values


def devices(machines: Iterable[MachineRules]) -> list[DeviceMetrics]:
    """Every machine's device metrics, aliases numbered after the node's."""
    found: list[DeviceMetrics] = []
    for machine in machines:
        found.append(DeviceMetrics(machine, found[-1].next_alias if found else NODE_METRICS))
    return found


def _ms(sample: Sample) -> int:
    return round(sample.ts.timestamp() * 1000)


def _metric(
    spec: MetricSpec, value: Value, at: int, *, name: str | None = None, historical: bool = False
) -> Metric:
    return Metric(
        name=name,
        alias=spec.alias,
        timestamp_ms=at,
        datatype=spec.datatype,
        value=value,
        is_historical=historical,
        is_null=value is None,
    )
