"""``kyoso --help`` and the errors a technician reads, in the command line's language."""

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kyoso.cli import build_parser, main
from kyoso.i18n import Lang, catalog, text
from kyoso.i18n.parser import CatalogParser

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "kyoso" / "gateway" / "gateway.example.yaml"
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every command path of ``parser``: (), ("gateway",), ("gateway", "probe"), ..."""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = [
    command
    for command in _commands(build_parser("en"))
    if not command or f"cli.{command[0]}.help" in catalog("en")
]
"""Every command whose words are in the ``cli`` catalog, with its subcommands."""


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], lang: Lang, *argv: str
) -> tuple[int, str, str]:
    """``kyoso ARGV`` in-process with ``KYOSO_LANG=lang``: exit code, stdout, stderr."""
    monkeypatch.setenv("KYOSO_LANG", lang)
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _english_sentences() -> set[str]:
    """The words of every English ``cli`` message between its placeholders, where long
    enough to be a sentence of its own rather than a word Japanese help may quote."""
    return {
        part.strip()
        for key, message in catalog("en").items()
        if key.startswith("cli.")
        for part in re.split(r"\{\w+\}", message)
        if len(part.strip()) >= 8
    }


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "kyoso")
def test_every_help_is_in_japanese(
    command: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(monkeypatch, capsys, "ja", *command, "--help")
    assert code == 0
    assert out.startswith("使い方: kyoso")
    assert "オプション:" in out
    assert "このヘルプを表示して終了します" in out
    ours = out
    for key in ("cli.argparse.usage", "cli.argparse.options", "cli.argparse.help"):
        ours = ours.replace(text(key, "ja"), "")
    assert JAPANESE.search(ours)  # a description or an argument's help, beyond argparse's words
    english = [sentence for sentence in _english_sentences() if sentence in out]
    assert english == []
    for word in ("usage:", "positional arguments", "options:", "show this help message"):
        assert word not in out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "kyoso")
def test_english_help_is_argparse_as_before(
    command: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = _run(monkeypatch, capsys, "en", *command, "--help")
    assert code == 0
    assert out.startswith("usage: kyoso")
    assert "options:\n  -h, --help" in out
    assert "show this help message and exit" in out
    japanese = [m for k, m in catalog("ja").items() if k.startswith("cli.") and m in out]
    assert japanese == []


def test_the_english_help_of_the_gateway() -> None:
    help_ = build_parser("en").format_help()
    assert "Live machine telemetry turned into shared machine capacity." in help_
    assert "show program's version number and exit" in help_
    gateway = " ".join(dict(_subcommands(build_parser("en")))["gateway"].format_help().split())
    assert "--check validate the file, print each machine's source" in gateway


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _sample(lang: Lang) -> CatalogParser:
    parser = CatalogParser(prog="tool", lang=lang)
    parser.add_argument("--mode", choices=["fast", "slow"])
    parser.add_argument("--count", type=int)
    parser.add_argument("--config")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("name")
    return parser


def _plain() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--mode", choices=["fast", "slow"])
    parser.add_argument("--count", type=int)
    parser.add_argument("--config")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("name")
    return parser


MISTAKES = [
    ([], "次の引数を指定してください: name"),
    (
        ["x", "--mode", "quick"],
        "引数 --mode: 'quick' は指定できません（次から選んでください: 'fast', 'slow'）",
    ),
    (["x", "--count", "many"], "引数 --count: 'many' は int の値として正しくありません"),
    (["x", "--count"], "引数 --count: 値を 1 つ指定してください"),
    (["x", "--c", "1"], "オプション --c があいまいです（候補: --count, --config, --check）"),
    (["x", "y"], "認識できない引数があります: y"),
]


@pytest.mark.parametrize(("argv", "said"), MISTAKES)
def test_argparse_errors_are_said_in_japanese(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each error argparse composes is recognised in this Python's wording (a newer
    argparse that words one differently fails here, not silently in English)."""
    with pytest.raises(SystemExit) as caught:
        _sample("ja").parse_args(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("使い方: tool [-h]")
    assert err.splitlines()[-1] == f"tool: エラー: {said}"


@pytest.mark.parametrize(("argv", "said"), MISTAKES)
def test_argparse_in_english_is_argparse(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        _plain().parse_args(argv)
    expected = capsys.readouterr().err
    with pytest.raises(SystemExit):
        _sample("en").parse_args(argv)
    assert capsys.readouterr().err == expected
    assert _sample("en").format_help() == _plain().format_help()


def test_a_missing_argument_in_japanese(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(monkeypatch, capsys, "ja", "api", "keys", "create", "--name", "x")
    assert code == 2
    assert (
        err.splitlines()[-1] == "kyoso api keys create: エラー: 次の引数を指定してください: --scope"
    )
    code, _, err = _run(monkeypatch, capsys, "en", "api", "keys", "create", "--name", "x")
    assert err.splitlines()[-1] == (
        "kyoso api keys create: error: the following arguments are required: --scope"
    )


def test_the_locale_of_a_real_process_chooses_japanese() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"KYOSO_LANG", "LC_ALL", "LC_MESSAGES"}}
    env["LANG"] = "ja_JP.UTF-8"
    done = subprocess.run(
        [sys.executable, "-m", "kyoso.cli", "gateway", "--help"],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith("使い方: kyoso gateway")
    assert text("cli.gateway.description", "ja") in done.stdout


def _broken_example(tmp_path: Path) -> tuple[Path, int]:
    """The shipped gateway example with a poll interval of 0, and the line of it."""
    lines = EXAMPLE.read_text().splitlines(keepends=True)
    line = next(i for i, t in enumerate(lines, 1) if t.startswith("poll_interval_s: 1.0"))
    lines[line - 1] = lines[line - 1].replace("poll_interval_s: 1.0", "poll_interval_s: 0  ")
    path = tmp_path / "gateway.yaml"
    path.write_text("".join(lines))
    return path, line


def test_a_gateway_config_error_in_japanese_and_english(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KYOSO_BROKER_PASSWORD", "secret")
    path, line = _broken_example(tmp_path)
    code, _, err = _run(monkeypatch, capsys, "ja", "gateway", "--config", str(path), "--check")
    assert code == 2
    assert (
        err
        == f"設定ファイル {path} の {line} 行目: poll_interval_s: 0 より大きい値にしてください\n"
    )
    code, _, err = _run(monkeypatch, capsys, "en", "gateway", "--config", str(path), "--check")
    assert code == 2
    assert err == f"{path}:{line}: poll_interval_s: Input should be greater than 0\n"


def test_a_missing_config_file_in_japanese(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nowhere.yaml"
    for command in (["gateway"], ["ingest"], ["api"], ["simulate"]):
        flag = [] if command == ["simulate"] else ["--config"]
        code, _, err = _run(monkeypatch, capsys, "ja", *command, *flag, str(path), "--check")
        assert code == 2
        assert err == f"設定ファイル {path} が見つかりません\n"


def test_a_missing_config_option_in_japanese(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(monkeypatch, capsys, "ja", "gateway", "--check")
    assert (code, err) == (2, "kyoso gateway: --config GATEWAY.yaml を指定してください\n")


def test_every_cli_message_is_used_by_a_command() -> None:
    """No dead keys: each ``cli.*`` message is named, whole, in the code."""
    source = "\n".join(p.read_text() for p in (ROOT / "kyoso").rglob("*.py"))
    unused = [key for key in catalog("en") if key.startswith("cli.") and f'"{key}"' not in source]
    assert unused == []
