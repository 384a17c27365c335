"""Commissioning: browse what an OPC UA server offers, with each variable's value now.

``kyoso gateway probe --opcua opc.tcp://host:4840`` walks the address space from Objects
down to ``--depth`` levels (the server's own diagnostics object, ``i=2253``, is left out)
and prints each node's browse path, node id, node class, and for a variable its data type
and current value: the two ways a field of a machine's ``opcua`` source names a node.
"""

import asyncio
import logging
import os
from dataclasses import dataclass

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIdNames
from asyncua.ua.uaerrors import UaError

from .opcua_errors import classify

PASSWORD_ENV = "KYOSO_OPCUA_PASSWORD"  # noqa: S105  # a variable's name
"""Where the probe takes a user's password from (never from the command line)."""

_SERVER_OBJECT = ua.NodeId(ua.Int32(2253), ua.Int16(0))


class OpcuaProbeError(Exception):
    """The server could not be browsed; the message says why."""


@dataclass(frozen=True, slots=True)
class ProbedNode:
    """One node of the address space."""

    path: str
    node_id: str
    node_class: str
    data_type: str = ""
    value: str = ""


async def probe(
    endpoint: str,
    *,
    depth: int = 4,
    security: str | None = None,
    user: str | None = None,
    timeout_s: float = 4.0,
) -> list[ProbedNode]:
    """Every node down to ``depth`` levels below Objects. ``security`` is asyncua's
    ``Policy,Mode,certificate,private_key[,server_certificate]``. Raises
    :class:`OpcuaProbeError` when the server cannot be browsed."""
    logging.getLogger("asyncua").setLevel(logging.WARNING)  # the table, not its chatter
    client = Client(endpoint, timeout=timeout_s)
    client.application_uri = "urn:kyoso:gateway"
    if user is not None:
        client.set_user(user)
        client.set_password(os.environ.get(PASSWORD_ENV, ""))
    try:
        async with asyncio.timeout(timeout_s * 2):
            if security:
                await client.set_security_string(security)
            await client.connect()
    except (OSError, TimeoutError, UaError) as exc:
        raise OpcuaProbeError(f"{endpoint}: {classify(exc)}") from exc
    try:
        found: list[ProbedNode] = []
        await _walk(client, client.nodes.objects, "0:Objects", depth, found)
        return found
    except (OSError, TimeoutError, UaError) as exc:
        raise OpcuaProbeError(f"{endpoint}: {classify(exc)}") from exc
    finally:
        await client.disconnect()


async def _walk(client: Client, node: Node, path: str, depth: int, found: list[ProbedNode]) -> None:
    if depth == 0:
        return
    children = [
        r
        for r in await node.get_children_descriptions()
        if r.NodeId != _SERVER_OBJECT
        and r.NodeClass in (ua.NodeClass.Object, ua.NodeClass.Variable)
    ]
    variables = [
        client.get_node(r.NodeId) for r in children if r.NodeClass == ua.NodeClass.Variable
    ]
    values = await client.read_attributes(variables) if variables else []
    types = await client.read_attributes(variables, AttributeIds.DataType) if variables else []
    read = {
        v.nodeid: (_type_name(t), _shown(d))
        for v, d, t in zip(variables, values, types, strict=True)
    }
    for ref in children:
        name = f"{path}/{ref.BrowseName.NamespaceIndex}:{ref.BrowseName.Name}"
        data_type, value = read.get(ref.NodeId, ("", ""))
        found.append(ProbedNode(name, ref.NodeId.to_string(), ref.NodeClass.name, data_type, value))
        await _walk(client, client.get_node(ref.NodeId), name, depth - 1, found)


def _type_name(value: ua.DataValue) -> str:
    data_type = value.Value.Value if value.Value is not None else None
    if isinstance(data_type, ua.NodeId) and data_type.NamespaceIndex == 0:
        return ObjectIdNames.get(int(data_type.Identifier), data_type.to_string())
    return data_type.to_string() if isinstance(data_type, ua.NodeId) else ""


def _shown(value: ua.DataValue) -> str:
    status = value.StatusCode or ua.StatusCode()
    if not status.is_good():
        return status.name
    shown = value.Value.Value if value.Value is not None else None
    text = getattr(shown, "Text", None)
    return str(text if text is not None else shown)


def format_probe(nodes: list[ProbedNode]) -> str:
    """One line per node, columns aligned."""
    header = ("browse path", "node id", "class", "data type", "value")
    rows = [(n.path, n.node_id, n.node_class, n.data_type, n.value) for n in nodes]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    )
