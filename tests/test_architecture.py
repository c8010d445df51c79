"""The house rules of the code base, checked on every `make test`.

Imports go one way, from the wire contracts up to the command line:
`models` <- core rooms of `gateway/` <- `adapters` <- `gateway.app` <- `gateway.cli`, and inside
the core from the foundation (logging, errors, configuration, the bus seam) through the rooms in
the order of ROOMS below. Every import counts, type-only ones and imports inside functions too:
a lazy import still ties the two modules together for a reader. No module may be part of an
import cycle, and no module of gateway/, adapters/ or models/ may grow past MAX_LINES.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "gateway", "adapters")
MAX_LINES = 450

ROOMS = (
    "models",
    "gateway",  # the package itself: its docstring is the map of the rooms
    "gateway.logging",
    "gateway.errors",
    "gateway.storage_schema",
    "gateway.executor",
    "gateway.config",
    "gateway.bundled",
    "gateway.llama_backends",
    "gateway.version",
    "gateway.bus",
    "gateway.grounding",
    "gateway.rag",
    "gateway.worker",
    "gateway.questions",
    "gateway.diagnosis",
    "gateway.evaluation",
    "gateway.ops",
    "adapters",
    "gateway.app",
    "gateway.cli",
)
"""Lowest first: a module may import its own room and the rooms before it, nothing after."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `path` imports anywhere in its body (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from gateway.cli import kb` imports the module gateway.cli.kb; `from
            # gateway.config import Settings` the module gateway.config
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            module = target
            while module and module not in known:
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def room_of(module: str) -> int:
    best = -1
    best_len = -1
    for index, room in enumerate(ROOMS):
        if (module == room or module.startswith(room + ".")) and len(room) > best_len:
            best, best_len = index, len(room)
    if best < 0:
        raise AssertionError(f"{module} belongs to no room: add it to ROOMS")
    return best


def test_every_module_belongs_to_a_room() -> None:
    for module in import_graph():
        room_of(module)


def test_imports_go_one_way() -> None:
    wrong = sorted(
        f"{module} ({ROOMS[room_of(module)]}) imports {target} ({ROOMS[room_of(target)]})"
        for module, targets in import_graph().items()
        for target in targets
        if room_of(target) > room_of(module)
    )
    assert wrong == []


def test_no_import_cycles() -> None:
    sorter = graphlib.TopologicalSorter(import_graph())
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_the_checker_sees_a_cycle_and_a_wrong_way_import(tmp_path: Path) -> None:
    """The two checks above would pass on an empty graph: show they see what they look for."""
    low = tmp_path / "low.py"
    high = tmp_path / "high.py"
    low.write_text("from gateway.cli import kb\n", encoding="utf-8")
    high.write_text("def f():\n    from gateway.questions import service\n", encoding="utf-8")
    known = {"gateway.cli", "gateway.cli.kb", "gateway.questions", "gateway.questions.service"}
    assert imported_modules("gateway.rag.low", low, known) == {"gateway.cli.kb"}
    assert imported_modules("gateway.cli.high", high, known) == {"gateway.questions.service"}
    assert room_of("gateway.cli.kb") > room_of("gateway.rag.low")
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).prepare()


def test_no_module_is_too_long_to_read() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in project_modules().values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_room_says_what_it_owns() -> None:
    """Each room's opening docstring names what it owns and what it may import."""
    for package in sorted({p.parent for p in project_modules().values()}):
        init = package / "__init__.py"
        if not init.exists():
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        where = init.relative_to(ROOT)
        assert "owns" in doc.lower(), f"{where}: docstring does not say what the room owns"
        assert "import" in doc.lower(), f"{where}: docstring does not say what it may import"
