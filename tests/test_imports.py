"""The package's imports have a direction: each module imports from its own layer and the
layers below it (`LAYERS`), lazy imports (inside functions) included; none reaches itself
through its imports; the general modules do not use the toy world."""

from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tirun"
# Top first. A module belongs to the layer of the longest pattern it matches; a module no
# pattern names is one of the parts, the bottom layer, so a new module starts where it may
# import the least.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "commands",
        (
            "tirun",  # the package itself: its `${toy:...}` resolver reads the toy concepts
            "tirun.__main__",
            "tirun.eval",
            "tirun.report",
            "tirun.xti_convert",
            "tirun.toybench.__main__",
            "tirun.toyworld.pretrain",
        ),
    ),
    ("applications", ("tirun.applications", "tirun.applications.*")),
    ("benchmark", ("tirun.toybench", "tirun.toybench.*")),
    (
        "training",
        (
            "tirun.train",
            "tirun.validation",
            "tirun.outputs",
            "tirun.checkpoint",
            "tirun.early_stop",
            "tirun.health",
            "tirun.tracking",
            "tirun.job_environment",
            "tirun.slurm_launcher",
        ),
    ),
    ("parts", ("tirun.*",)),
)


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


def layer(module: str) -> int:
    """The module's layer, 0 at the top."""
    matches = [
        (len(pattern), depth)
        for depth, (_, patterns) in enumerate(LAYERS)
        for pattern in patterns
        if fnmatch(module, pattern)
    ]
    return max(matches)[1]


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import of a module from a layer above its own."""
    return sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if layer(target) < layer(module)
    )


def test_the_layers_place_commands_above_applications_above_the_benchmark_and_training():
    names = {module: LAYERS[layer(module)][0] for module in _modules()}
    assert names["tirun.__main__"] == "commands"
    assert names["tirun.applications.context"] == "applications"
    assert names["tirun.toybench.__main__"] == "commands"
    assert names["tirun.toybench.score"] == "benchmark"
    assert names["tirun.train"] == "training"
    assert names["tirun.toyworld.render"] == "parts"
    assert upward_imports({"tirun.train": {"tirun.applications"}}) == [
        ("tirun.train", "tirun.applications")
    ]


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports(import_graph()) == []


def test_the_applications_train_nothing_and_nothing_below_them_uses_them():
    graph = import_graph()
    applications = {m for m in graph if layer(m) == 1}
    for module in sorted(applications):
        assert "tirun.train" not in reachable(graph, module), module
    below = [m for m in graph if layer(m) > 1]  # the benchmark, training and the parts
    for module in below:
        assert not reachable(graph, module) & applications, module


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "tirun.applications" in graph["tirun.__main__"]  # imported inside run()
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
