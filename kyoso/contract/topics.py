"""The MQTT topic namespace.

Every topic sits under one root, factory first, then gateway::

    kyoso/v1/<factory>/<gateway>/samples              sample batches, QoS 1
    kyoso/v1/<factory>/<gateway>/status               gateway status, retained, last will
    kyoso/v1/<factory>/<gateway>/machines/<machine>   machine description, retained
    kyoso/v1/<factory>/<gateway>/stored/<worker>      store receipt of an ingest worker,
                                                      retained (the ingest publishes it)

so that one broker ACL line per gateway (``topic write kyoso/v1/<factory>/<gateway>/#``)
confines it to its own factory, and a factory-wide reader needs one line too.
"""

from dataclasses import dataclass
from enum import StrEnum

from .ids import InvalidIdError, check_id

ROOT = "kyoso/v1"


class TopicKind(StrEnum):
    """What a topic carries."""

    SAMPLES = "samples"
    STATUS = "status"
    MACHINE = "machines"
    STORED = "stored"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed Kyoso topic."""

    kind: TopicKind
    factory: str
    gateway: str
    machine: str | None = None
    """The machine a description topic is about."""
    worker: str | None = None
    """The ingest worker a store receipt topic is from."""

    def __str__(self) -> str:
        base = f"{ROOT}/{self.factory}/{self.gateway}/{self.kind.value}"
        leaf = self.machine if self.machine is not None else self.worker
        return f"{base}/{leaf}" if leaf is not None else base


class TopicError(ValueError):
    """A topic outside the Kyoso namespace or with invalid ids."""


def samples_topic(factory: str, gateway: str) -> str:
    """The topic a gateway publishes its sample batches on."""
    return str(Topic(TopicKind.SAMPLES, check_id(factory, "factory"), check_id(gateway, "gateway")))


def status_topic(factory: str, gateway: str) -> str:
    """The retained topic of a gateway's status and last will."""
    return str(Topic(TopicKind.STATUS, check_id(factory, "factory"), check_id(gateway, "gateway")))


def machine_topic(factory: str, gateway: str, machine: str) -> str:
    """The retained topic of a machine's description."""
    return str(
        Topic(
            TopicKind.MACHINE,
            check_id(factory, "factory"),
            check_id(gateway, "gateway"),
            check_id(machine, "machine"),
        )
    )


def stored_topic(factory: str, gateway: str, worker: str) -> str:
    """The retained topic of an ingest worker's store receipt for a gateway."""
    return str(
        Topic(
            TopicKind.STORED,
            check_id(factory, "factory"),
            check_id(gateway, "gateway"),
            worker=check_id(worker, "worker"),
        )
    )


def receipts_filter(factory: str, gateway: str) -> str:
    """The filter a gateway reads every ingest worker's receipts for it with."""
    return f"{samples_topic(factory, gateway).rpartition('/')[0]}/{TopicKind.STORED.value}/+"


SUBSCRIPTIONS = (
    f"{ROOT}/+/+/{TopicKind.SAMPLES.value}",
    f"{ROOT}/+/+/{TopicKind.STATUS.value}",
    f"{ROOT}/+/+/{TopicKind.MACHINE.value}/+",
    f"{ROOT}/+/+/{TopicKind.STORED.value}/+",
)
"""The filters a region-wide subscriber (the ingest) uses: the last, the receipts of every
ingest worker, so that each worker knows what the others stored."""


def parse_topic(topic: str) -> Topic:
    """Parse a Kyoso topic, or raise :class:`TopicError` saying what is wrong."""
    prefix = ROOT + "/"
    if not topic.startswith(prefix):
        raise TopicError(f"topic {topic[:200]!r} is not under {ROOT!r}")
    levels = topic[len(prefix) :].split("/")
    try:
        if len(levels) == 3 and levels[2] in (TopicKind.SAMPLES, TopicKind.STATUS):
            return Topic(
                TopicKind(levels[2]),
                check_id(levels[0], "factory"),
                check_id(levels[1], "gateway"),
            )
        if len(levels) == 4 and levels[2] == TopicKind.MACHINE:
            return Topic(
                TopicKind.MACHINE,
                check_id(levels[0], "factory"),
                check_id(levels[1], "gateway"),
                check_id(levels[3], "machine"),
            )
        if len(levels) == 4 and levels[2] == TopicKind.STORED:
            return Topic(
                TopicKind.STORED,
                check_id(levels[0], "factory"),
                check_id(levels[1], "gateway"),
                worker=check_id(levels[3], "worker"),
            )
    except InvalidIdError as exc:
        raise TopicError(f"topic {topic[:200]!r}: {exc}") from exc
    raise TopicError(
        f"topic {topic[:200]!r} is not a Kyoso samples, status, machine or stored topic"
    )
