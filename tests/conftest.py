"""Shared fixtures. Real services come from tests/services.py; add new fixtures by topic below."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from executables import install_hook, unlisted
from services import InfluxDB, Mosquitto

# --- programs the tests start ---------------------------------------------------------------
#
# Each must come from a Debian package that .ci/run installs (tests/executables.py).

install_hook()

# --- the language the commands speak ---------------------------------------------------------
#
# In-process commands speak the locale of the machine (kyoso.i18n.from_environment): the
# tests expect English unless they ask for another language themselves, whatever the locale
# of the machine running them (a test for Japanese sets KYOSO_LANG, or LANG with KYOSO_LANG
# removed, in its own environment).

os.environ["KYOSO_LANG"] = "en"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    missing = unlisted()
    if missing:
        pytest.fail(
            f"{item.nodeid} started {', '.join(missing)}, which the PROGRAMS table of .ci/run "
            "does not list: add each with the Debian package that brings it, so that CI "
            "installs it on a fresh machine"
        )


# --- the long fault variants -----------------------------------------------------------------
#
# Faults at their full length (an InfluxDB outage of minutes, a gateway cut for ten) take
# too long for every run: tests marked `long` run only with `--long`
# (`.venv/bin/python -m pytest --long -m long`), and are deselected, not skipped, otherwise.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="also run the tests marked long")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    deselected = [item for item in items if item.get_closest_marker("long")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("long")]


# --- real services ------------------------------------------------------------------------
#
# One broker and one InfluxDB per test session, on free loopback ports. Tests share them:
# use `mqtt_topic_root` / `influxdb_database` to stay out of each other's way. A test may
# stop() and start() a shared service (same ports, same data), but must leave it running.
# Tests needing a differently configured service (ACLs, auth, persistence) use the factories.


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = InfluxDB(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start extra brokers with `Mosquitto` keyword arguments; all stop after the test."""
    started: list[Mosquitto] = []

    def make(**kwargs: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(started)}", **kwargs)
        started.append(broker)
        broker.start()
        return broker

    yield make
    for broker in started:
        broker.close()


@pytest.fixture
def influxdb_factory(tmp_path: Path) -> Iterator[Callable[..., InfluxDB]]:
    """Start extra InfluxDBs with `InfluxDB` keyword arguments; all stop after the test."""
    started: list[InfluxDB] = []

    def make(**kwargs: Any) -> InfluxDB:
        server = InfluxDB(tmp_path / f"influxdb-{len(started)}", **kwargs)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def mqtt_topic_root() -> str:
    """A topic prefix no other test uses, e.g. ``kyoso-test/3f2a...``; no trailing slash."""
    return f"kyoso-test/{uuid.uuid4().hex}"


@pytest.fixture
def influxdb_database(influxdb: InfluxDB) -> Iterator[str]:
    """A fresh database on the shared InfluxDB, dropped after the test."""
    name = f"test_{uuid.uuid4().hex}"
    influxdb.create_database(name)
    yield name
    if influxdb.running:
        influxdb.drop_database(name)
