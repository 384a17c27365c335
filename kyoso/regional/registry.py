"""The gateway registry: which gateways a region admits, and the accounts of its services.

One YAML file, validated as one pydantic tree (``deploy/gateways.example.yaml`` is the
commented example). Each gateway names its factory; the factories of a region are those
its gateways name. Usernames are checked here for what the generated files need: unique
per system (MQTT, InfluxDB), and free of the characters that Mosquitto's password and ACL
files or InfluxQL identifiers would misread.

The broker takes a client's user name as its client id (docs/regional.md, "Tenant
isolation"), so an account holds one connection and one session at a time: each ingest
worker has a broker account of its own (:attr:`IngestAccount.mqtt_users`).
"""

import re
from pathlib import Path
from typing import Annotated, Self

from pydantic import (
    Field,
    StringConstraints,
    model_validator,
)

from kyoso.contract import Id
from kyoso.influx.lineprotocol import RESERVED_FACTORY_IDS
from kyoso.validation import ConfigModel, load_yaml_model

__all__ = [
    "GRAFANA_UID_MAX",
    "Gateway",
    "IngestAccount",
    "Registry",
    "RegistryError",
    "ServiceAccount",
    "SparkplugNode",
    "load_registry",
]

GRAFANA_UID_MAX = 40
"""Longest Grafana data source uid; a factory's data source uid is the factory id."""

USERNAME_MAX = 64
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Username = Annotated[str, StringConstraints(pattern=_USERNAME.pattern)]
"""An MQTT or InfluxDB user name: no ':' (the password file's separator), no spaces."""

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")]

SparkplugId = Annotated[str, StringConstraints(pattern=r"^[^+#/\s]{1,128}$")]
"""A Sparkplug group, edge node or host id, as an ACL line can hold it: no wildcard, no
'/', no space."""


class ServiceAccount(ConfigModel):
    """A service's user, the same name on the broker and in InfluxDB where it needs both."""

    username: Username
    password_env: EnvName | None = Field(
        default=None,
        description="Environment variable holding the password (the service reads the same"
        " one); None: generated once into the secrets file.",
    )


class IngestAccount(ServiceAccount):
    """The ingest's account: its InfluxDB user, and one broker user per worker."""

    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Ingest workers (one shared-subscription group). The broker binds a"
        " session to a user, so each worker has a broker user of its own: the first"
        " `username`, the n-th '<username>-<n>'; all with the same password when"
        " `password_env` names one, else each its own generated one.",
    )

    sparkplug_host: SparkplugId = Field(
        default="kyoso-ingest",
        description="The Sparkplug host id the ingest announces its STATE as (its"
        " sparkplug.host_id); used when `sparkplug_nodes` lists any.",
    )

    @property
    def mqtt_users(self) -> list[str]:
        """The workers' broker users. The first keeps the plain name, so that going from one
        worker to several keeps its session (and what the broker queued in it)."""
        return [self.username, *(f"{self.username}-{n}" for n in range(2, self.workers + 1))]

    @model_validator(mode="after")
    def _short_enough(self) -> Self:
        if len(last := self.mqtt_users[-1]) > USERNAME_MAX:
            raise ValueError(f"worker user name {last!r} is longer than {USERNAME_MAX} characters")
        return self


class Gateway(ConfigModel):
    """One gateway the broker admits: it publishes only under its own factory."""

    factory: Id
    gateway: Id
    username: Username | None = Field(
        default=None, description="Broker user; None: '<factory>-<gateway>'."
    )

    @property
    def user(self) -> str:
        """The broker user name."""
        return self.username or f"{self.factory}-{self.gateway}"


class SparkplugNode(ConfigModel):
    """A Sparkplug B edge node the broker admits: it speaks only as itself, in its group."""

    factory: Id = Field(description="The factory its data belongs to (a database, a read user).")
    group: SparkplugId
    node: SparkplugId
    username: Username | None = Field(
        default=None, description="Broker user; None: '<group>-<node>'."
    )

    @property
    def user(self) -> str:
        """The broker user name."""
        return self.username or f"{self.group}-{self.node}"

    @model_validator(mode="after")
    def _user_valid(self) -> Self:
        if self.username is None and not _USERNAME.fullmatch(self.user):
            raise ValueError(f"{self.user!r} is no broker user name: set username")
        return self


class Registry(ConfigModel):
    """A region's gateways and the accounts of its services."""

    ingest: IngestAccount = Field(
        default=IngestAccount(username="kyoso-ingest"),
        description="Reads every factory's topics, publishes its store receipts; writes the factory"
        " databases.",
    )
    capacity: ServiceAccount = Field(
        default=ServiceAccount(username="kyoso-capacity"),
        description="The capacity service: reads the factory databases, writes kyoso_capacity.",
    )
    region: ServiceAccount = Field(
        default=ServiceAccount(username="kyoso-region"),
        description="Reads kyoso_capacity only: the regional dashboard's data source.",
    )
    gateways: list[Gateway] = Field(min_length=1, max_length=10_000)
    sparkplug_nodes: list[SparkplugNode] = Field(
        default_factory=list,
        max_length=10_000,
        description="Sparkplug B edge nodes, read by the ingest as a host application.",
    )

    @property
    def factories(self) -> list[str]:
        """Every factory with a gateway or an edge node, sorted; each has a database and a
        read user."""
        return sorted(
            {g.factory for g in self.gateways} | {n.factory for n in self.sparkplug_nodes}
        )

    @property
    def sparkplug_groups(self) -> list[str]:
        """The Sparkplug groups of the edge nodes, sorted."""
        return sorted({n.group for n in self.sparkplug_nodes})

    @property
    def mqtt_users(self) -> list[str]:
        """Broker users: the ingest workers, then every gateway, then every edge node."""
        return [
            *self.ingest.mqtt_users,
            *(g.user for g in self.gateways),
            *(n.user for n in self.sparkplug_nodes),
        ]

    @property
    def influx_users(self) -> list[str]:
        """InfluxDB users: the services, then one read user per factory (named after it)."""
        return [
            self.ingest.username,
            self.capacity.username,
            self.region.username,
            *self.factories,
        ]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        pairs = [(g.factory, g.gateway) for g in self.gateways]
        if repeated := sorted({f"{f}/{g}" for f, g in pairs if pairs.count((f, g)) > 1}):
            raise ValueError(f"gateways listed twice: {repeated}")
        owners: dict[str, str] = {}
        for node in self.sparkplug_nodes:
            if (owner := owners.setdefault(node.group, node.factory)) != node.factory:
                raise ValueError(
                    f"Sparkplug group {node.group!r} in factories {owner} and {node.factory}"
                )
        nodes = [(n.group, n.node) for n in self.sparkplug_nodes]
        if repeated := sorted({f"{g}/{n}" for g, n in nodes if nodes.count((g, n)) > 1}):
            raise ValueError(f"Sparkplug nodes listed twice: {repeated}")
        for factory in self.factories:
            if factory in RESERVED_FACTORY_IDS:
                raise ValueError(f"factory id {factory!r} is reserved (its database is shared)")
            if len(factory) > GRAFANA_UID_MAX:
                raise ValueError(
                    f"factory id {factory!r} is longer than {GRAFANA_UID_MAX} characters,"
                    " the longest Grafana data source uid"
                )
        for system, users in (("broker", self.mqtt_users), ("InfluxDB", self.influx_users)):
            if repeated := sorted({u for u in users if users.count(u) > 1}):
                raise ValueError(f"{system} user names used twice: {repeated}")
        return self


class RegistryError(ValueError):
    """A registry that cannot be used; one line per problem, with its location."""


def load_registry(path: Path) -> Registry:
    """Read and validate a registry file; :class:`RegistryError` lists every problem."""
    return load_yaml_model(Registry, path, RegistryError)
