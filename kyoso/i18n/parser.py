"""Command-line parsers that speak the catalog's language, argparse's own words included.

argparse says its words ("usage:", "options", "the following arguments are required")
through gettext's default domain, for which Python ships no Japanese and which only a
compiled catalog on disk, chosen by process-wide state, could change. A :class:`CatalogParser`
says them itself, from the section ``cli.argparse``: the usage prefix, the section titles
and the help of ``-h`` when it is built; the errors argparse composes deep in its parsing
reach :meth:`CatalogParser.error` as English sentences, which are matched against the
English catalog (argparse's wording, its ``%s`` named) and said again in the parser's
language. A sentence a newer argparse words differently matches nothing and stays English.
"""

import argparse
import re
import sys
import unicodedata
from functools import cache, partial
from typing import Any, NoReturn

from . import DEFAULT, Lang, catalog, text

__all__ = ["CatalogParser"]

_ERRORS = (
    "cli.argparse.required",
    "cli.argparse.argument",
    "cli.argparse.invalid_choice",
    "cli.argparse.invalid_value",
    "cli.argparse.unrecognized",
    "cli.argparse.expected_one",
    "cli.argparse.ambiguous",
)
"""The errors argparse composes that a kyoso command can meet, as the catalog keys them."""


@cache
def _pattern(key: str) -> re.Pattern[str]:
    """The English message ``key`` as a pattern that captures its values by name."""
    parts = re.split(r"\{(\w+)\}", catalog(DEFAULT)[key])
    return re.compile(
        "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts)),
        re.DOTALL,
    )


def _translated(message: str, lang: Lang) -> str:
    """An error argparse composed in English, said in ``lang`` (unchanged if unknown)."""
    for key in _ERRORS:
        match = _pattern(key).fullmatch(message)
        if match is not None:
            values = match.groupdict()
            if "message" in values:  # "argument --x: <an error of its own>"
                values["message"] = _translated(values["message"], lang)
            return text(key, lang, **values)
    return message


def _width(char: str) -> int:
    """Columns a character takes in a terminal: two for the wide ones of Japanese."""
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


_NO_BREAK_BEFORE = "、。）」』：:,.)"
"""What may not begin a line (Japanese line-breaking rules, kinsoku, in short)."""


def _wrap(paragraph: str, width: int) -> list[str]:
    """``paragraph`` in lines of at most ``width`` columns, broken between words and, in
    Japanese, which puts no space between words, between any two characters."""
    tokens = re.findall(r"[ -~]+?(?: |$)|.", " ".join(paragraph.split()))
    lines: list[str] = []
    line, used = "", 0
    for token in tokens:
        size = sum(_width(c) for c in token.rstrip())
        if line and used + size > width and token[0] not in _NO_BREAK_BEFORE:
            lines.append(line.rstrip())
            line, used = "", 0
        line += token
        used += sum(_width(c) for c in token)
    return [*lines, line.rstrip()] if line.strip() else lines


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter with the usage prefix of the catalog, wrapping help by the
    columns its characters take (argparse counts characters, and a Japanese one takes two)."""

    def __init__(self, prog: str, *, usage: str, **options: Any) -> None:
        super().__init__(prog, **options)
        self._usage = usage

    def add_usage(
        self,
        usage: str | None,
        actions: Any,
        groups: Any,
        prefix: str | None = None,
    ) -> None:
        super().add_usage(usage, actions, groups, self._usage if prefix is None else prefix)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return _wrap(text, width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(indent + line for line in _wrap(text, width - len(indent)))


class CatalogParser(argparse.ArgumentParser):
    """An argument parser whose help and errors are in ``lang``; its subcommands' parsers
    are too. The help texts of the arguments are the caller's, from the catalog."""

    def __init__(self, *args: Any, lang: Lang, **options: Any) -> None:
        options.setdefault(
            "formatter_class", partial(_Formatter, usage=text("cli.argparse.usage", lang) + " ")
        )
        super().__init__(*args, **options)
        self.lang: Lang = lang
        self._positionals.title = text("cli.argparse.positionals", lang)
        self._optionals.title = text("cli.argparse.options", lang)
        if self.add_help:
            self._option_string_actions["-h"].help = text("cli.argparse.help", lang)

    def add_subparsers(self, **options: Any) -> Any:  # typeshed's overloads fix parser_class
        """argparse's, the subcommands' parsers in the same language."""
        options.setdefault("parser_class", partial(CatalogParser, lang=self.lang))
        return super().add_subparsers(**options)

    def error(self, message: str) -> NoReturn:
        """argparse's usage and ``<prog>: error: <message>``, in the parser's language."""
        self.print_usage(sys.stderr)
        said = text(
            "cli.argparse.error", self.lang, prog=self.prog, message=_translated(message, self.lang)
        )
        self.exit(2, said + "\n")
