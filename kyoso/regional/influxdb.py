"""InfluxDB 1.x users and grants for a region (docs/storage.md, section 5).

:func:`provision_influxdb` makes the server match the registry, logged in as an admin, and
may run again at every start of the stack: it creates what is missing, sets every managed
user's password to the current one, and takes back privileges a managed user holds beyond
its role (on a database no longer its own, say). Roles:

=======================  ===================================================
user                     privileges
=======================  ===================================================
ingest                   WRITE on every factory database (not admin: the
                         databases are created here, so the ingest runs with
                         ``create_databases: false``)
capacity service         READ on every factory database, ALL on ``kyoso_capacity``
region reader            READ on ``kyoso_capacity`` (the regional dashboard)
``<factory>``            READ on ``kyoso_<factory>`` only (its Grafana data source)
=======================  ===================================================

Statements carry names as quoted identifiers and passwords as escaped string literals
(InfluxQL binds parameters in expressions only, not in ``CREATE USER``).
"""

import logging
from collections.abc import Mapping

from kyoso.influx.client import InfluxConfig, InfluxWriter, influxql_identifier
from kyoso.influx.lineprotocol import CAPACITY_DATABASE_SUFFIX, database_name

from .registry import Registry

__all__ = ["capacity_database", "grants", "provision_influxdb"]

log = logging.getLogger(__name__)


def capacity_database(prefix: str) -> str:
    """The shared capacity database, ``<prefix>capacity``."""
    return prefix + CAPACITY_DATABASE_SUFFIX


def grants(registry: Registry, prefix: str) -> dict[str, dict[str, str]]:
    """User -> database -> privilege (``READ``, ``WRITE`` or ``ALL``), as in the table."""
    factory_dbs = [database_name(f, prefix) for f in registry.factories]
    capacity = capacity_database(prefix)
    wanted: dict[str, dict[str, str]] = {
        registry.ingest.username: dict.fromkeys(factory_dbs, "WRITE"),
        registry.capacity.username: {**dict.fromkeys(factory_dbs, "READ"), capacity: "ALL"},
        registry.region.username: {capacity: "READ"},
    }
    for factory, db in zip(registry.factories, factory_dbs, strict=True):
        wanted[factory] = {db: "READ"}
    return wanted


async def provision_influxdb(
    registry: Registry, passwords: Mapping[str, str], admin: InfluxConfig
) -> None:
    """Create or update the databases, users and grants of ``registry`` (see the module
    docstring), connecting with ``admin``'s URL and admin credentials."""
    prefix = admin.database_prefix
    wanted = grants(registry, prefix)
    async with InfluxWriter(admin) as influx:
        existing = {row["user"] for row in await influx.query(None, "SHOW USERS")}
        for user in registry.influx_users:
            name, secret = influxql_identifier(user), _string_literal(passwords[user])
            if user in existing:
                await influx.query(None, f"SET PASSWORD FOR {name} = {secret}")
            else:
                await influx.query(None, f"CREATE USER {name} WITH PASSWORD {secret}")
                log.info("created InfluxDB user %s", user)
        for database in sorted({db for dbs in wanted.values() for db in dbs}):
            await influx.ensure_database(database)
        for user, databases in wanted.items():
            name = influxql_identifier(user)
            held = await influx.query(None, f"SHOW GRANTS FOR {name}")
            for row in held:
                if row["database"] not in databases and row["privilege"] != "NO PRIVILEGES":
                    db = influxql_identifier(row["database"])
                    await influx.query(None, f"REVOKE ALL PRIVILEGES ON {db} FROM {name}")
                    log.info("revoked %s on %s from %s", row["privilege"], row["database"], user)
            for database, privilege in databases.items():
                db = influxql_identifier(database)
                await influx.query(None, f"GRANT {privilege} ON {db} TO {name}")


def _string_literal(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
