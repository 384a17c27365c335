"""Every program a test starts must come from a Debian package that .ci/run installs.

A machine that happens to have a program (installed by hand, or by an earlier session)
hides a missing install step until CI runs on a fresh one: that is how ``mosquitto_sub``
once went missing. An audit hook (PEP 578) sees every process the test session starts,
whatever starts it (``subprocess``, asyncio, a library); after each test, the programs it
started are looked up in the ``PROGRAMS`` table ``.ci/run`` installs from, and a program not
listed there fails the test.
Python itself (this interpreter, and what a virtual environment holds) is exempt: pip
installs it.
"""

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = ROOT / ".ci" / "run"

__all__ = ["CI_RUN", "install_hook", "packages", "unlisted"]

_started: list[Path] = []


def packages() -> dict[str, str]:
    """Program name -> Debian package, from the ``PROGRAMS`` table of ``.ci/run``."""
    found = re.search(r"^PROGRAMS='\n(.*?)^'$", CI_RUN.read_text(), re.MULTILINE | re.DOTALL)
    assert found is not None, f"{CI_RUN} lost its PROGRAMS table"
    return dict(line.split() for line in found.group(1).splitlines() if line.strip())


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "subprocess.Popen":
        executable, argv, cwd = args[0], args[1], args[2]
        program = executable if executable is not None else next(iter(argv or []), None)
        if program is not None:
            name = os.fsdecode(program)
            found = shutil.which(name) if "/" not in name else None  # as found on PATH
            _started.append(Path(found or Path(os.fsdecode(cwd or ".")) / name))
    elif event == "os.posix_spawn":
        _started.append(Path(os.fsdecode(args[0])))


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
    table = packages()
    return sorted({p.name for p in started if not _exempt(p) and p.name not in table})
