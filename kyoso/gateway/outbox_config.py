"""The ``outbox`` section of a gateway's configuration (:mod:`kyoso.gateway.outbox` says what
each option does to the outbox)."""

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field

from kyoso.validation import ConfigModel

__all__ = ["ConfirmMode", "FullPolicy", "OutboxConfig"]


class FullPolicy(StrEnum):
    """What :meth:`kyoso.gateway.outbox.SqliteOutbox.append` does when the new rows do not
    fit."""

    DROP_OLDEST = "drop_oldest"
    REJECT_NEW = "reject_new"


class ConfirmMode(StrEnum):
    """What lets a sample leave the outbox."""

    STORE = "store"
    BROKER = "broker"


class OutboxConfig(ConfigModel):
    """Where the outbox lives, how big it may grow, what happens when it is full, and what
    lets a sample leave it."""

    path: Path = Field(
        Path("/var/lib/kyoso/outbox.sqlite3"), description="SQLite file; its directory exists."
    )
    max_rows: int = Field(
        1_000_000,
        ge=1,
        description="Most pending samples, sent or not (6 days of 20 machines every 10 s).",
    )
    max_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Most bytes of pending encoded samples."
    )
    policy: FullPolicy = Field(
        FullPolicy.DROP_OLDEST, description="When full: drop the oldest, or reject the new."
    )
    synchronous: Literal["full", "normal"] = Field(
        "full",
        description=(
            "SQLite synchronous mode. 'full' fsyncs every commit: an append survives a power "
            "cut. 'normal' fsyncs at checkpoints only: it survives a crash of the process, but "
            "a power cut may lose the last commits (fewer writes spare an SD card)."
        ),
    )
    confirm: ConfirmMode = Field(
        ConfirmMode.STORE,
        description=(
            "When a sample leaves the outbox. 'store': once an ingest worker's store receipt "
            "covers it, so nothing the broker loses (a crash before its autosave, no "
            "subscriber yet) is lost. 'broker': at the broker's PUBACK, for an ingest that "
            "publishes no receipts; a broker crash can then lose samples."
        ),
    )
    confirm_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "Under confirm 'store': a sample the broker acknowledged that no receipt has "
            "covered this long after is sent again."
        ),
    )
