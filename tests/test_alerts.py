"""Alerts the plant manager reads (kyoso/alerts): each rule fires once its condition has
held long enough and recovers when it is over, by e-mail (a real SMTP sink) and webhook (a
real HTTP receiver), in Japanese and in English; de-duplicated over looks; held by quiet
hours and sent as a digest; kept across a restart; retried until delivered; told to a BCP
partner only when both sides agree. The API is the real one over a simulated region, on
the test's clock: every look is one call, nothing waits on the wall clock."""

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alertkit import (
    OKADA,
    SATO,
    Driver,
    SmtpSink,
    all_running,
    in_hours,
    key,
    set_gateway,
    set_states,
    sink,
    write_config,
)
from apikit import Api, Clocks, Region, build_region, copy_region, running_api
from ingestkit import wait_until
from webhookkit import Receiver

from kyoso.alerts.state import AlertState
from kyoso.capacity.rules import CapacityRules
from kyoso.contract import MachineState

DAYS = 3
MINUTE = 60.0
NEVER_STALE = CapacityRules(stale_after_s=30 * 86400, unreadable_after_s=30 * 86400)
"""The region's history is written once: the clock the test moves never makes it stale."""
QUIET = {"machine_down", "gateway_offline", "capacity_below", "order_at_risk"}


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    # Ends 2026-11-05 00:00 UTC: 09:00 on a Thursday in Tokyo, a working day.
    return build_region(tmp_path_factory.mktemp("region") / "store.sqlite3", DAYS)


@pytest.fixture
def own(region: Region, tmp_path: Path) -> Region:
    """The test's own copy of the region, every machine of okada and sato running."""
    copied = copy_region(region, tmp_path)
    start = Clocks(region.end + timedelta(seconds=30))
    for factory in (OKADA, SATO):
        all_running(copied, factory, start)
    return copied


@pytest.fixture
def clocks(region: Region) -> Clocks:
    return Clocks(region.end + timedelta(seconds=30))


@pytest.fixture
def api(own: Region, tmp_path: Path, clocks: Clocks) -> Iterator[Api]:
    with running_api(own, tmp_path / "api", clocks=clocks, rules=NEVER_STALE) as running:
        yield running


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    yield from sink()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


def _rules(**on: dict[str, Any]) -> dict[str, Any]:
    """Only the rules named, with their options; the others off."""
    return {
        **{rule: {"enabled": False} for rule in QUIET - set(on)},
        **on,
    }


def _okada(api: Api, smtp: SmtpSink, hook: Receiver, **more: Any) -> dict[str, Any]:
    """okada's plant manager by e-mail in Japanese, its technician by webhook in English."""
    return {
        "api_key": key(api, OKADA),
        "recipients": [
            {"name": "boss", "urls": [smtp.url("boss@okada.example.jp")]},
            {"name": "tech", "lang": "en", "urls": [f"json://{hook.url('/hook')[7:]}"]},
        ],
        **more,
    }


@pytest.fixture
def driven(
    api: Api, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> Iterator[Driver]:
    """okada watched for machines down (10 min) and orders at risk."""
    rules = _rules(machine_down={}, order_at_risk={})
    path = write_config(tmp_path / "alerts.yaml", {OKADA: _okada(api, smtp, hook, rules=rules)})
    driver = Driver(api, clocks, path)
    yield driver
    driver.close()


def _titles(smtp: SmtpSink, hook: Receiver) -> tuple[list[str], list[str]]:
    return [m.subject for m in smtp.taken()], [a.event["title"] for a in hook.at("/hook")]


# --- a rule fires once and recovers ------------------------------------------------------------


def test_a_machine_down_fires_once_and_recovers_in_both_languages(
    driven: Driver, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver
) -> None:
    assert driven.look() == 0
    # Its sample says it went down a minute before the clock, at 08:59:30.
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    assert driven.look(5) == 0  # down (seen 5 s later), not for 10 minutes yet
    assert driven.look(5 * MINUTE) == 0
    assert driven.look(6 * MINUTE) == 2  # 12 min: one e-mail, one webhook
    for _ in range(3):
        assert driven.look(MINUTE) == 0  # still down: nothing more
    [mail] = smtp.taken()
    assert mail.to == ["boss@okada.example.jp"]
    assert mail.subject == f"[{OKADA}] 設備停止: cnc-02"
    assert "故障停止" in mail.body
    assert "11月5日 08:59から12分続いています" in mail.body
    [posted] = hook.at("/hook")
    assert posted.event["title"] == f"[{OKADA}] Machine down: cnc-02"
    assert "down since 11/5 08:59 (12 min)" in posted.event["message"]

    set_states(own, OKADA, clocks, {"cnc-02": MachineState.RUNNING})
    assert driven.look(MINUTE) == 2
    assert driven.look(MINUTE) == 0
    mails, posts = _titles(smtp, hook)
    assert mails[1:] == [f"[{OKADA}] 設備復旧: cnc-02"]
    assert posts[1:] == [f"[{OKADA}] Machine back: cnc-02"]
    assert "停止 16分" in smtp.taken()[1].body  # down from 08:59:30 to 09:15:35


def test_a_stop_is_timed_from_its_samples_not_from_the_first_look(
    driven: Driver, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver
) -> None:
    """The alerts start while a machine has been down for 20 minutes: the stop began when
    its samples say (the API's down_since), so the first look fires."""
    for _ in range(20):
        clocks.advance(MINUTE)
        set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    assert driven.look() == 2
    [mail] = smtp.taken()
    assert "20分続いています" in mail.body


def test_a_stop_shorter_than_the_rule_says_nothing(
    driven: Driver, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver
) -> None:
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    assert driven.look(5) == 0
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.RUNNING})
    assert driven.look(8 * MINUTE) == 0
    assert driven.look(20 * MINUTE) == 0
    assert _titles(smtp, hook) == ([], [])


def test_a_reminder_every_repeat_min_while_it_holds(
    *, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> None:
    rules = _rules(machine_down={"after_min": 0, "repeat_min": 30})
    path = write_config(tmp_path / "alerts.yaml", {OKADA: _okada(api, smtp, hook, rules=rules)})
    driver = Driver(api, clocks, path)
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    delivered = [driver.look(10 * MINUTE) for _ in range(7)]  # 0, 10, ... 60 min
    driver.close()
    assert delivered == [2, 0, 0, 2, 0, 0, 2]
    mails, _ = _titles(smtp, hook)
    assert mails == [f"[{OKADA}] 設備停止: cnc-02"] + [f"【継続中】[{OKADA}] 設備停止: cnc-02"] * 2


def test_a_gateway_offline_and_the_capacity_it_takes_away(
    *, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> None:
    """The gateway lost: its alert after 10 min; the capacity withdrawn at once falls below
    the threshold (an alert with after_min 0); no machine alert for a factory offline."""
    rules = _rules(
        machine_down={"after_min": 0},
        gateway_offline={},
        capacity_below={"after_min": 0, "below_h": {"cnc_milling_3axis": 0.5}},
    )
    path = write_config(tmp_path / "alerts.yaml", {OKADA: _okada(api, smtp, hook, rules=rules)})
    driver = Driver(api, clocks, path)
    assert driver.look() == 0
    set_gateway(own, OKADA, clocks, up=False)
    assert driver.look(MINUTE) == 2
    assert driver.look(10 * MINUTE) == 2
    mails, posts = _titles(smtp, hook)
    assert mails == [
        f"[{OKADA}] 能力不足: マシニング（3軸）",
        f"[{OKADA}] ゲートウェイ通信途絶: gw-01",
    ]
    assert posts == [
        f"[{OKADA}] Capacity low: CNC milling (3-axis)",
        f"[{OKADA}] Gateway offline: gw-01",
    ]
    assert "0時間で、しきい値の0.5時間を下回っています" in smtp.taken()[0].body
    set_gateway(own, OKADA, clocks, up=True)
    assert driver.look(MINUTE) == 4
    driver.close()
    mails, posts = _titles(smtp, hook)
    assert sorted(mails[2:]) == [
        f"[{OKADA}] ゲートウェイ通信復旧: gw-01",
        f"[{OKADA}] 能力回復: マシニング（3軸）",
    ]
    assert sorted(posts[2:]) == [
        f"[{OKADA}] Capacity back: CNC milling (3-axis)",
        f"[{OKADA}] Gateway back: gw-01",
    ]


def test_orders_on_a_machine_down_are_named_with_who_could_take_them(
    *, driven: Driver, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver
) -> None:
    own_key = {"Authorization": f"Bearer {key(api, OKADA)}"}
    hold = api.client.post(
        "/v1/holds",
        json={
            "factory": OKADA,
            "machine": "cnc-02",
            "start": in_hours(clocks, 2),
            "end": in_hours(clocks, 20),
            "hours": 0.5,
            "order_ref": "PO-2026-0412",
        },
        headers=api.headers("platform"),
    )
    assert hold.status_code == 201, hold.text
    booked = api.client.put(
        f"/v1/factories/{OKADA}/machines/cnc-02/bookings",
        json={"bookings": [{"start": in_hours(clocks, 1), "end": in_hours(clocks, 8), "hours": 3}]},
        headers={**own_key, "If-Match": "*"},
    )
    assert booked.status_code == 200, booked.text
    confirmed = api.client.post(f"/v1/holds/{hold.json()['id']}/confirm", headers=own_key)
    assert confirmed.status_code == 200, confirmed.text

    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    assert driven.look(5) == 0
    assert driven.look(11 * MINUTE) == 4  # machine down and orders at risk, to each
    mails, posts = _titles(smtp, hook)
    assert f"[{OKADA}] 納期遅れのおそれ: cnc-02の仕事 2件" in mails
    assert f"[{OKADA}] Orders at risk: 2 on cnc-02" in posts
    [mail] = [m for m in smtp.taken() if "納期" in m.subject]
    lines = mail.body.splitlines()
    assert "・予約 11月5日 10:00〜11月5日 17:00（3時間）" in lines
    assert "・受注 PO-2026-0412: 11月5日 11:00〜11月6日 05:00（0.5時間）" in lines
    assert "・マシニング（3軸）: 振り替えが必要な仕事" in mail.body
    assert OKADA not in mail.body.split("引き受けられる工場:")[1]  # it is asking for help

    set_states(own, OKADA, clocks, {"cnc-02": MachineState.RUNNING})
    assert driven.look(MINUTE) == 4
    mails, _ = _titles(smtp, hook)
    assert f"[{OKADA}] 納期遅れのおそれ解消: cnc-02" in mails


# --- quiet hours, restarts, failures -----------------------------------------------------------


def test_quiet_hours_hold_messages_for_one_digest_but_not_urgent_ones(
    *, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> None:
    """09:00 in Tokyo, quiet until 10:00: the machine's alert and its recovery wait for
    10:00 and go as one digest; the order at risk (urgent) goes at once."""
    factory = _okada(api, smtp, hook, rules=_rules(machine_down={"after_min": 0}))
    factory["recipients"][0]["quiet_hours"] = {"start": "08:30", "end": "10:00"}
    factory["recipients"] = factory["recipients"][:1]
    path = write_config(tmp_path / "alerts.yaml", {OKADA: factory})
    driver = Driver(api, clocks, path)
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    assert driver.look(5) == 0
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.RUNNING})
    assert driver.look(20 * MINUTE) == 0
    assert driver.deliver(20 * MINUTE) == 0  # 09:40
    assert driver.deliver(20 * MINUTE) == 2  # 10:00: both, in one e-mail
    driver.close()
    [digest] = smtp.taken()
    assert digest.subject == f"[{OKADA}] 通知を控えた時間帯のお知らせ 2件"
    assert f"■ [{OKADA}] 設備停止: cnc-02" in digest.body
    assert f"■ [{OKADA}] 設備復旧: cnc-02" in digest.body


def test_an_urgent_rule_is_not_held(
    *, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> None:
    rules = _rules(machine_down={"after_min": 0, "urgent": True})
    factory = _okada(api, smtp, hook, rules=rules)
    factory["recipients"][0]["quiet_hours"] = {"start": "22:00", "end": "10:00"}
    path = write_config(tmp_path / "alerts.yaml", {OKADA: factory})
    driver = Driver(api, clocks, path)
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    assert driver.look(5) == 2
    driver.close()


def test_a_restart_neither_repeats_nor_misses(
    *, driven: Driver, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver
) -> None:
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    driven.look(5)
    assert driven.look(11 * MINUTE) == 2
    driven.close()
    again = Driver(api, clocks, Path(driven.config.state_path).parent / "alerts.yaml")
    assert again.look(MINUTE) == 0  # fired before the restart: not again
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.RUNNING})
    assert again.look(MINUTE) == 2  # and its recovery is sent after it
    again.close()
    mails, posts = _titles(smtp, hook)
    assert mails == [f"[{OKADA}] 設備停止: cnc-02", f"[{OKADA}] 設備復旧: cnc-02"]
    assert posts == [f"[{OKADA}] Machine down: cnc-02", f"[{OKADA}] Machine back: cnc-02"]


def test_the_running_loop_looks_delivers_and_stops(
    *, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> None:
    """`kyoso alerts` without --once: its loop looks, delivers what fired (once, however many
    looks it takes), and ends when told to stop."""
    rules = _rules(machine_down={"after_min": 0})
    factory = _okada(api, smtp, hook, rules=rules)
    driver = Driver(api, clocks, write_config(tmp_path / "a.yaml", {OKADA: factory}, interval_s=1))
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(driver.engine.run(stop))
        sent = lambda: len(smtp.taken()) + len(hook.at("/hook")) == 2  # noqa: E731
        await asyncio.to_thread(wait_until, sent, 120, "the loop's first messages")  # a hang
        await asyncio.sleep(2.5)  # more looks, a second apart: nothing more to send
        stop.set()
        async with asyncio.timeout(120):
            await loop

    asyncio.run(run())
    driver.close()
    assert _titles(smtp, hook) == (
        [f"[{OKADA}] 設備停止: cnc-02"],
        [f"[{OKADA}] Machine down: cnc-02"],
    )


def test_a_second_process_on_the_state_file_is_refused(driven: Driver, api: Api) -> None:
    """Two processes on one state file would each send every message: while one holds it,
    `kyoso alerts` in another process exits 2 saying so; once it is closed, it takes over."""
    config = Path(driven.config.state_path).parent / "alerts.yaml"
    command = [sys.executable, "-m", "kyoso", "alerts", "--config", str(config), "--check"]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    once = [*command[:-1], "--once"]
    refused = subprocess.run(once, capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert "is in use by another kyoso alerts" in refused.stderr
    driven.close()
    with AlertState(driven.config.state_path):
        pass  # free again


def test_a_failed_delivery_is_retried_until_it_goes(
    driven: Driver, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver
) -> None:
    """The mail server is down and the webhook answers 503: both are tried again after
    retry_base_s (30 s), not before, and delivered once each is back."""
    smtp.stop()
    hook.answer("/hook", 503, 200)
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    driven.look(5)
    assert driven.look(11 * MINUTE) == 0
    assert driven.engine.courier.failures == 2
    assert driven.deliver(20) == 0  # not due yet: nothing tried
    assert driven.engine.courier.failures == 2
    smtp.start()
    assert driven.deliver(11) == 2
    assert [a.answered for a in hook.at("/hook")] == [503, 200]
    assert [m.subject for m in smtp.taken()] == [f"[{OKADA}] 設備停止: cnc-02"]
    assert driven.state.next_due() is None


# --- BCP partners ------------------------------------------------------------------------------


def _bcp(api: Api, smtp: SmtpSink, hook: Receiver, tmp_path: Path, backups: list[str]) -> Path:
    okada = _okada(api, smtp, hook, rules=_rules(machine_down={}), bcp={"backups": backups})
    okada["recipients"] = okada["recipients"][1:]  # okada's own: the webhook
    sato = {
        "api_key": key(api, SATO),
        "recipients": [{"name": "sato-boss", "urls": [smtp.url("boss@sato.example.jp")]}],
        "rules": _rules(),
        "bcp": {"partner_down": True, "partners": [OKADA]},
    }
    return write_config(tmp_path / "alerts.yaml", {OKADA: okada, SATO: sato})


def test_a_backup_hears_of_a_partners_machine_down_when_both_agree(
    *, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> None:
    driver = Driver(api, clocks, _bcp(api, smtp, hook, tmp_path, backups=[SATO]))
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    driver.look(5)
    assert driver.look(11 * MINUTE) == 2  # okada's own webhook, and sato's e-mail
    [mail] = smtp.taken()
    assert mail.to == ["boss@sato.example.jp"]
    assert mail.subject == f"[{OKADA}] BCP協定先の設備停止: cnc-02"
    assert "cnc-02 が停止しています（加工：マシニング（3軸））" in mail.body
    assert "・マシニング（3軸）: 振り替えが必要な仕事" in mail.body
    # Nothing else of okada's machine: not its name, not its state's times.
    name = own.configs[OKADA].machines[1].name
    assert name not in mail.body
    assert "09:" not in mail.body
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.RUNNING})
    assert driver.look(MINUTE) == 2
    driver.close()
    assert smtp.taken()[1].subject == f"[{OKADA}] BCP協定先の設備復旧: cnc-02"


def test_a_backup_hears_nothing_unless_the_partner_names_it(
    *, api: Api, own: Region, clocks: Clocks, smtp: SmtpSink, hook: Receiver, tmp_path: Path
) -> None:
    driver = Driver(api, clocks, _bcp(api, smtp, hook, tmp_path, backups=[]))
    assert driver.config.one_sided() == [
        f"{SATO} backs up {OKADA}, which does not name it a backup"
    ]
    set_states(own, OKADA, clocks, {"cnc-02": MachineState.DOWN})
    driver.look(5)
    assert driver.look(11 * MINUTE) == 1  # okada's own webhook only
    driver.close()
    assert smtp.taken() == []
