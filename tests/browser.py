"""Headless Chromium for the tests of the overview page: render it, read what it shows."""

import os
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["CHROMIUM", "chromium", "png_rows", "rendered"]

CHROMIUM = shutil.which("chromium")


def chromium(
    workdir: Path, *args: str, budget_ms: int = 10_000, env: Mapping[str, str] | None = None
) -> str:
    """Run headless Chromium with ``args`` (a URL, ``--dump-dom``, ``--screenshot=...``)
    and a fresh profile under ``workdir``; its standard output. ``env`` is added to this
    process's environment (``{"TZ": "Europe/London"}`` sets the browser's time zone)."""
    assert CHROMIUM is not None, "install Debian's chromium (apt-get install -y chromium)"
    profile = workdir / f"profile-{time.monotonic_ns()}"
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            # Chromium refuses to start its sandbox as root, which the CI containers are.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return completed.stdout


class _Elements(HTMLParser):
    """Every element's attributes and the text directly within it, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append({"tag": tag, **{k: v or "" for k, v in attrs}})


def rendered(dom: str) -> list[dict[str, str]]:
    """The elements of a dumped DOM: tag and attributes, in document order."""
    parser = _Elements()
    parser.feed(dom)
    return parser.elements


def png_rows(png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct scanlines of an 8-bit PNG: a blank page
    has one (every row filtered the same way to the same bytes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    offset, data, width, height, channels = 8, b"", 0, 0, 0
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        chunk = png[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            data += chunk
        offset += 12 + length
    raw = zlib.decompress(data)
    stride = 1 + width * channels
    assert len(raw) == stride * height
    return width, height, len({raw[i : i + stride] for i in range(0, len(raw), stride)})
