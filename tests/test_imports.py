"""The package's imports have a direction: no module of `tirun/` reaches itself through its
imports, lazy ones (inside functions) included, and the general modules do not use the toy
world."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tirun"


def _modules() -> dict[str, Path]:
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def import_graph() -> dict[str, set[str]]:
    """Each module's `tirun` imports, wherever in the file they are (a package's own
    `__init__` is not counted as its submodules' import)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, file in modules.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for name in names:
                target = resolve(name)
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "tirun.toybench.common" in graph["tirun.__main__"]  # imported inside run()
    assert "tirun.data" in graph["tirun.toyworld.concepts"]


def test_no_module_imports_itself_in_a_circle():
    graph = import_graph()
    circles = sorted(m for m in graph if m in reachable(graph, m))
    assert circles == []


def test_the_general_modules_do_not_use_the_toy_world():
    graph = import_graph()
    for module in ("tirun.data", "tirun.templates"):
        toy = sorted(m for m in reachable(graph, module) if m.startswith("tirun.toyworld"))
        assert toy == [], module
