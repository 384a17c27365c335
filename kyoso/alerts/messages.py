"""The words of an alert, in the recipient's language, at the factory's local time.

Every message comes from the catalog section ``alert`` (kyoso/i18n): a title and a body per
rule and per event (fired, recovered), a reminder's prefix, and the digest that gathers what
quiet hours held. The facts a message needs are kept with the alert as JSON (so that a
recovery after a restart still names what fired); times are Unix seconds, shown in the
factory's time zone.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from kyoso.i18n import Lang, text

__all__ = ["Event", "digest", "local_time", "render"]

Event = Literal["fired", "reminder", "recovered"]


def local_time(at: float, lang: Lang, zone: ZoneInfo) -> str:
    """``at`` (Unix seconds) as the factory's clock shows it: ``3月14日 08:05``."""
    moment = datetime.fromtimestamp(at, UTC).astimezone(zone)
    return text("alert.at", lang, month=moment.month, day=moment.day, time=moment.strftime("%H:%M"))


def _hours(value: float | None, lang: Lang) -> str:
    if value is None:
        return text("alert.all_planned", lang)
    return text("alert.hours", lang, hours=f"{round(value, 1):g}")


def _orders(orders: Sequence[Mapping[str, Any]], lang: Lang, zone: ZoneInfo) -> str:
    lines = []
    for order in orders:
        values = {
            "start": local_time(order["start"], lang, zone),
            "end": local_time(order["end"], lang, zone),
            "hours": _hours(order["hours"], lang),
        }
        if order["ref"] is None:
            lines.append(text("alert.order_booking", lang, **values))
        else:
            lines.append(text("alert.order_hold", lang, ref=order["ref"], **values))
    return "\n".join(lines)


def _cover(cover: Sequence[Mapping[str, Any]], lang: Lang) -> str:
    lines = []
    for need in cover:
        candidates = text("alert.list_separator", lang).join(
            text("alert.candidate", lang, factory=factory, hours=_hours(available, lang))
            for factory, available in need["candidates"]
        )
        lines.append(
            text(
                "alert.cover_line",
                lang,
                process=text(f"process.{need['process']}", lang),
                hours=_hours(need["hours"], lang),
                candidates=candidates or text("alert.no_candidate", lang),
            )
        )
    return "\n".join(lines) or text("alert.no_cover", lang)


def render(
    rule: str,
    event: Event,
    facts: Mapping[str, Any],
    lang: Lang,
    zone: ZoneInfo,
    *,
    since: float,
    at: float,
) -> tuple[str, str]:
    """The title and body of ``rule``'s ``event``: it held since ``since``; it is ``at``."""
    key = "factory_offline" if rule == "gateway_offline" and not facts["gateway"] else rule
    values: dict[str, Any] = {
        **{k: v for k, v in facts.items() if isinstance(v, str | int | float)},
        "since": local_time(since, lang, zone),
        "at": local_time(at, lang, zone),
        "minutes": max(round((at - since) / 60), 0),
    }
    if "process" in facts:
        values["process"] = text(f"process.{facts['process']}", lang)
    if "cause" in facts:
        values["cause"] = text(f"alert.cause_{facts['cause']}", lang)
    if "available_h" in facts:
        values["available"] = _hours(facts["available_h"], lang)
        values["below"] = _hours(facts["below_h"], lang)
    if "processes" in facts:
        values["processes"] = text("alert.list_separator", lang).join(
            text(f"process.{p}", lang) for p in facts["processes"]
        )
    if "orders" in facts:
        values["count"] = len(facts["orders"])
        values["orders"] = _orders(facts["orders"], lang, zone)
    if "cover" in facts:
        values["cover"] = _cover(facts["cover"], lang)
    suffix = "_recovered" if event == "recovered" else ""
    title = text(f"alert.{key}{suffix}_title", lang, **values)
    body = text(f"alert.{key}{suffix}_body", lang, **values)
    if event == "reminder":
        title = text("alert.reminder", lang, title=title)
    return title, body


def digest(factory: str, items: Sequence[tuple[str, str]], lang: Lang) -> tuple[str, str]:
    """One message for the (title, body) items that quiet hours held."""
    title = text("alert.digest_title", lang, factory=factory, count=len(items))
    body = "\n\n".join(text("alert.digest_item", lang, title=t, body=b) for t, b in items)
    return title, f"{text('alert.digest_intro', lang)}\n\n{body}"
