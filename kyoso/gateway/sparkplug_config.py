"""The ``sparkplug`` section of a gateway's configuration: the gateway as a Sparkplug B edge
node (:mod:`kyoso.gateway.sparkplug` says what it publishes)."""

from pydantic import Field, field_validator

from kyoso.mqtt import BrokerConnection
from kyoso.sparkplug import MessageType, SparkplugError, Topic
from kyoso.validation import ConfigModel

__all__ = ["SparkplugConfig"]


def _sparkplug_id(value: str | None) -> str | None:
    """``value`` if Sparkplug accepts it as a topic element (no ``+ # /``, not empty)."""
    if value is not None:
        try:
            Topic(value, MessageType.NDATA, value)
        except SparkplugError as exc:
            raise ValueError(str(exc).replace("group id", "id")) from None
    return value


class SparkplugConfig(ConfigModel):
    """The gateway as a Sparkplug B 3.0 edge node: a node per gateway, a device per machine."""

    group_id: str = Field(description="Sparkplug group id (spBv1.0/<group_id>/...).")
    edge_node_id: str | None = Field(
        None, description="Sparkplug edge node id; None: the gateway's id."
    )
    primary_host_id: str | None = Field(
        None,
        description="A primary host application (SCADA, MES) whose STATE the node waits for: "
        "while it is offline, data waits in the outbox and goes out, as historical, once it "
        "is online. None: publish whenever connected.",
    )
    broker: BrokerConnection | None = Field(
        None,
        description="Broker of the Sparkplug messages; None: the `broker` section's. A broker "
        "binding client ids to usernames (as the regional one does) needs an account of "
        "its own here.",
    )
    client_id: str | None = Field(
        None, description="MQTT client id; None: kyoso-<factory>-<gateway>-sparkplug."
    )
    kyoso_samples: bool = Field(
        True,
        description="Also publish the samples as Kyoso JSON (the contract) on the `broker` "
        "section's broker, for Kyoso's ingest; false: samples go out as Sparkplug only (the "
        "gateway's status and machine descriptions still go out as Kyoso JSON).",
    )

    _ids = field_validator("group_id", "edge_node_id", "primary_host_id")(_sparkplug_id)
