"""The Kyoso message contract, shared by gateway, simulators, ingest and API.

It imports only the standard library and pydantic, so any component (or an integrator's
gateway) can depend on it alone. See docs/contract.md for the wire format.
"""

from .calendar import Break, Maintenance, Shift, ShiftCalendar
from .capabilities import Capability, Material, Process
from .ids import ID_PATTERN, NAME_PATTERN, Id, InvalidIdError, Name, check_id, check_name
from .messages import (
    COUNTER_GOOD,
    COUNTER_REJECT,
    MAX_INTERVAL_S,
    MAX_MESSAGE_BYTES,
    MAX_SAMPLES_PER_BATCH,
    SCHEMA_VERSION,
    ContractError,
    Counter,
    DeadLetterReason,
    GatewayStatus,
    MachineDescription,
    Message,
    Sample,
    SampleBatch,
    Sharing,
    SignalStats,
    decode,
    encode,
)
from .states import ISO_22400_ELEMENT, MachineState
from .topics import (
    ROOT,
    SUBSCRIPTIONS,
    Topic,
    TopicError,
    TopicKind,
    machine_topic,
    parse_topic,
    samples_topic,
    status_topic,
)

__all__ = [
    "COUNTER_GOOD",
    "COUNTER_REJECT",
    "ID_PATTERN",
    "ISO_22400_ELEMENT",
    "MAX_INTERVAL_S",
    "MAX_MESSAGE_BYTES",
    "MAX_SAMPLES_PER_BATCH",
    "NAME_PATTERN",
    "ROOT",
    "SCHEMA_VERSION",
    "SUBSCRIPTIONS",
    "Break",
    "Capability",
    "ContractError",
    "Counter",
    "DeadLetterReason",
    "GatewayStatus",
    "Id",
    "InvalidIdError",
    "MachineDescription",
    "MachineState",
    "Maintenance",
    "Material",
    "Message",
    "Name",
    "Process",
    "Sample",
    "SampleBatch",
    "Sharing",
    "Shift",
    "ShiftCalendar",
    "SignalStats",
    "Topic",
    "TopicError",
    "TopicKind",
    "check_id",
    "check_name",
    "decode",
    "encode",
    "machine_topic",
    "parse_topic",
    "samples_topic",
    "status_topic",
]
