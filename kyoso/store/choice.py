"""Which store a service uses, in its configuration, and the store it names: one definition
for the ingest (which writes it), the capacity API (which reads it) and the demo."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from kyoso.influx.client import InfluxConfig

from .influx import InfluxStore
from .sqlite import SqliteStore

__all__ = ["StoreChoice", "store_for"]


class StoreChoice(BaseModel):
    """The store options a service's settings share (their ``store``, ``influx`` and
    ``sqlite_path``, overridable from the environment like every other option)."""

    store: Literal["influxdb", "sqlite"] = Field(
        "sqlite", description="influxdb (regional stack) or sqlite (one shop, the demo)."
    )
    influx: InfluxConfig = Field(
        default_factory=InfluxConfig, description="Used when store is influxdb."
    )
    sqlite_path: Path = Field(
        Path("kyoso-store.sqlite3"),
        description="Used when store is sqlite: the file the ingest writes and the API reads.",
    )


def store_for(
    choice: StoreChoice, *, synchronous: Literal["full", "normal"] = "full"
) -> InfluxStore | SqliteStore:
    """The store ``choice`` names, not yet opened (``async with`` it, or open and close
    it). ``synchronous`` is SQLite's: ``normal`` spares the disk where a power cut may
    lose the last writes (the demo)."""
    if choice.store == "influxdb":
        return InfluxStore(choice.influx)
    return SqliteStore(choice.sqlite_path, synchronous=synchronous)
