"""Headless Chromium for the tests of the overview page: render it, read what it shows,
and drive it (:func:`devtools`: click, switch language, screenshot, ask its fonts)."""

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Tab", "chromium", "devtools", "png_colours", "png_rows", "rendered"]

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


def _decoded(png: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and the filtered scanlines of an 8-bit PNG."""
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
    assert len(raw) == (1 + width * channels) * height
    return width, height, channels, raw


def png_rows(png: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct scanlines of an 8-bit PNG: a blank page
    has one (every row filtered the same way to the same bytes)."""
    width, height, channels, raw = _decoded(png)
    stride = 1 + width * channels
    return width, height, len({raw[i : i + stride] for i in range(0, len(raw), stride)})


def png_colours(png: bytes) -> Counter[tuple[int, int, int]]:
    """How many pixels of an 8-bit RGB(A) PNG have each colour (its filters undone)."""
    width, height, channels, raw = _decoded(png)
    assert channels in (3, 4)
    stride = width * channels
    previous = bytearray(stride)
    counts: Counter[tuple[int, int, int]] = Counter()
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        counts.update(zip(line[0::channels], line[1::channels], line[2::channels], strict=True))
        previous = line
    return counts


class Tab:
    """One page of a headless Chromium driven over the DevTools protocol on a pipe (its
    file descriptors 3 and 4, NUL-separated JSON: no WebSocket client needed): run script
    in it, take screenshots, ask which fonts drew a node's text."""

    def __init__(self, send: int, receive: int) -> None:
        self._send, self._receive = send, receive
        self._pending, self._next, self._session = b"", 0, ""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def call(self, method: str, /, **params: object) -> dict[str, Any]:
        """The result of one DevTools command (events that come between are dropped)."""
        self._next += 1
        message: dict[str, object] = {"id": self._next, "method": method, "params": params}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._pending:
                ready, _, _ = select.select([self._receive], [], [], 60)
                assert ready, f"Chromium did not answer {method}"
                block = os.read(self._receive, 1 << 16)
                assert block, f"Chromium quit during {method}"
                self._pending += block
            raw, _, self._pending = self._pending.partition(b"\0")
            answer = json.loads(raw)
            if answer.get("id") == self._next:
                assert "error" not in answer, (method, answer["error"])
                return dict(answer["result"])

    def evaluate(self, expression: str) -> Any:
        """The value of a script expression in the page (a promise is awaited)."""
        found = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in found, found["exceptionDetails"]
        return found["result"].get("value")

    def until(self, expression: str, *, attempts: int = 600) -> Any:
        """The value of ``expression`` once it is truthy, asked every 0.1 s."""
        for _ in range(attempts):
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"never true in the page: {expression}")

    def open(self, url: str, *, width: int = 1024, height: int = 768) -> None:
        """Load ``url`` in a ``width`` x ``height`` viewport (a tablet's by default)."""
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path, *, selector: str | None = None, full: bool = False) -> bytes:
        """A PNG of the viewport, of the whole page (``full``) or of the first element
        matching ``selector``, written to ``path``."""
        params: dict[str, object] = {"format": "png"}
        box = None
        if selector is not None:
            box = self.evaluate(
                "(r => [r.x + scrollX, r.y + scrollY, r.width, r.height])"
                f"(document.querySelector({json.dumps(selector)}).getBoundingClientRect())"
            )
        elif full:
            box = self.evaluate(
                "(e => [0, 0, e.scrollWidth, e.scrollHeight])(document.documentElement)"
            )
        if box is not None:
            x, y, w, h = box
            params.update(
                clip={"x": x, "y": y, "width": w, "height": h, "scale": 1},
                captureBeyondViewport=True,
            )
        png = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        path.write_bytes(png)
        return png

    def fonts(self, selector: str) -> list[tuple[str, str, int]]:
        """Per element matching ``selector``: its text, and each font that drew it with how
        many of its glyphs (CSS.getPlatformFontsForNode: what the screen shows)."""
        self.call("DOM.enable")
        self.call("CSS.enable")
        document = self.call("DOM.getDocument", depth=-1)["root"]["nodeId"]
        found = []
        for node in self.call("DOM.querySelectorAll", nodeId=document, selector=selector)[
            "nodeIds"
        ]:
            text = self.call("DOM.resolveNode", nodeId=node)["object"]["objectId"]
            words = self.call(
                "Runtime.callFunctionOn",
                objectId=text,
                functionDeclaration="function () { return this.textContent; }",
                returnByValue=True,
            )["result"]["value"]
            for font in self.call("CSS.getPlatformFontsForNode", nodeId=node)["fonts"]:
                found.append((words, font["familyName"], font["glyphCount"]))
        return found


@contextlib.contextmanager
def devtools(workdir: Path, *, languages: str = "en-US,en") -> Iterator[Tab]:
    """A headless Chromium whose reader prefers ``languages`` (navigator.languages,
    Accept-Language), with a fresh profile under ``workdir``, for the ``with`` block."""
    assert CHROMIUM is not None, "install Debian's chromium (apt-get install -y chromium)"

    def high(fd: int) -> int:  # above 9: clear of the 3 and 4 that the shell fills below
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return moved

    to_browser, from_us = map(high, os.pipe())
    to_us, from_browser = map(high, os.pipe())

    # bash gives Chromium the pipe's ends as its fds 3 and 4, where it looks for them
    # (safer than a preexec_fn in a process that runs threads).
    moved = f'exec "$@" 3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-'
    process = subprocess.Popen(
        [
            "bash",
            "-c",
            moved,
            "bash",
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={workdir / f'profile-{time.monotonic_ns()}'}",
            f"--accept-lang={languages}",
            f"--lang={languages.split(',', maxsplit=1)[0]}",
            "--remote-debugging-pipe",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(to_browser, from_browser),
    )
    os.close(to_browser)
    os.close(from_browser)
    try:
        yield Tab(from_us, to_us)
    finally:
        os.close(from_us)  # Chromium quits when its end of the pipe closes
        os.close(to_us)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)
