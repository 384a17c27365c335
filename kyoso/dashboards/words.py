"""The words of the dashboards: one builder, two languages, every word from the catalog.

A dashboard is built once per language from the same code: its queries, field names,
mappings' keys and layout are the same in both, and only what a person reads changes
(titles, descriptions, variable labels, column headers and legends, value mapping texts,
units' suffixes, links). The words are the ``dashboard`` section of :mod:`kyoso.i18n`; the
machine states' names are its ``state`` section. English keeps the uids it always had
(``kyoso-plant``), so links to them keep working; every other language's uid ends in the
language (``kyoso-plant-ja``).
"""

from collections.abc import Iterable
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog import builder
from grafana_foundation_sdk.models import dashboard as models

from kyoso.i18n import DEFAULT, LANGUAGES, Lang, text

__all__ = ["STATE_COLORS", "Words", "uid"]

STATE_COLORS = {
    "running": "green",
    "setup": "blue",
    "down": "red",
    "idle": "yellow",
    "planned_stop": "#8e8e8e",
    "unknown": "#404040",
}
"""The contract's machine states and their colours."""


def uid(base: str, lang: Lang) -> str:
    """The uid of a dashboard in ``lang``: English keeps ``base``, others add the language."""
    return base if lang == DEFAULT else f"{base}-{lang}"


class _Overridable(Protocol):
    def override_by_name(self, name: str, properties: list[models.DynamicConfigValue]) -> Self:
        """Grafana's field override by field name."""
        ...


_P = TypeVar("_P", bound=_Overridable)


class Words:
    """What a person reads on the dashboards in one language."""

    def __init__(self, lang: Lang) -> None:
        self.lang = lang

    def __call__(self, name: str, **values: object) -> str:
        """The message ``dashboard.<name>``."""
        return text(f"dashboard.{name}", self.lang, **values)

    def unit(self, name: str) -> str:
        """A Grafana unit that reads in this language: a suffix (``unit_hours``: `` h``,
        ``時間``) rather than Grafana's own English unit names, which also rescale hours
        into days."""
        return f"suffix:{self(name)}"

    def states(self) -> list[models.ValueMapping]:
        """The machine states' names (catalog section ``state``) and colours."""
        options = {
            state: models.ValueMappingResult(
                text=text(f"state.{state}", self.lang), color=color, index=i
            )
            for i, (state, color) in enumerate(STATE_COLORS.items())
        }
        return [models.ValueMap(options=options)]

    def yes_no(self) -> models.ValueMap:
        """Booleans read as yes (red: an offline flag) and no."""
        return models.ValueMap(
            options={
                "true": models.ValueMappingResult(text=self("yes"), color="red", index=0),
                "false": models.ValueMappingResult(text=self("no"), index=1),
            }
        )

    def columns(
        self,
        panel: _P,
        fields: Iterable[str],
        extra: dict[str, list[models.DynamicConfigValue]] | None = None,
    ) -> _P:
        """``panel`` with each field of ``fields`` headed (a column, a legend, an axis) by
        its catalog name ``column_<field>``, plus the ``extra`` properties of a field. The
        fields keep their query names, so transformations and tests read them unchanged;
        a transformation's names read as their field's (``down_h (sum)`` as ``down_h``,
        ``process\\factory`` as ``process_factory``)."""
        more = extra or {}
        for field in fields:
            name = self("column_" + field.replace(" (sum)", "").replace("\\", "_"))
            properties = [models.DynamicConfigValue("displayName", name), *more.get(field, [])]
            panel = panel.override_by_name(field, properties)
        return panel

    def links(self, base: str) -> list[builder.Builder[models.DashboardLink]]:
        """Links to the same dashboard in each other language, keeping time and variables."""
        return [
            dashboard.DashboardLink(text("dashboard.language_name", other))
            .type(models.DashboardLinkType.LINK)
            .url(f"/d/{uid(base, other)}")
            .tooltip(self("other_language"))
            .icon("dashboard")
            .keep_time(True)
            .include_vars(True)
            for other in LANGUAGES
            if other != self.lang
        ]
