"""Active alarms of an OPC UA server, from its alarm events: the ``faults`` and
``fault_code`` presets.

umati machine tools (OPC 40501-1) report alarms as events of ``AlertType``, an
``AlarmConditionType`` with an ``ErrorCode``, from ``Notification/Messages``. A condition is
active while its events say ``ActiveState/Id`` true (and ``Retain``); an event with it
false clears it. An event subscription only brings changes, so after subscribing the source
calls ``ConditionRefresh``, which makes the server send every condition still retained and
then a ``RefreshEndEvent``: until that event (or, from a server that sends none,
``timeout_s`` after the call answered), the alarms of the session are not known, and the
presets are missing rather than 0.
"""

from dataclasses import dataclass, field
from typing import Any, Final

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.events import get_filter_from_event_type
from asyncua.common.node import Node
from asyncua.common.subscription import Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from .mtconnect_xml import number
from .opcua_config import MACHINE_TOOL_NS
from .opcua_errors import OpcuaMissingReason
from .source import Missing

ERROR_CODE = "ErrorCode"
"""The alarm code of an umati ``AlertType`` event (a String)."""

REFRESH_END: Final = ua.NodeId(ua.Int32(ObjectIds.RefreshEndEventType))


def is_refresh_end(event: Any) -> bool:
    """Whether ``event`` ends a ConditionRefresh: every retained condition has come."""
    return bool(getattr(event, "EventType", None) == REFRESH_END)


@dataclass(slots=True)
class ActiveAlarms:
    """The active conditions of one session, by condition id, in order of activation."""

    known: bool = False
    """True once ConditionRefresh has answered: the table holds every active alarm."""
    _active: dict[str, tuple[int, str]] = field(default_factory=dict)
    _order: int = 0

    def apply(self, event: Any) -> None:
        """Take one alarm event: an activation, or the end of one."""
        condition = getattr(event, "NodeId", None) or (
            getattr(event, "SourceNode", None),
            getattr(event, "ConditionName", None),
        )
        key = str(condition)
        active = bool(getattr(event, "ActiveState/Id", False))
        if active and getattr(event, "Retain", True) is not False:
            if key not in self._active:
                self._order += 1
            code = getattr(event, ERROR_CODE, None)
            self._active[key] = (self._order, "" if code is None else str(code))
        else:
            self._active.pop(key, None)

    @property
    def count(self) -> int:
        """How many alarms are active."""
        return len(self._active)

    @property
    def latest_code(self) -> str | None:
        """The ErrorCode of the alarm activated last ("" when it has none); None: none."""
        if not self._active:
            return None
        return max(self._active.values())[1]

    def value(self, count: bool) -> int | float | Missing:
        """The ``faults`` preset's value (``count``), else the ``fault_code`` preset's."""
        if not self.known:
            return Missing(OpcuaMissingReason.NO_VALUE, "the active alarms are not known yet")
        latest = self.latest_code
        if count or latest is None:
            return self.count if count else 0
        code = number(latest)
        if code is None:
            detail = f"the latest alarm's ErrorCode {latest!r} is not a number"
            return Missing(OpcuaMissingReason.UNMAPPED, detail)
        return code


async def subscribe_alarms(client: Client, subscription: Subscription, notifier: Node) -> None:
    """Monitor ``notifier``'s alarm events (``ErrorCode`` included where the server has the
    MachineTool namespace) and the end of a refresh (on the Server object too, where some
    servers emit it), then ask for the conditions already active."""
    alarm_type = client.get_node(ObjectIds.AlarmConditionType)
    refresh_end = client.get_node(ObjectIds.RefreshEndEventType)
    event_filter = await get_filter_from_event_type([alarm_type, refresh_end])
    namespaces = await client.get_namespace_array()
    if MACHINE_TOOL_NS in namespaces:
        code = ua.SimpleAttributeOperand()
        code.TypeDefinitionId = ua.NodeId(ua.Int32(ObjectIds.BaseEventType))
        code.BrowsePath = [ua.QualifiedName(ERROR_CODE, namespaces.index(MACHINE_TOOL_NS))]
        code.AttributeId = AttributeIds.Value
        event_filter.SelectClauses.append(code)
    await subscription.subscribe_events(notifier, [alarm_type, refresh_end], event_filter)
    if notifier.nodeid != client.nodes.server.nodeid:
        await subscription.subscribe_events(client.nodes.server, refresh_end)
    await client.get_node(ObjectIds.ConditionType).call_method(
        ua.NodeId(ua.Int32(ObjectIds.ConditionType_ConditionRefresh)),
        ua.Variant(subscription.subscription_id, ua.VariantType.UInt32),
    )
