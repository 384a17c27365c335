"""The message catalogs: every message in both languages, and the language each reader gets."""

import re
import string
from typing import get_args

import pytest

from kyoso import i18n
from kyoso.api.schemas import ProblemCode
from kyoso.capacity.forecast import Reason
from kyoso.contract import MachineState, Process


def _placeholders(message: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(message) if name is not None}


def test_every_message_is_in_both_languages_with_the_same_placeholders() -> None:
    en, ja = i18n.catalog("en"), i18n.catalog("ja")
    assert sorted(set(en) - set(ja)) == [], "missing in ja.json"
    assert sorted(set(ja) - set(en)) == [], "missing in en.json"
    for key, message in en.items():
        assert _placeholders(message) == _placeholders(ja[key]), key
        assert message.strip(), key
        assert ja[key].strip(), key


def test_japanese_messages_are_japanese() -> None:
    """A message copied over untranslated is a missing translation (a message of names,
    codes and numbers only, like a unit, may stay as it is)."""
    kana_or_kanji = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
    en, ja = i18n.catalog("en"), i18n.catalog("ja")
    untranslated = [
        key
        for key, message in ja.items()
        if not kana_or_kanji.search(message) and re.search(r"[a-z]{3,} [a-z]{3,}", message)
    ]
    assert untranslated == []
    assert ja["state.running"] != en["state.running"]


def test_every_state_process_reason_and_problem_has_words() -> None:
    for lang in i18n.LANGUAGES:
        words = i18n.catalog(lang)
        for state in MachineState:
            assert f"state.{state.value}" in words, (lang, state)
        for process in Process:
            assert f"process.{process.value}" in words, (lang, process)
        for reason in get_args(Reason):
            assert f"reason.{reason}" in words, (lang, reason)
        for code in get_args(ProblemCode):
            assert f"problem.{code}" in words, (lang, code)


def test_text_fills_in_values_and_an_unknown_key_is_an_error() -> None:
    assert i18n.text("problem.error", "ja", status=502) == "エラー（HTTP 502）"
    assert i18n.text("problem.error", "en", status=502) == "Error (HTTP 502)"
    assert i18n.section("state", "ja")["down"] == i18n.text("state.down", "ja")
    with pytest.raises(KeyError):
        i18n.text("state.no_such_state", "en")


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, "en"),
        ("", "en"),
        ("ja", "ja"),
        ("ja-JP", "ja"),
        ("JA-jp", "ja"),
        ("en-GB,en;q=0.9", "en"),
        ("ja-JP,ja;q=0.9,en-US;q=0.8,en;q=0.7", "ja"),
        ("en;q=0.4, ja;q=0.8", "ja"),  # quality, not order, decides
        ("ja;q=0.8, en;q=0.8", "ja"),  # a tie: the first asked
        ("ja;q=0, en;q=0.1", "en"),  # q=0 refuses
        ("fr, de;q=0.9", "en"),  # no catalog for either: the fallback
        ("fr, *;q=0.5", "en"),
        ("ja;q=abc, en", "en"),  # a malformed quality counts as refused
    ],
)
def test_a_request_gets_the_language_it_prefers_most(header: str | None, lang: str) -> None:
    assert i18n.negotiate(header) == lang


@pytest.mark.parametrize(
    ("environ", "lang"),
    [
        ({}, "en"),
        ({"LANG": "ja_JP.UTF-8"}, "ja"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LANG": "ja_JP.UTF-8", "LC_ALL": "C"}, "en"),  # LC_ALL overrides LANG
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "ja_JP.eucJP"}, "ja"),
        ({"LC_ALL": "ja_JP.UTF-8", "KYOSO_LANG": "en"}, "en"),  # KYOSO_LANG overrides all
        ({"KYOSO_LANG": "ja"}, "ja"),
        ({"LANG": "", "LC_ALL": ""}, "en"),  # set but empty: not set
    ],
)
def test_the_command_line_speaks_its_locale(environ: dict[str, str], lang: str) -> None:
    assert i18n.from_environment(environ) == lang
