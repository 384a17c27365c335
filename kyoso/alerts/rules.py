"""The rules: what of a look at a factory is worth telling someone. Pure functions of what
the API showed; the engine decides when a condition has held long enough to fire.

A machine counts as down when its state is ``down``, or when its capacity is withdrawn
because it cannot be seen: ``unreadable`` (heard, but its state unknown), or ``offline``
while its factory is not (a whole factory offline is one gateway alert, not one alert per
machine).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import CapacityBelowRule
from .reader import FactoryNow, Order

__all__ = [
    "Condition",
    "capacity_below",
    "gateway_offline",
    "machine_down",
    "orders_at_risk",
    "partner_down",
]


@dataclass(frozen=True, slots=True)
class Condition:
    """Something that holds now: a rule's subject, and the facts its message names."""

    subject: str
    facts: Mapping[str, Any]
    since: float | None = field(default=None)
    """When it began, if the API says (Unix seconds); None: when first seen."""


def machine_down(seen: FactoryNow) -> list[Condition]:
    """Machines that cannot work now (subject: the machine)."""
    found = []
    for m in seen.machines.values():
        if m.state == "down":
            cause = "down"
        elif m.withdrawn == "unreadable" or (m.withdrawn == "offline" and not seen.offline):
            cause = m.withdrawn
        else:
            continue
        facts = {"factory": seen.factory, "machine": m.machine, "name": m.name, "cause": cause}
        # A stop is timed from its samples; withdrawn for want of them, from when first seen.
        since = m.down_since.timestamp() if cause == "down" and m.down_since else None
        found.append(Condition(m.machine, facts, since))
    return found


def gateway_offline(seen: FactoryNow) -> list[Condition]:
    """Gateways offline (subject: the gateway, since it was last heard), or, when none is
    but the factory is offline all the same (its gateways report, no data comes), the
    factory as a whole (subject: empty)."""
    found = [
        Condition(g.gateway, {"factory": seen.factory, "gateway": g.gateway}, g.since.timestamp())
        for g in seen.gateways
        if not g.online
    ]
    if seen.offline and not found:
        found.append(Condition("", {"factory": seen.factory, "gateway": ""}))
    return found


def capacity_below(seen: FactoryNow, rule: CapacityBelowRule) -> list[Condition]:
    """Processes whose available hours over the horizon are below their threshold (subject:
    the process). A process the factory does not offer has no hours to be below."""
    return [
        Condition(
            process,
            {
                "factory": seen.factory,
                "process": process,
                "available_h": round(seen.available_h[process], 1),
                "below_h": below,
                "horizon_h": f"{rule.horizon_h:g}",
            },
        )
        for process, below in rule.below_h.items()
        if process in seen.available_h and seen.available_h[process] < below
    ]


def orders_at_risk(down: Sequence[Condition], orders: Sequence[Order]) -> list[Condition]:
    """Machines down with orders to work on (subject: the machine)."""
    found = []
    for machine in down:
        mine = [o for o in orders if o.machine == machine.subject]
        if mine:
            facts = {
                "factory": machine.facts["factory"],
                "machine": machine.subject,
                "name": machine.facts["name"],
                "orders": [
                    {
                        "ref": o.ref,
                        "start": o.start.timestamp(),
                        "end": o.end.timestamp(),
                        "hours": o.hours,
                    }
                    for o in mine
                ],
            }
            found.append(Condition(machine.subject, facts))
    return found


def partner_down(partner: FactoryNow, down: Sequence[Condition]) -> list[Condition]:
    """The partner's machines down, as a backup may hear of them (subject:
    ``<partner>/<machine>``): the machine's id and its processes, nothing else of it (the
    engine adds the hours at risk and the cover candidates)."""
    return [
        Condition(
            f"{partner.factory}/{m.subject}",
            {
                "partner": partner.factory,
                "machine": m.subject,
                "processes": list(partner.machines[m.subject].processes),
            },
        )
        for m in down
    ]
