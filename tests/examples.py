"""Checks of the commented example configurations shipped with each component: every option
line carries a comment, and the defaults the comments state are the code's."""

from collections.abc import Collection
from pathlib import Path

import yaml

__all__ = ["documented_defaults", "uncommented_lines"]


def uncommented_lines(text: str) -> list[str]:
    """Option lines of ``text`` without a ``#`` comment (section headers and list items,
    which carry their options on their own lines, excepted)."""
    missing = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ", "{")) or stripped.endswith(":"):
            continue
        if "#" not in line:
            missing.append(f"line {number}: {line}")
    return missing


def documented_defaults(
    path: Path, section: str | None, ignore: Collection[str] = ()
) -> dict[str, object]:
    """``option: value  # default D`` lines directly under ``section:`` (``None``: the top
    level) -> D, read as YAML; options in ``ignore`` (defaults stated in words) left out."""
    lines = path.read_text().splitlines()
    if section is None:
        start, indent = 0, ""
    else:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{section}:")) + 1
        indent = "  "
    found: dict[str, object] = {}
    for line in lines[start:]:
        if section is not None and line and not line.startswith(" "):
            break  # the next section
        if not line.startswith(indent) or line[len(indent) :].startswith((" ", "#")):
            continue
        key, _, rest = line.strip().partition(":")
        if "# default " in rest and key not in ignore:
            token = rest.split("# default ", 1)[1].split()[0].rstrip(":;,")
            found[key] = yaml.safe_load(token)
    return found
