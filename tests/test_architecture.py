"""The house keeps its shape: every import runs downhill, as docs/architecture.md draws it.

Each subpackage (or top-level module) of ``kyoso`` stands on a floor; a module may import
its own package and anything on a lower floor, never a peer on its own floor nor anything
above. Imports inside functions count too: a lazy import is still an arrow.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "kyoso"

FLOORS: list[set[str]] = [
    {"i18n"},
    {"contract", "validation"},
    {"mqtt", "ops", "sparkplug"},
    {"gateway", "simulators", "influx"},
    {"store", "regional"},
    {"ingest", "capacity", "dashboards", "alerts"},
    {"api"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
"""Lowest first; docs/architecture.md draws the same."""

FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def _imports(root: Path, path: Path) -> list[tuple[int, str]]:
    """(line, imported kyoso package) for every import of another kyoso package in ``path``."""
    parts = path.relative_to(root).with_suffix("").parts
    own = parts[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        elif isinstance(node, ast.ImportFrom):  # relative: resolve against the package
            package = list(parts[:-1])[: len(parts) - node.level]
            modules = [".".join(["kyoso", *package, *([node.module] if node.module else [])])]
        else:
            continue
        for module in modules:
            names = module.split(".")
            if names[0] == "kyoso" and len(names) > 1 and names[1] != own:
                found.append((node.lineno, names[1]))
    return found


def uphill(root: Path) -> list[str]:
    """Every import under ``root`` (a ``kyoso`` tree) that does not run downhill."""
    found = []
    for path in sorted(root.rglob("*.py")):
        own = path.relative_to(root).with_suffix("").parts[0]
        if own == "__init__":
            continue
        for line, target in _imports(root, path):
            if FLOOR[target] >= FLOOR[own]:
                found.append(f"{path.relative_to(root.parent)}:{line}: {own} imports {target}")
    return found


def test_every_package_has_a_floor() -> None:
    packages = {p.relative_to(ROOT).with_suffix("").parts[0] for p in ROOT.rglob("*.py")}
    assert packages - {"__init__"} == set(FLOOR)


def test_every_import_runs_downhill() -> None:
    found = uphill(ROOT)
    assert not found, "imports that do not run downhill:\n" + "\n".join(found)


def test_an_import_back_up_or_across_a_floor_is_found(tmp_path: Path) -> None:
    tree = tmp_path / "kyoso"
    (tree / "store").mkdir(parents=True)
    (tree / "store" / "base.py").write_text(
        "from kyoso.contract import Sample\n"
        "def f():\n    from kyoso.ingest import service\n"  # lazy, still an arrow
    )
    (tree / "gateway").mkdir()
    (tree / "gateway" / "agent.py").write_text("from ..simulators import runner\n")
    assert uphill(tree) == [
        "kyoso/gateway/agent.py:1: gateway imports simulators",
        "kyoso/store/base.py:3: store imports ingest",
    ]
