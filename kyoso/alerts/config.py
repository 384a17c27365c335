"""The configuration of ``kyoso alerts``: one YAML file, validated as one pydantic tree.

One file serves one factory or a whole region: per factory watched, the API key that reads
its figures (a ``factory:<id>`` key: it sees its own machines and nothing else), its
recipients with their channels (apprise URLs), language and quiet hours, its rules, and its
BCP agreement. Secrets stay out of the file: ``${NAME}`` in any value is replaced by the
environment variable ``NAME`` (an unknown name is an error), so API keys, SMTP passwords
and LINE tokens live in the environment. :func:`load_config` reports every problem with its
line in the file.
"""

from collections.abc import Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Final, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import apprise
from pydantic import Field, SecretStr, field_validator, model_validator

from kyoso.contract import Id, Process
from kyoso.i18n import Lang
from kyoso.validation import ConfigError, ConfigModel, load_yaml_model

__all__ = [
    "RULES",
    "AlertsConfig",
    "ApiConnection",
    "BcpConfig",
    "CapacityBelowRule",
    "DeliveryConfig",
    "FactoryAlerts",
    "OrderAtRiskRule",
    "QuietHours",
    "Recipient",
    "RuleConfig",
    "RuleName",
    "RulesConfig",
    "load_config",
]

RuleName = Literal[
    "machine_down", "gateway_offline", "capacity_below", "order_at_risk", "partner_down"
]
RULES: Final[tuple[RuleName, ...]] = (
    "machine_down",
    "gateway_offline",
    "capacity_below",
    "order_at_risk",
    "partner_down",
)
"""Every rule, in the order a look evaluates them."""


class QuietHours(ConfigModel):
    """Hours of the factory's day when a recipient is not disturbed: messages are held and
    sent as one digest when they end (an urgent rule's are not held)."""

    start: time = Field(description="When they begin, local time (HH:MM).")
    end: time = Field(description="When they end, local time (HH:MM); before start: overnight.")

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("start and end are the same time: no quiet hours, or all day?")
        return self

    def end_after(self, local: datetime) -> datetime | None:
        """When the quiet hours ``local`` (an aware time) falls in end; None when it falls
        in none."""
        today = local.replace(second=0, microsecond=0)
        for day in (-1, 0):  # a stretch that began yesterday, or today
            start = datetime.combine(today.date() + timedelta(days=day), self.start, local.tzinfo)
            end = datetime.combine(start.date(), self.end, local.tzinfo)
            if end <= start:
                end += timedelta(days=1)
            if start <= local < end:
                return end
        return None


class Recipient(ConfigModel):
    """A person told of the factory's alerts, on each of their channels."""

    name: str = Field(
        min_length=1, max_length=100, description="Who it is (in logs and the state file)."
    )
    lang: Lang = Field(default="ja", description="The language of their messages: ja or en.")
    urls: list[SecretStr] = Field(
        min_length=1,
        description="Their channels, apprise URLs: mailtos://, line://, slack://, json://...",
    )
    quiet_hours: QuietHours | None = Field(
        default=None, description="Hold messages during these hours; null: never."
    )

    @field_validator("urls")
    @classmethod
    def _known_to_apprise(cls, urls: list[SecretStr]) -> list[SecretStr]:
        for index, url in enumerate(urls):
            if apprise.Apprise.instantiate(url.get_secret_value()) is None:
                scheme = urlsplit(url.get_secret_value()).scheme or "no scheme"
                # The URL itself may hold a password or token: name its scheme only.
                raise ValueError(
                    f"urls.{index}: not a notification URL apprise can use ({scheme}://...; "
                    "see https://github.com/caronc/apprise/wiki)"
                )
        return urls


class RuleConfig(ConfigModel):
    """When a rule fires, and how loudly."""

    enabled: bool = Field(default=True, description="Evaluate the rule.")
    after_min: float = Field(
        default=10.0, ge=0, le=10_080, description="Minutes its condition must hold to fire."
    )
    repeat_min: float | None = Field(
        default=None, gt=0, description="Remind this often while it fires; null: never."
    )
    urgent: bool = Field(default=False, description="Sent during quiet hours too.")


class CapacityBelowRule(RuleConfig):
    """Available hours of a process over a horizon below a threshold."""

    horizon_h: float = Field(
        default=24.0, gt=0, le=744, description="Hours ahead the available hours are summed."
    )
    below_h: dict[Process, float] = Field(
        default_factory=dict,
        description="Process -> fire when its available hours are below this.",
    )

    @field_validator("below_h")
    @classmethod
    def _positive(cls, below: dict[Process, float]) -> dict[Process, float]:
        for process, hours in below.items():
            if not 0 < hours < 100_000:
                raise ValueError(f"{process}: {hours} h is not a threshold (0 < hours < 100000)")
        return below


class OrderAtRiskRule(RuleConfig):
    """A booked order or a confirmed hold on a machine that is down."""

    within_h: float = Field(
        default=24.0, gt=0, le=744, description="Orders starting within this many hours count."
    )


class RulesConfig(ConfigModel):
    """The factory's rules; each is on with its defaults unless said otherwise."""

    machine_down: RuleConfig = Field(default_factory=RuleConfig)
    gateway_offline: RuleConfig = Field(default_factory=RuleConfig)
    capacity_below: CapacityBelowRule = Field(default_factory=CapacityBelowRule)
    order_at_risk: OrderAtRiskRule = Field(default_factory=lambda: OrderAtRiskRule(urgent=True))


class BcpConfig(ConfigModel):
    """The factory's BCP agreement. Nothing of one factory reaches another unless both say
    so: the protected factory names its backup in ``backups``, and the backup opts in with
    ``partner_down: true`` and the factory in ``partners``."""

    backups: list[Id] = Field(
        default_factory=list,
        description="Factories that may be told when one of our machines is down.",
    )
    partner_down: bool = Field(
        default=False, description="Tell us when a machine of a partner we back up is down."
    )
    partners: list[Id] = Field(
        default_factory=list, description="The factories we back up (with partner_down)."
    )
    after_min: float = Field(
        default=10.0, ge=0, le=10_080, description="Minutes a partner's machine is down first."
    )

    @model_validator(mode="after")
    def _opted_in(self) -> Self:
        if self.partners and not self.partner_down:
            raise ValueError("partners are named but partner_down is false: set it to true")
        if self.partner_down and not self.partners:
            raise ValueError("partner_down needs the partners this factory backs up")
        return self


class FactoryAlerts(ConfigModel):
    """One factory watched: how to read it, whom to tell, and when."""

    api_key: SecretStr = Field(
        min_length=1, description="Its factory:<id> API key; write ${NAME} for a variable."
    )
    timezone: str | None = Field(
        default=None,
        description="Its time zone (quiet hours, times in messages); null: its machines' "
        "calendar's, as the API serves it.",
    )
    recipients: list[Recipient] = Field(default_factory=list, description="Whom to tell.")
    rules: RulesConfig = Field(default_factory=RulesConfig)
    bcp: BcpConfig = Field(default_factory=BcpConfig)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {zone!r} (an IANA name: Asia/Tokyo)") from None
        return zone

    @field_validator("recipients")
    @classmethod
    def _distinct(cls, recipients: list[Recipient]) -> list[Recipient]:
        names = [r.name for r in recipients]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"recipient names must be distinct: {', '.join(twice)}")
        return recipients


class ApiConnection(ConfigModel):
    """The Kyoso API the alerts read."""

    url: str = Field(
        default="http://127.0.0.1:8000",
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        description="Its base URL.",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="Per request.")


class DeliveryConfig(ConfigModel):
    """How a message that could not be delivered is tried again."""

    retry_base_s: float = Field(
        default=30.0, gt=0, description="First retry after this long; each next x2."
    )
    retry_max_s: float = Field(
        default=3600.0, gt=0, description="The longest wait between attempts."
    )
    max_attempts: int = Field(
        default=20, ge=1, description="Attempts before a message is marked failed (logged)."
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="Per attempt.")


class AlertsConfig(ConfigModel):
    """The whole file."""

    api: ApiConnection = Field(default_factory=ApiConnection)
    interval_s: float = Field(default=30.0, ge=1, le=3600, description="Seconds between looks.")
    state_path: Path = Field(
        default=Path("var/alerts.sqlite3"),
        description="SQLite file of alerts firing and messages not yet sent.",
    )
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    factories: dict[Id, FactoryAlerts] = Field(
        min_length=1, description="The factories watched, by id."
    )

    @field_validator("factories")
    @classmethod
    def _agreements_name_watched_factories(
        cls, factories: dict[str, FactoryAlerts]
    ) -> dict[str, FactoryAlerts]:
        problems = []
        for name, factory in factories.items():
            for part, named in (
                ("backups", factory.bcp.backups),
                ("partners", factory.bcp.partners),
            ):
                for other in named:
                    if other == name:
                        problems.append(f"{name}.bcp.{part} names the factory itself")
                    elif other not in factories:
                        problems.append(
                            f"{name}.bcp.{part} names {other!r}, which this file does not watch "
                            "(its key and recipients are needed)"
                        )
        if problems:
            raise ValueError("; ".join(problems))
        return factories

    def backups_agreed(self, protected: str) -> list[str]:
        """The backups that may hear of ``protected``'s machines: named in its
        ``bcp.backups`` and opted in, ``protected`` among their ``bcp.partners``."""
        return [
            backup
            for backup in self.factories[protected].bcp.backups
            if protected in self.factories[backup].bcp.partners
        ]

    def one_sided(self) -> list[str]:
        """Each half of an agreement the other side has not made (nothing is sent for it)."""
        found = []
        for name, factory in self.factories.items():
            for backup in factory.bcp.backups:
                if name not in self.factories[backup].bcp.partners:
                    found.append(f"{name} names {backup} as a backup, which has not opted in")
            for partner in factory.bcp.partners:
                if name not in self.factories[partner].bcp.backups:
                    found.append(f"{name} backs up {partner}, which does not name it a backup")
        return found


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> AlertsConfig:
    """The configuration at ``path``, ``${NAME}`` substituted from ``environ`` (default: the
    process's); :class:`ConfigError` lists every problem at its line."""
    return load_yaml_model(AlertsConfig, path, ConfigError, environ)
