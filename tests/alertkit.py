"""Test harness of the alerts (tests/test_alerts*.py): a real SMTP sink on loopback
(aiosmtpd), the API in-process over a simulated region at the test's clock, machines and
gateways set as the ingest would set them, and an engine driven one look at a time."""

import asyncio
import email
import email.header
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from apikit import GATEWAY, Api, Clocks, Region, online
from services import free_port

from kyoso.alerts.config import load_config
from kyoso.alerts.engine import AlertEngine
from kyoso.alerts.state import AlertState
from kyoso.contract import MachineState
from kyoso.store import SqliteStore

OKADA = "okada-machining"
SATO = "sato-sheetmetal"


@dataclass(frozen=True)
class Mail:
    """An e-mail the sink took: its recipients, subject and text, decoded."""

    to: list[str]
    subject: str
    body: str


class SmtpSink:
    """An SMTP server on a loopback port that keeps every message; stopped and started
    again on the same port (a mail server down, then back)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(  # noqa: N802 (aiosmtpd calls the handler by this name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        part = message.get_body(("plain",))
        body = "" if part is None else part.get_content()
        with self._lock:
            self.mails.append(Mail(list(envelope.rcpt_tos), str(message["Subject"]), body))
        return "250 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, to: str) -> str:
        return f"mailto://127.0.0.1:{self.port}?from=kyoso@example.jp&to={to}"

    def taken(self) -> list[Mail]:
        with self._lock:
            return list(self.mails)


def sink() -> Iterator[SmtpSink]:
    started = SmtpSink()
    started.start()
    try:
        yield started
    finally:
        started.stop()


def write_config(path: Path, factories: dict[str, Any], **top: Any) -> Path:
    """An alerts file for ``factories`` (keys given in the test), its state beside it."""
    path.write_text(
        yaml.safe_dump(
            {"state_path": str(path.parent / "alerts.sqlite3"), **top, "factories": factories},
            allow_unicode=True,
        )
    )
    return path


def set_states(region: Region, factory: str, at: Clocks, states: dict[str, MachineState]) -> None:
    """Each machine's next sample, at the clock, in its state (the others keep theirs)."""

    async def write() -> None:
        async with SqliteStore(region.path) as store:
            latest = await store.latest_samples(factory)
            for machine, state in states.items():
                sample = latest[machine].sample
                following = sample.model_copy(
                    update={
                        "seq": sample.seq + 1,
                        "ts": at.wall,
                        "interval_s": 60.0,
                        "state": state,
                        "durations_s": {state: 60.0},
                        "alarm": 1021 if state is MachineState.DOWN else 0,
                    }
                )
                await store.write_samples(factory, GATEWAY, "history", [following])

    asyncio.run(write())


def all_running(region: Region, factory: str, at: Clocks) -> None:
    """Every machine of the factory running now: no alert to begin with."""
    machines = region.simulations[factory].models
    set_states(region, factory, at, dict.fromkeys(machines, MachineState.RUNNING))


def set_gateway(region: Region, factory: str, at: Clocks, up: bool) -> None:
    """The factory's gateway's status, as the ingest writes it."""

    async def write() -> None:
        async with SqliteStore(region.path) as store:
            await store.write_status(online(factory, at.wall, "online" if up else "offline"))

    asyncio.run(write())


class Driver:
    """An engine over the API, its state file and config, one look at a time."""

    def __init__(self, api: Api, clocks: Clocks, config: Path) -> None:
        self.api = api
        self.clocks = clocks
        self.config = load_config(config)
        self.state = AlertState(self.config.state_path)
        self.engine = AlertEngine(self.config, api.client, self.state, clock=clocks.now)

    def look(self, after_s: float = 0.0) -> int:
        """Move the clock, look once and deliver what is due; the number delivered."""
        self.clocks.advance(after_s)
        return asyncio.run(self.engine.once())

    def deliver(self, after_s: float = 0.0) -> int:
        self.clocks.advance(after_s)
        return asyncio.run(self.engine.courier.deliver())

    def close(self) -> None:
        self.state.close()


def key(api: Api, factory: str) -> str:
    return api.keys[f"factory:{factory}"]


def in_hours(clocks: Clocks, hours: float) -> str:
    return (clocks.wall + timedelta(hours=hours)).isoformat()
