"""Commissioning: list what an MTConnect agent offers, with each data item's value now.

``kyoso gateway probe --mtconnect URL`` prints every device and data item (id, name, type,
subType, category, units) with its current value, so a technician can write the ``fields``
of a machine's ``mtconnect`` source without the machine's manual.
"""

import asyncio
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from .mtconnect_xml import CONDITION_LEVELS, DataItem, MtconnectError, parse_probe, parse_streams


@dataclass(frozen=True, slots=True)
class ProbedItem:
    """A data item and its current value (a condition's: its level, e.g. Fault)."""

    item: DataItem
    value: str | None


async def probe(agent: str, device: str | None = None, timeout_s: float = 3.0) -> list[ProbedItem]:
    """Every data item of the agent's devices (or of ``device``) with its current value.
    Raises :class:`MtconnectError` for an agent that does not answer with MTConnect."""
    base = agent.rstrip("/") + (f"/{quote(device, safe='')}" if device else "")
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client, asyncio.timeout(timeout_s * 2):
            described = (await client.get(f"{base}/probe")).content
            current = (await client.get(f"{base}/current")).content
    except (httpx.HTTPError, TimeoutError) as exc:
        raise MtconnectError(f"{base}: {exc or 'no answer'}") from exc
    items = parse_probe(described)
    values: dict[str, str] = {}
    for observation in parse_streams(current).observations:
        value = observation.value
        if observation.category == "CONDITION":
            previous = values.get(observation.data_item_id, "Normal")
            if CONDITION_LEVELS.get(previous, 3) >= CONDITION_LEVELS.get(value, 3):
                value = previous  # several activations: show the most severe
        values[observation.data_item_id] = value
    return [ProbedItem(item, values.get(item.id)) for item in items]


def format_probe(items: list[ProbedItem]) -> str:
    """One block per device, one line per data item, columns aligned."""
    header = ("id", "name", "category", "type", "subType", "units", "value")
    lines: list[str] = []
    for device in dict.fromkeys(p.item.device for p in items):
        rows = [
            (
                p.item.id,
                p.item.name or "",
                p.item.category,
                p.item.type,
                p.item.sub_type or "",
                p.item.units or "",
                p.value if p.value is not None else "",
            )
            for p in items
            if p.item.device == device
        ]
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        if lines:
            lines.append("")
        lines.append(f"device {device}")
        lines.extend(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in (header, *rows)
        )
    return "\n".join(lines)
