"""Every word a person reads, in Japanese and English: one message catalog per language.

The catalogs are ``en.json`` and ``ja.json`` beside this module: a JSON object of sections
(``cli``, ``config``, ``page``, ``problem``, ``state``, ``reason``, ``dashboard``,
``alert``, ...), each an object of messages, so a message's key is ``<section>.<name>``
(``state.running``). A message may name values in braces (``{machine}``), filled in by
:func:`text`; both catalogs name the same values in each message (tests/test_i18n.py checks
that every key is in both, with the same placeholders). Machine-readable codes (a problem's
``code``, a state's wire name) never go through a catalog: only what a person reads does.

The language of a request comes from its ``Accept-Language`` (:func:`negotiate`); of the
command line from ``KYOSO_LANG``, else the POSIX locale (``LC_ALL``, ``LC_MESSAGES``,
``LANG``; :func:`from_environment`). English is the fallback for anything else.
"""

import json
import os
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Final, Literal, get_args

__all__ = [
    "DEFAULT",
    "LANGUAGES",
    "Lang",
    "catalog",
    "from_environment",
    "negotiate",
    "parse_lang",
    "section",
    "text",
]

Lang = Literal["en", "ja"]
LANGUAGES: Final[tuple[Lang, ...]] = get_args(Lang)
DEFAULT: Final[Lang] = "en"


@cache
def catalog(lang: Lang) -> Mapping[str, str]:
    """Every message of ``lang`` by its key ``<section>.<name>``."""
    raw = json.loads(resources.files(__package__).joinpath(f"{lang}.json").read_text("utf-8"))
    return {
        f"{part}.{name}": message
        for part, entries in raw.items()
        for name, message in entries.items()
    }


def text(key: str, lang: Lang = DEFAULT, /, **values: object) -> str:
    """The message ``key`` in ``lang`` with ``values`` filled in; an unknown key is a
    programming error (KeyError), which tests/test_i18n.py keeps out of the code."""
    message = catalog(lang)[key]
    return message.format(**values) if values else message


def section(name: str, lang: Lang) -> dict[str, str]:
    """The messages of one section, by their key without the section (for the page)."""
    prefix = f"{name}."
    return {k[len(prefix) :]: v for k, v in catalog(lang).items() if k.startswith(prefix)}


def parse_lang(tag: str | None) -> Lang | None:
    """The catalog language of a language tag or POSIX locale name (``ja``, ``ja-JP``,
    ``ja_JP.UTF-8``, ``en-US``), or None when there is no catalog for it."""
    if not tag:
        return None
    primary = tag.strip().replace("_", "-").split(".")[0].split("@")[0].split("-")[0].lower()
    return primary if primary in LANGUAGES else None


def negotiate(accept_language: str | None) -> Lang:
    """The catalog language an ``Accept-Language`` header prefers most (RFC 9110 12.5.4:
    quality values; ``q=0`` refuses; ``*`` takes the default), English when none fits."""
    best: tuple[float, int, Lang] | None = None
    for order, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        lang = DEFAULT if tag.strip() == "*" else parse_lang(tag)
        if lang is None or quality <= 0:
            continue
        if best is None or (quality, -order) > (best[0], -best[1]):
            best = (quality, order, lang)
    return best[2] if best else DEFAULT


def from_environment(environ: Mapping[str, str] | None = None) -> Lang:
    """The command line's language: ``KYOSO_LANG``, else the POSIX locale variables in
    their order of precedence (the first one set decides), else English."""
    env = os.environ if environ is None else environ
    for name in ("KYOSO_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        if env.get(name):
            return parse_lang(env[name]) or DEFAULT
    return DEFAULT
