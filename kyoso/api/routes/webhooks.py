"""Webhook subscriptions of the caller's API key, and their delivery logs.

Every key may subscribe, to what it may read: a platform key to regional events (shared
capacity, as ``/v1/capacity`` shows it), a factory key to its own factory's. A key sees and
deletes its own subscriptions only: another key's is answered exactly as one that does not
exist (404).
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, Request, status

from ..deps import ERRORS, Caller, Service, invalid
from ..keys import Principal, ScopeKind
from ..schemas import Problem
from ..service import CapacityService
from ..webhook_delivery import TargetRefusedError, target
from ..webhook_schemas import (
    DeliveryList,
    DeliveryOut,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookOut,
)
from ..webhook_store import Subscription, WebhookSpec
from ..webhooks import WebhookHub

router = APIRouter(prefix="/v1", responses=ERRORS, tags=["webhooks"])

WebhookId = Annotated[
    str,
    Path(
        pattern=r"^wh_[0-9a-f]{24}$",
        description="The subscription's id.",
        examples=["wh_5f0c2a9e41b7d3c86a1e0f42"],
    ),
]
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": Problem, "description": "No such subscription (of this key)."}
}


def _hub(request: Request) -> WebhookHub:
    hub: WebhookHub = request.app.state.webhooks
    return hub


def _time(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def _out(sub: Subscription) -> WebhookOut:
    spec = sub.spec
    threshold = None
    if spec.min_available_h is not None:
        threshold = {"min_available_h": spec.min_available_h, "horizon_h": spec.horizon_h}
    return WebhookOut.model_validate(
        {
            "id": sub.id,
            "url": spec.url,
            "events": list(spec.events),
            "description": spec.description,
            "factory": spec.factory,
            "process": spec.process,
            "threshold": threshold,
            "machines": [f"{f}/{m}" for f, m in spec.machines],
            "created_at": _time(sub.created_at),
        }
    )


async def _spec(
    body: WebhookIn, service: CapacityService, caller: Principal, hub: WebhookHub
) -> WebhookSpec:
    """The subscription ``body`` asks for, checked against what the key may see: a factory
    or machine it may not see is answered as one that does not exist."""
    own = caller.factory if caller.scope.kind is ScopeKind.FACTORY else None
    known = await service.factories()
    if body.factory is not None and (body.factory not in known or own not in (None, body.factory)):
        raise invalid(("body", "factory"), f"no factory {body.factory!r}")
    for i, ref in enumerate(body.machines):
        factory, _, name = ref.partition("/")
        machine = None
        if factory in known and own in (None, factory):
            machine = (await service.view(factory)).machines.get(name)
        platform = caller.scope.kind is ScopeKind.PLATFORM
        if machine is None or (platform and not machine.description.sharing.capacity):
            raise invalid(("body", "machines", str(i)), f"no machine {ref!r}")
    try:
        await target(body.url, allow_private=hub.settings.allow_private_targets)
    except TargetRefusedError as exc:
        raise invalid(("body", "url"), str(exc)) from None
    threshold = body.threshold
    return WebhookSpec(
        url=body.url,
        events=tuple(dict.fromkeys(body.events)),
        factory=own or body.factory,
        process=None if body.process is None else body.process.value,
        min_available_h=None if threshold is None else threshold.min_available_h,
        horizon_h=24.0 if threshold is None else threshold.horizon_h,
        machines=tuple((f, m) for f, _, m in (r.partition("/") for r in body.machines)),
        description=body.description,
    )


@router.post(
    "/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses={409: {"model": Problem, "description": "The key has its most subscriptions."}},
)
async def create_webhook(
    *, request: Request, body: WebhookIn, service: Service, caller: Caller
) -> WebhookCreated:
    """Subscribe the caller's key: events of ``events`` are posted to ``url``, signed with
    the ``secret`` of the answer (shown only now; docs/api.md, "Webhooks", says how to
    verify). It is told of changes from now on: a threshold crossed, a factory going
    offline or online, a watched machine going down or up. A factory key's subscription
    is always of its own factory."""
    hub = _hub(request)
    spec = await _spec(body, service, caller, hub)
    sub, stored = await hub.subscribe(caller, spec)
    if not stored:
        limit = hub.settings.max_subscriptions_per_key
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"this key has {limit} subscriptions, the most it may have: delete one first",
        )
    return WebhookCreated(**_out(sub).model_dump(), secret=sub.secret)


@router.get("/webhooks", response_model=WebhookList)
async def list_webhooks(request: Request, caller: Caller) -> WebhookList:
    """The caller's key's subscriptions, oldest first (not their secrets)."""
    return WebhookList([_out(s) for s in await _hub(request).subscriptions(caller)])


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut, responses=_NOT_FOUND)
async def get_webhook(request: Request, webhook_id: WebhookId, caller: Caller) -> WebhookOut:
    """One of the caller's key's subscriptions."""
    sub = await _hub(request).subscription(caller, webhook_id)
    if sub is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}")
    return _out(sub)


@router.delete(
    "/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND
)
async def delete_webhook(request: Request, webhook_id: WebhookId, caller: Caller) -> None:
    """Delete the subscription, with its log and the deliveries not yet made."""
    if not await _hub(request).unsubscribe(caller, webhook_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}")


@router.get("/webhooks/{webhook_id}/deliveries", response_model=DeliveryList, responses=_NOT_FOUND)
async def list_webhook_deliveries(
    request: Request,
    webhook_id: WebhookId,
    caller: Caller,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 100,
) -> DeliveryList:
    """The subscription's latest deliveries, newest first: each event's attempts, the
    last status code or error, when it is tried next or was delivered. Delivered and
    failed ones are kept for ``log_retention_days``."""
    found = await _hub(request).deliveries(caller, webhook_id, limit)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id!r}")
    return DeliveryList(
        [
            DeliveryOut(
                event_id=d.event_id,
                type=d.type,
                status=d.status,
                attempts=d.attempts,
                status_code=d.status_code,
                error=d.error,
                created_at=_time(d.created_at),
                next_attempt_at=_time(d.next_attempt_at) if d.next_attempt_at else None,
                delivered_at=(
                    _time(d.finished_at) if d.finished_at and d.status == "delivered" else None
                ),
            )
            for d in found
        ]
    )
