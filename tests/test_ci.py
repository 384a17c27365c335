"""CI from nothing: every program the tests start is installed by .ci/run and the README."""

import re
import subprocess
from pathlib import Path

from executables import CI_RUN, data_packages, packages, unlisted

ROOT = Path(__file__).resolve().parent.parent


def _essential(package: str) -> bool:
    """Debian's essential packages are on every Debian system."""
    shown = subprocess.run(
        ["dpkg-query", "-W", "-f=${Essential}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout.strip() == "yes"


def test_a_program_missing_from_the_table_is_caught() -> None:
    unlisted()  # forget what the fixtures started
    subprocess.run(["true"], check=True)
    subprocess.run(["git", "--version"], check=True, capture_output=True)
    assert unlisted() == ["true"]
    assert unlisted() == []  # reported once


def test_ci_installs_every_package_of_the_table() -> None:
    script = CI_RUN.read_text()
    tables = [
        re.search(rf"^{name}='.*?^'$", script, re.MULTILINE | re.DOTALL)
        for name in ("PROGRAMS", "DATA")
    ]
    assert all(tables)
    line = next(x for x in script.splitlines() if x.startswith("mapfile -t packages"))
    code = "\n".join([*(t.group(0) for t in tables if t), line])
    listed = subprocess.run(
        ["bash", "-c", f"{code}; printf '%s\\n' \"${{packages[@]}}\""],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.split()
    assert sorted(listed) == sorted(set(packages().values()) | data_packages())


def test_the_readme_installs_every_package_the_tests_need() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"sudo apt-get install -y ([a-z0-9 .+-]+?) && python3 -m venv", readme)
    assert found is not None, "the README lost its set-up line"
    needed = {p for p in packages().values() if not _essential(p)} | data_packages()
    assert set(found.group(1).split()) == needed, CI_RUN
