"""Capacity snapshots: the region's capacity written into InfluxDB, for Grafana to chart.

Every ``snapshot_interval_s`` the API computes each factory's capacity over the next 24 h
and 7 days and writes it into the shared capacity database (``<prefix>capacity``, see
docs/storage.md): measurement ``capacity``, one point per machine, capability and horizon
(tags ``factory``, ``machine``, ``process``, ``horizon``; fields ``total_h``,
``committed_h``, ``unattainable_h``, ``available_h``, ``confidence``, ``offline``,
``data_age_s``), and ``factory_status``, one point per factory (tag ``factory``; fields
``gateways_online``, ``gateways_offline``, ``offline``, ``data_age_s``, ``machines``).
Only machines the factory shares with the region are written: the capacity database is
readable by the whole region. Several replicas may write the same snapshot: points of the
same second overwrite each other, so the timestamp is the snapshot time cut to seconds.
"""

import asyncio
import logging
from datetime import timedelta
from typing import Final

from kyoso.influx.client import InfluxWriter
from kyoso.influx.lineprotocol import CAPACITY_DATABASE_SUFFIX, FieldValue, line, timestamp_ns

from .deps import age_s
from .service import CapacityService

__all__ = ["HORIZONS", "CapacitySnapshots"]

log = logging.getLogger(__name__)

HORIZONS: Final = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}


class CapacitySnapshots:
    """Writes the region's capacity every ``interval_s`` until cancelled."""

    def __init__(self, service: CapacityService, writer: InfluxWriter, interval_s: float) -> None:
        self.service = service
        self.writer = writer
        self.interval_s = interval_s
        self.database = writer.config.database_prefix + CAPACITY_DATABASE_SUFFIX
        self.written = 0
        self.failed = 0

    async def run(self) -> None:
        """Snapshot now and every interval; a failure is logged and tried next time. The
        capacity database is created first only with ``create_databases`` (admin rights on
        InfluxDB 1.x; the regional stack creates it and gives the API write access alone)."""
        if self.writer.config.create_databases:
            await self.writer.ensure_database(self.database)
        while True:
            try:
                self.written += await self.snapshot()
            except Exception:  # the store may be down: the next snapshot will tell
                self.failed += 1
                log.exception("capacity snapshot failed")
            await asyncio.sleep(self.interval_s)

    async def snapshot(self) -> int:
        """Write one snapshot; return the points written."""
        lines: list[str] = []
        for horizon, span in HORIZONS.items():
            for factory in await self.service.factories():
                # Factory by factory: the answers' own figures queue behind one factory's
                # computation at most, not the whole region's (a week's figures of 50
                # factories took seconds of the single thread they are computed on).
                capacity = await self.service.capacity(factory, span)
                ts = timestamp_ns(capacity.as_of.replace(microsecond=0))
                for machine in capacity.machines:
                    if not machine.shared:
                        continue
                    f = machine.figures
                    fields: dict[str, FieldValue] = {
                        "total_h": f.total_s / 3600,
                        "committed_h": f.committed_s / 3600,
                        "unattainable_h": f.unattainable_s / 3600,
                        "available_h": f.available_s / 3600,
                        "confidence": float(machine.confidence),
                        "offline": "offline" in f.reasons,
                        "data_age_s": age_s(machine.newest, capacity.as_of) or 0.0,
                    }
                    for process in machine.processes:
                        tags = {
                            "factory": capacity.factory,
                            "machine": machine.machine,
                            "process": process.value,
                            "horizon": horizon,
                        }
                        lines.append(line("capacity", tags, fields, ts))
                if horizon == "24h":
                    view = await self.service.view(capacity.factory)
                    status: dict[str, FieldValue] = {
                        "gateways_online": sum(g.status == "online" for g in view.gateways),
                        "gateways_offline": sum(g.status == "offline" for g in view.gateways),
                        "offline": view.offline,
                        "data_age_s": age_s(view.newest, view.as_of) or 0.0,
                        "machines": len(view.machines),
                    }
                    lines.append(line("factory_status", {"factory": capacity.factory}, status, ts))
        result = await self.writer.write(self.database, lines)
        return result.written
