"""The alerts' configuration: the shipped example, errors a technician can act on, the BCP
agreement checked on both sides, quiet hours across midnight, and the catalog's words."""

from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from examples import documented_defaults, uncommented_lines
from pydantic import BaseModel

from kyoso.alerts.config import (
    AlertsConfig,
    ApiConnection,
    BcpConfig,
    DeliveryConfig,
    QuietHours,
    load_config,
)
from kyoso.alerts.messages import render
from kyoso.cli import main
from kyoso.validation import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "kyoso" / "alerts" / "alerts.example.yaml"
SECRETS = {
    "KYOSO_ALERTS_OKADA_KEY": "kyo_okada",
    "KYOSO_ALERTS_SATO_KEY": "kyo_sato",
    "SMTP_PASSWORD": "p%40ss",  # URL-encoded, as an apprise URL needs it
    "LINE_CHANNEL_TOKEN": "token",
    "LINE_USER_ID": "U0123456789abcdef",
    "SLACK_TOKEN_A": "T1",
    "SLACK_TOKEN_B": "B1",
    "SLACK_TOKEN_C": "C1",
}
TOKYO = ZoneInfo("Asia/Tokyo")


def test_the_example_loads_and_explains_every_option() -> None:
    config = load_config(EXAMPLE, SECRETS)
    okada = config.factories["okada-machining"]
    assert [r.lang for r in okada.recipients] == ["ja", "en"]
    assert okada.rules.order_at_risk.urgent
    assert config.backups_agreed("okada-machining") == ["sato-sheetmetal"]
    assert config.one_sided() == []
    assert uncommented_lines(EXAMPLE.read_text()) == []


@pytest.mark.parametrize(
    ("section", "model"),
    [(None, AlertsConfig), ("api", ApiConnection), ("delivery", DeliveryConfig)],
)
def test_the_documented_defaults_are_the_real_ones(
    section: str | None, model: type[BaseModel]
) -> None:
    documented = documented_defaults(EXAMPLE, section, ignore={"state_path"})
    assert documented
    assert documented == {key: model.model_fields[key].get_default() for key in documented}
    if section is None:
        assert str(AlertsConfig.model_fields["state_path"].get_default()) == "var/alerts.sqlite3"


def test_the_bcp_defaults_are_the_real_ones() -> None:
    text = EXAMPLE.read_text()
    for key in ("partner_down", "after_min"):
        default = BcpConfig.model_fields[key].get_default()
        assert f"# default {str(default).lower()}" in text


def test_a_wrong_option_is_named_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "interval_s: 0\n"
        "factories:\n"
        "  okada-machining:\n"
        "    api_key: ${OKADA_KEY}\n"
        "    recipients:\n"
        "      - name: boss\n"
        "        lang: fr\n"
        "        urls: ['nonsense://secret@host']\n"
        "        quiet_hours: {start: '22:00', end: '22:00'}\n"
        "    rules:\n"
        "      machine_down: {after_min: -1, loud: true}\n"
        "      capacity_below: {below_h: {cnc_milling_3axis: 0, knitting: 2}}\n"
        "    bcp: {backups: [sato-sheetmetal], partners: [okada-machining]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"OKADA_KEY": "kyo_x"})
    lines = str(caught.value).splitlines()
    assert lines == [
        f"{path}:1: interval_s: Input should be greater than or equal to 1",
        f"{path}:7: factories.okada-machining.recipients.0.lang: Input should be 'en' or 'ja'",
        f"{path}:8: factories.okada-machining.recipients.0.urls: Value error, urls.0: not a "
        "notification URL apprise can use (nonsense://...; see "
        "https://github.com/caronc/apprise/wiki)",
        f"{path}:9: factories.okada-machining.recipients.0.quiet_hours: Value error, start "
        "and end are the same time: no quiet hours, or all day?",
        f"{path}:11: factories.okada-machining.rules.machine_down.after_min: "
        "Input should be greater than or equal to 0",
        f"{path}:11: factories.okada-machining.rules.machine_down.loud: "
        "Extra inputs are not permitted",
        lines[6],
        f"{path}:13: factories.okada-machining.bcp: Value error, partners are named but "
        "partner_down is false: set it to true",
    ]
    assert lines[6].startswith(
        f"{path}:12: factories.okada-machining.rules.capacity_below.below_h.knitting.[key]: "
        "Input should be 'cnc_milling_3axis'"
    )
    assert "secret" not in str(caught.value)  # a URL's secrets are never echoed


def test_an_agreement_must_name_factories_watched_here(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "factories:\n"
        "  okada-machining:\n"
        "    api_key: k\n"
        "    bcp: {backups: [okada-machining, kato-press]}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == (
        f"{path}:1: factories: Value error, okada-machining.bcp.backups names the factory "
        "itself; okada-machining.bcp.backups names 'kato-press', which this file does not "
        "watch (its key and recipients are needed)"
    )


def test_check_says_ok_or_exits_2_with_the_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert main(["alerts", "--config", str(EXAMPLE), "--check"]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 factories, 3 recipients")
    broken = tmp_path / "alerts.yaml"
    broken.write_text("factories: {}\n")
    assert main(["alerts", "--config", str(broken), "--check"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"{broken}:1: factories: Dictionary should have at least 1 item")


def test_check_warns_of_half_an_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "factories:\n"
        "  okada-machining: {api_key: a, bcp: {backups: [sato-sheetmetal]}}\n"
        "  sato-sheetmetal: {api_key: b}\n"
    )
    assert main(["alerts", "--config", str(path), "--check"]) == 0
    assert capsys.readouterr().err == (
        f"{path}: bcp: okada-machining names sato-sheetmetal as a backup, which has not opted "
        "in: nothing is sent for it\n"
    )


@pytest.mark.parametrize(
    ("local", "end"),
    [
        ("2026-11-05 23:30", "2026-11-06 06:00"),  # overnight, before midnight
        ("2026-11-06 05:59", "2026-11-06 06:00"),  # after midnight
        ("2026-11-06 06:00", None),  # over
        ("2026-11-05 21:59", None),  # not yet
    ],
)
def test_quiet_hours_across_midnight(local: str, end: str | None) -> None:
    quiet = QuietHours(start=time(22), end=time(6))
    found = quiet.end_after(datetime.fromisoformat(local).replace(tzinfo=TOKYO))
    assert found == (None if end is None else datetime.fromisoformat(end).replace(tzinfo=TOKYO))


def test_every_message_renders_in_both_languages() -> None:
    """Every rule's every event, with the facts the engine keeps, in ja and en."""
    since = datetime(2026, 11, 5, 8, 0, tzinfo=TOKYO).timestamp()
    cover = [{"process": "cnc_turning", "hours": 2.04, "candidates": [["sato", 7.25]]}]
    facts: dict[str, dict[str, Any]] = {
        "machine_down": {"factory": "f", "machine": "m", "name": "n", "cause": "unreadable"},
        "gateway_offline": {"factory": "f", "gateway": ""},
        "capacity_below": {
            "factory": "f",
            "process": "cnc_milling_3axis",
            "available_h": 1.0,
            "below_h": 2.0,
            "horizon_h": "24",
        },
        "order_at_risk": {
            "factory": "f",
            "machine": "m",
            "name": "n",
            "orders": [{"ref": None, "start": since, "end": since, "hours": None}],
            "cover": cover,
        },
        "partner_down": {
            "partner": "p",
            "machine": "m",
            "processes": ["cnc_turning", "laser_cutting"],
            "cover": [],
        },
    }
    for rule, known in facts.items():
        for event in ("fired", "reminder", "recovered"):
            for lang in ("ja", "en"):
                title, body = render(rule, event, known, lang, TOKYO, since=since, at=since + 600)
                assert title
                assert body
                assert "{" not in title + body
    title, body = render(
        "order_at_risk", "fired", facts["order_at_risk"], "ja", TOKYO, since=since, at=since
    )
    assert "・予約 11月5日 08:00〜11月5日 08:00（計画時間すべて）" in body
    assert "・NC旋盤加工: 振り替えが必要な仕事 2時間 → sato（空き 7.2時間）" in body
    _, body = render(
        "partner_down", "fired", facts["partner_down"], "en", TOKYO, since=since, at=since
    )
    assert body.endswith("who could take it:\n- no work to place")
