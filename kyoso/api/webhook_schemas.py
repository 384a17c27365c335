"""The webhook routes' request and response bodies (kyoso/api/routes/webhooks.py), and the
event types a subscription may ask for."""

from datetime import datetime
from typing import Annotated, Final, Literal, Self

from pydantic import AfterValidator, Field, RootModel, model_validator

from kyoso.contract import Id, Process, check_id

from .deps import MAX_HORIZON_H
from .schemas import Body

__all__ = [
    "MAX_URL_LENGTH",
    "DeliveryList",
    "DeliveryOut",
    "EventType",
    "ThresholdIn",
    "WebhookCreated",
    "WebhookIn",
    "WebhookList",
    "WebhookOut",
]

EventType = Literal[
    "capacity.threshold",
    "factory.offline",
    "factory.online",
    "machine.down",
    "machine.up",
    "hold.created",
    "hold.confirmed",
    "hold.released",
    "hold.expired",
]
"""Every event a subscription may ask for; one sent by another feature
(:meth:`kyoso.api.webhooks.WebhookHub.emit`) is added here."""

MAX_URL_LENGTH: Final = 2048
_MACHINE_EVENTS: Final = {"machine.down", "machine.up"}


def _machine_ref(value: str) -> str:
    factory, slash, machine = value.partition("/")
    if not slash:
        raise ValueError("a watched machine is written factory/machine")
    check_id(factory, "factory id")
    check_id(machine, "machine id")
    return value


MachineRef = Annotated[
    str,
    AfterValidator(_machine_ref),
    Field(description="A machine, as factory/machine.", examples=["okada-machining/cnc-01"]),
]


class ThresholdIn(Body):
    """At least ``min_available_h`` available machine-hours of the subscription's process
    within ``horizon_h`` hours from now."""

    min_available_h: float = Field(
        gt=0, le=100_000, description="Available machine-hours, at least.", examples=[40.0]
    )
    horizon_h: float = Field(
        24.0, gt=0, le=MAX_HORIZON_H, description="Hours from now.", examples=[168.0]
    )


class _WebhookFields(Body):
    url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="Where events are posted: https, to a public address.",
        examples=["https://platform.example/hooks/kyoso"],
    )
    events: list[EventType] = Field(
        min_length=1,
        max_length=20,
        description="The event types to send.",
        examples=[["capacity.threshold", "factory.offline", "factory.online"]],
    )
    description: str = Field(
        "", max_length=200, description="What it is for, for people.", examples=["orders desk"]
    )
    factory: Id | None = Field(
        None,
        description="Only events of this factory (a factory key: its own, always); the "
        "threshold at this factory instead of region-wide.",
        examples=["okada-machining"],
    )
    process: Process | None = Field(
        None,
        description="The threshold's capability; events of another one are not sent.",
        examples=["cnc_milling_5axis"],
    )
    threshold: ThresholdIn | None = Field(
        None, description="For capacity.threshold: when available hours cross it."
    )
    machines: list[MachineRef] = Field(
        default_factory=list,
        max_length=100,
        description="For machine.down and machine.up: the machines to watch (a platform "
        "key: machines whose capacity is shared).",
        examples=[["okada-machining/cnc-01"]],
    )


class WebhookIn(_WebhookFields):
    """A subscription to make."""

    @model_validator(mode="after")
    def _filters_fit_the_events(self) -> Self:
        events = set(self.events)
        wants_threshold = "capacity.threshold" in events
        if wants_threshold != (self.threshold is not None):
            raise ValueError(
                "capacity.threshold needs a threshold, and a threshold needs capacity.threshold"
            )
        if wants_threshold and self.process is None:
            raise ValueError("capacity.threshold needs the process whose hours it counts")
        if bool(events & _MACHINE_EVENTS) != bool(self.machines):
            raise ValueError("machine.down and machine.up need machines, and machines need them")
        for ref in self.machines:
            if self.factory is not None and not ref.startswith(f"{self.factory}/"):
                raise ValueError(f"machine {ref!r} is not of factory {self.factory!r}")
        return self


class WebhookOut(_WebhookFields):
    """A subscription."""

    id: str = Field(description="Its id.", examples=["wh_5f0c2a9e41b7d3c86a1e0f42"])
    created_at: datetime = Field(
        description="When it was made (UTC).", examples=["2026-03-02T09:15:00Z"]
    )


class WebhookCreated(WebhookOut):
    """A subscription just made, with its signing secret: shown this once."""

    secret: str = Field(
        description="Verifies the Kyoso-Signature of each delivery; shown only now.",
        examples=["whsec_Yq3o0n1cN0xJ5nQm3a6Y1m2s4b7d9f0h2j4l6n8p0r2"],
    )


class WebhookList(RootModel[list[WebhookOut]]):
    """The key's subscriptions, oldest first."""


class DeliveryOut(Body):
    """One event for the subscription, and how its delivery went."""

    event_id: str = Field(
        description="The event's id (Kyoso-Webhook-Id).", examples=["evt_9b1d0c2e7a4f5b6c8d9e0f1a"]
    )
    type: str = Field(description="The event's type.", examples=["factory.offline"])
    status: Literal["pending", "delivered", "failed"] = Field(
        description="pending until answered 2xx (delivered) or out of attempts (failed).",
        examples=["delivered"],
    )
    attempts: int = Field(description="Attempts made.", examples=[1])
    status_code: int | None = Field(
        description="The last attempt's HTTP status; null: no answer.", examples=[200]
    )
    error: str | None = Field(
        description="Why the last attempt failed; null: it did not.",
        examples=["no answer within 10 s"],
    )
    created_at: datetime = Field(
        description="When the event happened (UTC).", examples=["2026-03-02T09:15:00Z"]
    )
    next_attempt_at: datetime | None = Field(
        description="When it is tried next, while pending.", examples=["2026-03-02T09:17:00Z"]
    )
    delivered_at: datetime | None = Field(
        description="When its receiver answered 2xx.", examples=["2026-03-02T09:15:01Z"]
    )


class DeliveryList(RootModel[list[DeliveryOut]]):
    """A subscription's latest deliveries, newest first."""
