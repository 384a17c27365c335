"""The ``sparkplug:`` block of the ingest's settings: which Sparkplug B edge nodes feed which
Kyoso machines (docs/sparkplug.md).

Each factory owns Sparkplug groups; each edge node of a group stands for one Kyoso gateway
(its id configurable, by default derived from the node id), and each of the node's machines
takes its fields from metrics of the node (``device: null``) or of one device. A machine is
described as a Kyoso gateway describes its own: the gateway's :class:`MachineRules` (state
rules, counters, signals, alarm, calendar, capabilities, ideal cycle time), its fields named
by the ``metrics`` map instead of a source.
"""

import re
from typing import Annotated, Self

from pydantic import Field, StringConstraints, model_validator

from kyoso.contract import Id, Name, ShiftCalendar
from kyoso.gateway.config import MachineRules
from kyoso.validation import ConfigModel

__all__ = [
    "SparkplugConfig",
    "SparkplugFactoryConfig",
    "SparkplugMachineConfig",
    "SparkplugNodeConfig",
    "gateway_of_node",
]

SparkplugId = Annotated[str, StringConstraints(pattern=r"^[^+#/]+$", max_length=256)]
"""A Sparkplug group, edge node, device or host id: not empty, no ``+ # /``."""

_NOT_ID = re.compile(r"[^a-z0-9_-]+")


def gateway_of_node(node: str) -> str | None:
    """The Kyoso gateway id a node stands for by default: the node id in lower case, each
    run of other characters than ``a-z 0-9 _ -`` made one ``-``, at most 63 characters;
    None when nothing of it is left (then ``gateway`` must be given)."""
    text = _NOT_ID.sub("-", node.lower()).strip("-_")[:63].rstrip("-_")
    return text or None


class SparkplugMachineConfig(MachineRules):
    """One Kyoso machine fed by metrics of a Sparkplug node or of one of its devices."""

    device: SparkplugId | None = Field(
        None, description="The Sparkplug device whose metrics feed it; null: the node's own."
    )
    metrics: dict[Annotated[str, StringConstraints(min_length=1)], Name] = Field(
        min_length=1, description="Sparkplug metric name -> the Kyoso field it gives."
    )

    @model_validator(mode="after")
    def _fields_mapped(self) -> Self:
        known = set(self.metrics.values())
        if unknown := sorted(self.wanted_fields - known):
            raise ValueError(
                f"fields {unknown} are given by no metric (the metrics give {sorted(known)})"
            )
        return self


class SparkplugNodeConfig(ConfigModel):
    """A Sparkplug edge node: one Kyoso gateway of the factory, and its machines."""

    group: SparkplugId = Field(description="Its Sparkplug group (one of the factory's).")
    node: SparkplugId = Field(description="The edge node id.")
    gateway: Id | None = Field(
        None,
        description="The Kyoso gateway id its samples and status carry; null: the node id in "
        "lower case, other characters than a-z 0-9 _ - turned into '-'.",
    )
    machines: list[SparkplugMachineConfig] = Field(min_length=1, max_length=500)

    @property
    def gateway_id(self) -> str:
        """The gateway id used (see ``gateway``)."""
        gateway = self.gateway or gateway_of_node(self.node)
        assert gateway is not None  # checked by _gateway_known
        return gateway

    @model_validator(mode="after")
    def _gateway_known(self) -> Self:
        if self.gateway is None and gateway_of_node(self.node) is None:
            raise ValueError(f"node {self.node!r} gives no gateway id: set gateway")
        return self


class SparkplugFactoryConfig(ConfigModel):
    """A factory's Sparkplug groups, calendars and edge nodes."""

    factory: Id
    groups: list[SparkplugId] = Field(
        min_length=1, description="The Sparkplug groups the factory owns; others' are refused."
    )
    calendars: dict[Id, ShiftCalendar] = Field(min_length=1)
    nodes: list[SparkplugNodeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for node in self.nodes:
            if node.group not in self.groups:
                raise ValueError(f"node {node.node}: group {node.group!r} is not in groups")
            for machine in node.machines:
                if machine.calendar not in self.calendars:
                    raise ValueError(f"machine {machine.id}: unknown calendar {machine.calendar!r}")
        ids = [m.id for node in self.nodes for m in node.machines]
        if repeated := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"machine ids repeat: {repeated}")
        pairs = [(n.group, n.node) for n in self.nodes]
        if repeated := sorted({f"{g}/{n}" for g, n in pairs if pairs.count((g, n)) > 1}):
            raise ValueError(f"nodes listed twice: {repeated}")
        gateways = [n.gateway_id for n in self.nodes]
        if repeated := sorted({g for g in gateways if gateways.count(g) > 1}):
            raise ValueError(
                f"several nodes are gateway {repeated}: set gateway to tell them apart"
            )
        return self


class SparkplugConfig(ConfigModel):
    """The ingest as a Sparkplug B host application."""

    host_id: SparkplugId = Field(
        "kyoso-ingest",
        description="The host application id: its STATE is spBv1.0/STATE/<host_id>.",
    )
    interval_s: float = Field(
        10.0, gt=0, le=3600, description="A sample of each machine closes this often."
    )
    late_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Metrics are applied in timestamp order this long after their time on "
        "the ingest's clock (a node reports by exception, so silence closes samples too); "
        "a metric stamped before what a machine already applied is late and skipped.",
    )
    rebirth_timeout_s: float = Field(
        30.0, gt=0, description="After a rebirth request, the next one waits this long."
    )
    tick_s: float = Field(
        1.0, gt=0, le=60, description="How often due metrics are applied and samples closed."
    )
    factories: list[SparkplugFactoryConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _groups_owned_once(self) -> Self:
        owners: dict[str, str] = {}
        for factory in self.factories:
            for group in factory.groups:
                if (owner := owners.setdefault(group, factory.factory)) != factory.factory:
                    raise ValueError(
                        f"group {group!r} is owned by factories {owner} and {factory.factory}"
                    )
        return self

    def factory_of(self, group: str) -> SparkplugFactoryConfig | None:
        """The factory owning ``group`` (None: not mapped)."""
        return next((f for f in self.factories if group in f.groups), None)
