"""Every program a test starts must come from a Debian package that .ci/run installs.

A machine that happens to have a program (installed by hand, or by an earlier session)
hides a missing install step until CI runs on a fresh one: that is how ``mosquitto_sub``
once went missing. An audit hook (PEP 578) sees every process the test session starts,
whatever starts it (``subprocess``, asyncio, a library); after each test, the programs it
started are looked up in the ``PROGRAMS`` table ``.ci/run`` installs from, and a program not
listed there fails the test.
Python itself (this interpreter, and what a virtual environment holds) is exempt: pip
installs it.

The hook sees this process only. A test whose programs are started by a Python process it
starts (``python -m bench``, which runs the benchmarks, which start influxd, Mosquitto and
Node-RED) gives that process the environment of :func:`record_children`: every Python
process under it then appends what it starts to a file, which :func:`unlisted_in` checks.
"""

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = ROOT / ".ci" / "run"

__all__ = [
    "CI_RUN",
    "data_packages",
    "install_hook",
    "packages",
    "record_children",
    "started_in",
    "unlisted",
    "unlisted_in",
]

_started: list[Path] = []


def packages() -> dict[str, str]:
    """Program name -> Debian package, from the ``PROGRAMS`` table of ``.ci/run``."""
    found = re.search(r"^PROGRAMS='\n(.*?)^'$", CI_RUN.read_text(), re.MULTILINE | re.DOTALL)
    assert found is not None, f"{CI_RUN} lost its PROGRAMS table"
    return dict(line.split() for line in found.group(1).splitlines() if line.strip())


def data_packages() -> set[str]:
    """The Debian packages of the ``DATA`` table of ``.ci/run``: what the tests need that is
    no program (a font the browser renders with)."""
    found = re.search(r"^DATA='\n(.*?)^'$", CI_RUN.read_text(), re.MULTILINE | re.DOTALL)
    assert found is not None, f"{CI_RUN} lost its DATA table"
    return {line.split()[0] for line in found.group(1).splitlines() if line.strip()}


def _program(event: str, args: tuple[Any, ...]) -> Path | None:
    """The program an audit event starts, if it starts one."""
    if event == "subprocess.Popen":
        executable, argv, cwd = args[0], args[1], args[2]
        program = executable if executable is not None else next(iter(argv or []), None)
        if program is not None:
            name = os.fsdecode(program)
            found = shutil.which(name) if "/" not in name else None  # as found on PATH
            return Path(found or Path(os.fsdecode(cwd or ".")) / name)
    elif event == "os.posix_spawn":
        return Path(os.fsdecode(args[0]))
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if (program := _program(event, args)) is not None:
        _started.append(program)


def install_hook() -> None:
    """Start recording the programs this process starts (once per process)."""
    sys.addaudithook(_audit)


def _exempt(program: Path) -> bool:
    """Python, or a program of a virtual environment (in its ``bin``, beside ``pyvenv.cfg``)."""
    if program.name.startswith("python"):
        return True
    return (program.parent.parent / "pyvenv.cfg").is_file()


def unlisted() -> list[str]:
    """The programs started since the last call that the ``PROGRAMS`` table does not list."""
    started, _started[:] = list(_started), []
    return _unlisted(started)


def _unlisted(started: list[Path]) -> list[str]:
    table = packages()
    return sorted({p.name for p in started if not _exempt(p) and p.name not in table})


_CHILD_HOOK = """# Written by tests/executables.py: record the programs this process starts.
import importlib.util

_spec = importlib.util.spec_from_file_location("_kyoso_test_executables", {module!r})
_executables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_executables)
_executables.record_to({log!r})
"""


def record_children(folder: Path) -> dict[str, str]:
    """Environment variables under which each Python process started with them, and each
    one those start, appends the programs it starts to ``folder/started`` (a
    ``sitecustomize`` module in ``folder``, put first on ``PYTHONPATH``)."""
    folder.mkdir(parents=True, exist_ok=True)
    hook = _CHILD_HOOK.format(module=str(Path(__file__).resolve()), log=str(folder / "started"))
    (folder / "sitecustomize.py").write_text(hook)
    path = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(path)}


def record_to(log: str) -> None:
    """Append each program this process starts to ``log``, one path a line."""

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if (program := _program(event, args)) is not None:
            with open(log, "a") as out:  # appends of whole lines: processes may share it
                out.write(f"{program}\n")

    sys.addaudithook(audit)


def started_in(folder: Path) -> list[Path]:
    """The programs the processes given :func:`record_children` for ``folder`` started."""
    log = folder / "started"
    return [Path(line) for line in log.read_text().splitlines()] if log.is_file() else []


def unlisted_in(folder: Path) -> list[str]:
    """Of those, the ones the ``PROGRAMS`` table does not list."""
    return _unlisted(started_in(folder))
