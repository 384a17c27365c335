"""The overview page in Japanese and English, and its pictures: driven in a real headless
Chromium (over the DevTools protocol: tests/browser.py) against a real ``kyoso api`` over a
freshly simulated region (test_overview's fixture). Screenshots go to the test's tmp_path,
and to ``$KYOSO_SCREENSHOTS`` when it names a directory."""

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apikit import build_region
from browser import Tab, devtools, png_colours
from test_overview import Server, _get, _kyoso_api, server

from kyoso import i18n

__all__ = ["server"]  # test_overview's fixture: a real `kyoso api` on uvicorn

STATE_COLOURS = {
    "running": (0x56, 0xA6, 0x4B),
    "setup": (0x32, 0x74, 0xD9),
    "idle": (0xF2, 0xCC, 0x0C),
    "down": (0xE0, 0x2F, 0x44),
    "planned_stop": (0x8E, 0x8E, 0x8E),
    "no_data": (0xC7, 0xCC, 0xD4),  # the hatch's stripes
}
"""Each state's colour on the page (Grafana's state timeline's), as the screenshot has it."""
BAR = (0x2F, 0x6F, 0xD1)
"""The colour of a shift's bar and of the first capability's."""
READY = (
    "(() => { const m = document.getElementById('overview');"
    " return m && ['ready', 'error', 'no-key'].includes(m.dataset.state) && m.dataset.state; })()"
)
CHARTS = """[...document.querySelectorAll('svg.chart')].map((s) => ({
  kind: s.classList[1], factory: s.dataset.chart, day: s.dataset.day,
  label: s.getAttribute('aria-labelledby'), desc: s.querySelector('desc').textContent,
  bands: [...s.querySelectorAll('rect.band')].map((b) => [
    b.closest('[data-row]').dataset.row, b.dataset.state, b.dataset.start,
    b.getBoundingClientRect().width]),
  shifts: [...s.querySelectorAll('g.shift')].map((g) => [g.dataset.day, g.dataset.shift]),
  capacity: [...s.querySelectorAll('[data-capability][data-day]')].map(
    (g) => [g.dataset.capability, g.dataset.day]),
}))"""
"""What each chart on the page shows, as the DOM says."""
WITHDRAWN = """[...document.querySelectorAll('#phased [data-chart-of]')].map((b) => [
  b.dataset.chartOf, [...b.querySelectorAll('.withdrawn')].map((n) => n.dataset.withdrawn)])"""
"""Per factory, the capabilities whose capacity the page says is withdrawn."""
WEEKDAYS = {
    "ja": r"\d{1,2}/\d{1,2}\([月火水木金土日]\)",
    "en": r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2}/\d{1,2}",
}
"""A date label of the charts, as each language writes it (Intl, ja-JP and en)."""


JAPANESE = pytest.mark.parametrize("languages", ["ja-JP,ja"])
"""A browser in Japanese."""


def _keep(png: Path) -> None:
    """Keep a screenshot in ``$KYOSO_SCREENSHOTS`` too, when it is set."""
    kept = os.environ.get("KYOSO_SCREENSHOTS")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(kept) / png.name)


@pytest.fixture
def languages() -> str:
    """The languages the browser prefers (a test parametrizes it for another reader)."""
    return "en-US,en"


@pytest.fixture
def tab(tmp_path: Path, languages: str) -> Iterator[Tab]:
    """A Chromium tab whose reader prefers ``languages``."""
    with devtools(tmp_path, languages=languages) as opened:
        yield opened


def _open(tab: Tab, server: Server, scope: str = "admin") -> None:
    tab.open(f"{server.base}/#key={server.keys[scope]}")
    assert tab.until(READY) == "ready", tab.evaluate(
        "document.getElementById('notice').textContent"
    )


def _words(tab: Tab) -> str:
    """Every word the page shows or says: its text, its SVG titles and descriptions, its
    attributes a reader meets (placeholder, title, aria-label)."""
    return str(
        tab.evaluate(
            "[document.title, document.body.innerText,"
            " ...[...document.querySelectorAll('svg title, svg desc')].map((n) => n.textContent),"
            " ...[...document.querySelectorAll('[placeholder], [title], [aria-label]')].flatMap("
            "(n) => ['placeholder', 'title', 'aria-label'].map((a) => n.getAttribute(a) || ''))"
            "].join('\\n')"
        )
    )


def _leftovers(words: str, lang: i18n.Lang) -> list[str]:
    """The other language's catalog messages (their fixed parts) found among ``words``."""
    other: i18n.Lang = "en" if lang == "ja" else "ja"
    mine = set(i18n.catalog(lang).values())
    found = []
    for key, message in i18n.catalog(other).items():
        if key.split(".")[0] not in ("page", "state", "reason", "process") or message in mine:
            continue
        for piece in re.split(r"\{\w+\}", message):
            part = piece.strip(" ,:;()（）：、")
            if len(part) >= 5 and part in words:
                found.append(f"{key}: {part!r}")
    return found


def _says_in(tab: Tab, lang: i18n.Lang) -> None:
    """The page is in ``lang``: its language, every catalog-bound element's words, dates
    in the language's format, none of the other language's messages."""
    assert tab.evaluate("document.documentElement.lang") == lang
    assert tab.evaluate("document.title") == i18n.text("page.title", lang)
    bound = tab.evaluate(
        "[...document.querySelectorAll('[data-i18n]')].map((n) => [n.dataset.i18n, n.textContent])"
    )
    assert bound
    for key, shown in bound:
        assert shown == i18n.text(key, lang), key
    words = _words(tab)
    names = tab.evaluate(
        "[...document.querySelectorAll('[data-machine] > td:nth-child(2)')]"
        ".map((n) => n.textContent)"
    )
    assert names
    for name in sorted(names, key=len, reverse=True):  # data, in no catalog: a name as given
        words = words.replace(name, "").replace(name[:23], "")
    assert _leftovers(words, lang) == []
    charts = str(
        tab.evaluate(
            "[...document.querySelectorAll('svg.chart')].map((s) => s.textContent).join(' ')"
        )
    )
    assert re.search(WEEKDAYS[lang], charts), charts[:400]
    assert i18n.text("state.running", lang) in words


@JAPANESE
def test_a_japanese_browser_gets_the_page_in_japanese(
    server: Server, tab: Tab, tmp_path: Path
) -> None:
    _open(tab, server)
    _says_in(tab, "ja")
    clock = str(tab.evaluate("document.querySelector('[data-factory-time] time').textContent"))
    assert re.fullmatch(r"\d{1,2}月\d{1,2}日\([月火水木金土日]\) \d{2}:\d{2}", clock), clock
    assert "稼働率" in _words(tab)
    shot = tmp_path / "overview-ja-1024x768.png"
    tab.screenshot(shot)
    _keep(shot)


def test_the_switch_changes_the_language_and_is_remembered(server: Server, tab: Tab) -> None:
    _open(tab, server)
    _says_in(tab, "en")
    tab.evaluate("document.querySelector('[data-lang=ja]').click()")
    _says_in(tab, "ja")
    assert (
        tab.evaluate("document.querySelector('[data-lang=ja]').getAttribute('aria-pressed')")
        == "true"
    )
    _open(tab, server)  # a new visit, in a browser that prefers English
    _says_in(tab, "ja")
    tab.evaluate("document.querySelector('[data-lang=en]').click()")
    _says_in(tab, "en")


@JAPANESE
def test_japanese_text_is_drawn_with_a_japanese_font(server: Server, tab: Tab) -> None:
    """Every element with Japanese words is drawn in the Japanese face the page asks for
    first, Noto Sans CJK JP (Debian's fonts-noto-cjk), and in nothing else: no glyph falls
    back to another font or to none (tofu). The fonts are those Chromium really drew the
    text with (CSS.getPlatformFontsForNode)."""
    _open(tab, server)
    fonts = tab.fonts("h1, h2, h3, th, td, button, p, li, svg.chart text")
    drawn = [used for used in fonts if re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", used[0])]
    assert drawn
    assert {font for _, font, _ in drawn} == {"Noto Sans CJK JP"}, "install fonts-noto-cjk"
    assert all(glyphs > 0 for _, _, glyphs in drawn)


def _withdrawn(phased: dict[str, Any]) -> set[str]:
    """The processes whose every machine has its capacity withdrawn (docs/api.md)."""
    gone = {"offline", "unreadable", "insufficient_history"}
    return {
        p["process"]
        for p in phased["by_process"]
        if all(
            gone & set(m["reasons"]) for m in phased["machines"] if p["process"] in m["processes"]
        )
    }


def _api_timeline(server: Server, factory: str, day: str) -> dict[str, list[tuple[str, str]]]:
    answer = _get(server, f"/v1/factories/{factory}/timeline?day={day}", "admin")
    return {m["machine"]: [(r["state"], r["start"]) for r in m["runs"]] for m in answer["machines"]}


@JAPANESE
def test_the_pictures_show_the_bands_and_bars(server: Server, tab: Tab, tmp_path: Path) -> None:
    """A band per run in its state's colour, a bar per shift and per capability and day,
    each chart described in words; the screenshot has the colours the DOM says."""
    before = {
        f: _get(server, f"/v1/factories/{f}/kpis/shifts?days=7", "admin")
        for f in server.region.simulations
    }
    _open(tab, server)
    after = {
        f: _get(server, f"/v1/factories/{f}/kpis/shifts?days=7", "admin")
        for f in server.region.simulations
    }
    charts: list[dict[str, Any]] = tab.evaluate(CHARTS)
    factories = set(server.region.simulations)
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for chart in charts:
        by_kind.setdefault(chart["kind"], {})[chart["factory"]] = chart
        assert chart["label"]
        assert len(chart["desc"]) > 20  # a text alternative
    assert set(by_kind) == {"timeline", "shifts", "phased"}
    assert set(by_kind["timeline"]) == factories
    # A factory without a shift in its last days (a weekend shop) says so in words.
    working = {f for f in factories if before[f]["shifts"] or after[f]["shifts"]}
    assert working
    assert set(by_kind["shifts"]) in (
        {f for f in factories if a[f]["shifts"]} for a in (before, after)
    )

    drawn_states = set()
    for factory, chart in by_kind["timeline"].items():
        runs = _api_timeline(server, factory, chart["day"])
        bands: dict[str, list[tuple[str, str]]] = {}
        for machine, state, start, width in chart["bands"]:
            bands.setdefault(machine, []).append((state, start))
            if width >= 3:
                drawn_states.add(state)
        assert bands == runs, factory  # the last run's end moves with now; its start does not
    for factory, chart in by_kind["shifts"].items():
        shown = sorted(map(tuple, chart["shifts"]))
        assert shown in [
            sorted((s["day"], s["shift"]) for s in a[factory]["shifts"]) for a in (before, after)
        ]
        assert shown
    notes = dict(tab.evaluate(WITHDRAWN))
    assert set(notes) == factories
    for factory in factories:
        phased = _get(server, f"/v1/factories/{factory}/capacity/phased?bucket=day", "admin")
        gone = _withdrawn(phased)
        assert sorted(notes[factory]) == sorted(gone), factory
        expected = sorted(
            (p["process"], b["label"])
            for p in phased["by_process"]
            if p["process"] not in gone
            for b in p["buckets"]
        )
        chart = by_kind["phased"].get(factory, {"capacity": []})
        assert sorted(map(tuple, chart["capacity"])) == expected, factory

    shots = {}
    for part in ("timeline", "shifts", "phased"):
        shots[part] = tmp_path / f"overview-{part}.png"
        colours = png_colours(tab.screenshot(shots[part], selector=f"#{part}"))
        _keep(shots[part])
        if part == "timeline":
            assert drawn_states
            assert {s for s in drawn_states if STATE_COLOURS[s] not in colours} == set()
        else:
            assert BAR in colours, part
    whole = tmp_path / "overview-ja-full.png"
    tab.screenshot(whole, full=True)
    _keep(whole)


def test_a_platform_key_sees_capacity_pictures_only(server: Server, tab: Tab) -> None:
    _open(tab, server, "platform")
    shown = tab.evaluate("[...document.querySelectorAll('svg.chart')].map((s) => s.classList[1])")
    assert set(shown) == {"phased"}
    assert tab.evaluate("document.getElementById('timeline').hidden")
    assert tab.evaluate("document.getElementById('shifts').hidden")


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``kyoso api`` over a region heard from last two hours ago: its capacity withdrawn."""
    workdir = tmp_path_factory.mktemp("stale")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    region = build_region(workdir / "store.sqlite3", 1, origin=now - timedelta(days=1, hours=2))
    with _kyoso_api(workdir, region, {}) as api:
        yield api


@JAPANESE
def test_withdrawn_capacity_shows_its_reason_never_a_bar(stale: Server, tab: Tab) -> None:
    phased = [
        _get(stale, f"/v1/factories/{f}/capacity/phased", "admin") for f in stale.region.simulations
    ]
    assert all(p["offline"] for p in phased)
    _open(tab, stale)
    assert tab.evaluate("document.querySelectorAll('#phased [data-hours]').length") == 0
    notes = tab.evaluate(
        "[...document.querySelectorAll('#phased .withdrawn')].map((n) => n.textContent)"
    )
    reason = i18n.text("page.withdrawn", "ja", reason=i18n.text("reason.offline", "ja"))
    assert notes == [reason] * len(phased)


def test_the_page_carries_both_catalogs(server: Server) -> None:
    with urllib.request.urlopen(server.base + "/", timeout=10) as response:  # noqa: S310 (loopback)
        page = response.read().decode()
    found = re.search(
        r'<script type="application/json" id="catalog">(.*?)</script>', page, re.DOTALL
    )
    assert found
    words = json.loads(found[1])
    for lang in i18n.LANGUAGES:
        for part in ("page", "state", "reason", "process"):
            assert words[lang][part] == i18n.section(part, lang)
