"""The rules capacity is derived by: how much history teaches the expected load, when data
is too old to sell, how long a repair is expected to take, and how long figures are kept
before they are computed again."""

from datetime import timedelta

from pydantic import Field

from kyoso.validation import ConfigModel

__all__ = ["CapacityRules"]


class CapacityRules(ConfigModel):
    """How capacity is derived and how long its figures are kept (docs/api.md explains each):
    the ``capacity`` section of the API's settings."""

    lookback_days: int = Field(
        28, ge=1, le=365, description="History the expected load is learnt from."
    )
    stale_after_s: float = Field(
        300.0,
        gt=0,
        description="Data older than this withdraws a machine's capacity (reason offline).",
    )
    unreadable_after_s: float = Field(
        300.0,
        gt=0,
        description="A machine whose state has been unknown this long (its device does not "
        "answer) offers nothing (reason unreadable).",
    )
    min_history_h: float = Field(
        8.0,
        ge=0,
        description="A machine with less of its planned time observed in the lookback offers "
        "nothing (reason insufficient_history): one shift by default.",
    )
    minor_stop_max_s: float = Field(
        300.0,
        ge=0,
        description="A machine down for less than this is in a minor stop: only the rest of "
        "it is unattainable, not a repair (reason minor_stop).",
    )
    repair_estimate_s: float = Field(
        7200.0,
        ge=0,
        description="The prior of the repair time: a broken-down machine without breakdowns "
        "on record is expected back after this long (capacity/repair.py learns the rest).",
    )
    view_ttl_s: float = Field(
        0.5,
        ge=0,
        description="A factory's live view (machine states, offline flags, data ages) is "
        "read from the store at most this long before an answer: with a gateway polling "
        "every second, a state change reaches the API within 2 s.",
    )
    descriptions_ttl_s: float = Field(
        5.0,
        ge=0,
        description="A factory's machine descriptions (what is shared, capabilities, "
        "calendars) are read from the store at most this long before an answer: they "
        "change seldom, and read with every live view they cost as much as the rest of it.",
    )
    cache_ttl_s: float = Field(
        5.0,
        ge=0,
        description="No answer carries capacity figures computed longer ago than this; they "
        "are computed again at once when the live view's evidence changes (a state, a stop, "
        "an offline or unreadable machine).",
    )
    profile_ttl_s: float = Field(
        600.0,
        ge=0,
        description="Learnt load profiles and repair records are brought up to date this "
        "often, from the hours since (kyoso/api/learning.py).",
    )
    profile_reread_h: float = Field(
        24.0,
        ge=0,
        le=24 * 365,
        description="Each update of the learnt profiles reads this many hours before the "
        "last again: history written this late (an outbox replayed after an outage) counts.",
    )
    profile_relearn_h: float = Field(
        24.0,
        gt=0,
        le=24 * 365,
        description="The whole lookback is read again this often (history written later "
        "into the past counts from then); kept profiles older than this are not used.",
    )
    snapshot_interval_s: float = Field(
        60.0, gt=0, description="Capacity snapshots for the dashboards, every this long."
    )

    @property
    def lookback(self) -> timedelta:
        return timedelta(days=self.lookback_days)
