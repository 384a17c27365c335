"""Eclipse Tahu's JavaScript Sparkplug B libraries as the other side of Kyoso's Sparkplug tests.

``tests/sparkplug/`` holds a ``package.json`` and lock pinning Tahu's ``sparkplug-payload``
and ``sparkplug-client`` (and the ``mqtt`` client they use); the session fixture
:func:`sparkplug_node_modules` runs ``npm ci`` there once when ``node_modules`` is missing.
Each script in that folder reads one JSON command a line on stdin and writes one JSON event a
line on stdout; :class:`NodeScript` runs one and lets a test send commands and wait for
events, with a generous bound so a loaded machine does not fail a test.
"""

import json
import queue
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import pytest
from services import find_binary

__all__ = ["SPARKPLUG_DIR", "NodeScript", "sparkplug_node_modules"]

SPARKPLUG_DIR = Path(__file__).resolve().parent / "sparkplug"
"""The folder of the Node package and its scripts."""

WAIT_S = 30.0
"""How long a test waits for an event before it fails."""

Event = dict[str, Any]


@pytest.fixture(scope="session")
def sparkplug_node_modules() -> Path:
    """``tests/sparkplug/node_modules``, installed from the lock by ``npm ci`` if missing."""
    modules = SPARKPLUG_DIR / "node_modules"
    if not modules.is_dir():
        subprocess.run(
            [find_binary("npm", "npm"), "ci", "--no-audit", "--no-fund"],
            cwd=SPARKPLUG_DIR,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return modules


class NodeScript:
    """One ``node tests/sparkplug/<script>`` process: JSON commands in, JSON events out.

    Events are read by a thread into a queue, so :meth:`next` waits on the queue with a
    bound; stderr is kept for the failure message. Only this process is ever signalled.
    """

    def __init__(self, script: str, *args: str) -> None:
        self._name = script
        self._process = subprocess.Popen(
            [find_binary("node", "nodejs"), str(SPARKPLUG_DIR / script), *args],
            cwd=SPARKPLUG_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._events: queue.Queue[Event | None] = queue.Queue()
        self._stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_events(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if line.strip():
                self._events.put(json.loads(line))
        self._events.put(None)

    def _read_stderr(self) -> None:
        stream: IO[str] | None = self._process.stderr
        assert stream is not None
        self._stderr.extend(stream)

    def send(self, command: Event) -> None:
        """Write ``command`` as one JSON line to the script."""
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()

    def next(self, accept: Callable[[Event], bool] = lambda _: True) -> Event:
        """The next event ``accept`` takes (skipping others); fails after :data:`WAIT_S`."""
        while True:
            try:
                event = self._events.get(timeout=WAIT_S)
            except queue.Empty:
                pytest.fail(f"no event from {self._name} in {WAIT_S} s{self._tail()}")
            if event is None:
                pytest.fail(f"{self._name} ended{self._tail()}")
            if accept(event):
                return event

    def ask(self, command: Event) -> Event:
        """Send ``command`` and return the answer; fails on an ``error`` answer."""
        self.send(command)
        answer = self.next()
        assert "error" not in answer, f"{command} -> {answer['error']}"
        return answer

    def drain(self) -> list[Event]:
        """The events already received and not yet taken."""
        found: list[Event] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return found
            if event is not None:
                found.append(event)

    def _tail(self) -> str:
        text = "".join(self._stderr[-40:])
        return f"; stderr:\n{text}" if text else ""

    def close(self) -> None:
        """End the script: close its stdin, then terminate it if it lingers."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
