"""Where each simulated machine answers, by protocol: what ``kyoso simulate`` prints and the
demo gateways' configurations are made of. Plain values, so that reading them loads none of
the servers (asyncua above all)."""

from typing import NamedTuple

__all__ = ["AgentEndpoint", "Endpoint", "ServerEndpoint", "SlmpEndpoint"]


class Endpoint(NamedTuple):
    """Where a machine answers."""

    host: str
    port: int
    unit: int

    @property
    def kind(self) -> str:
        """The source kind, as ``kyoso simulate`` prints it."""
        return "modbus"

    def __str__(self) -> str:
        return f"{self.host}:{self.port} unit {self.unit}"


class AgentEndpoint(NamedTuple):
    """Where a machine's MTConnect agent answers."""

    host: str
    port: int
    device: str

    @property
    def kind(self) -> str:
        """The source kind, as ``kyoso simulate`` prints it."""
        return "mtconnect"

    @property
    def url(self) -> str:
        """The agent's base URL."""
        return f"http://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.url} device {self.device}"


class ServerEndpoint(NamedTuple):
    """Where a machine's OPC UA server answers, and the browse path of its machine object."""

    host: str
    port: int
    machine: str

    @property
    def kind(self) -> str:
        """The source kind, as ``kyoso simulate`` prints it."""
        return "opcua"

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/kyoso/"

    @property
    def machine_path(self) -> str:
        """The machine object's browse path (the simulator's namespace is index 2)."""
        return f"0:Objects/2:Machines/2:{self.machine}"

    @property
    def messages_path(self) -> str:
        """The browse path of the node whose alarm events the machine emits."""
        return f"{self.machine_path}/3:Notification/3:Messages"

    def node(self, name: str) -> str:
        """A vendor node's id: ``PartsGood``, ``PartsBad``, ``AlarmCode``, ``SpindleSpeed``;
        ``Alarm`` is the id of the alarm condition."""
        return f"ns=2;s={self.machine}.{name}"

    def __str__(self) -> str:
        return f"{self.url} {self.machine_path}"


class SlmpEndpoint(NamedTuple):
    """Where a machine's PLC answers, and how the demo gateway reads it."""

    host: str
    port: int
    transport: str
    frame: str

    @property
    def kind(self) -> str:
        """The source kind, as ``kyoso simulate`` prints it."""
        return "slmp"

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.transport} {self.frame.upper()}"
