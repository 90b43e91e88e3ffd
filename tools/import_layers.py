"""Who imports whom, read from the `import` statements of the project's own packages.

    python tools/import_layers.py      # or: make layers

prints, per layer (a top-level package, or a package or module directly under `service/`), the
layers it imports, and every import cycle between modules and between layers.
docs/architecture.md ("Layers") is written from its output; tests/unit/test_import_layers.py
holds the rules that must not break. Imports are read with `ast` at any depth: an import inside
a function joins the same graph (it only moves a cycle from import time to call time). Imports
under `if TYPE_CHECKING:` are left out: they never run, and annotations are all they serve.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

PACKAGES = ("enterprise_registry", "rules", "service")
ROOT = Path(__file__).resolve().parent.parent


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of the packages below `root`, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for child in ast.iter_child_nodes(node):
        # of an `if TYPE_CHECKING:` only the `else:` branch runs
        statements = child.orelse if isinstance(child, ast.If) and _is_type_checking(child.test) else [child]
        for statement in statements:
            if isinstance(statement, ast.Import | ast.ImportFrom):
                yield statement
            else:
                yield from _runtime_imports(statement)


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The project module `name` is, or lies in (`a.b.c` of a function c in module a.b)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, modules: Mapping[str, Path]) -> set[str]:
    """The project modules `module` imports, at any depth of its source."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(m for alias in node.names if (m := _known(alias.name, modules)))
            continue
        base = node.module or ""
        if node.level:  # relative: `from . import x`, `from ..y import z`
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:  # `from a import b` imports module a.b when there is one
            submodule = f"{base}.{alias.name}"
            target = submodule if submodule in modules else _known(base, modules)
            if target:
                found.add(target)
    found.discard(module)
    return found


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    return {module: imports_of(module, modules) for module in modules}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module, each as one closed path through
    the group (first module repeated at the end), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(sorted(graph.get(start, set()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, set())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(_closed_path(graph, group) for group in groups)


def _closed_path(graph: Mapping[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, within the group."""
    start = min(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph.get(node, set()) & group):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not strongly connected")


def module_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Each project module -> the project modules it imports."""
    return import_graph(module_files(root, PACKAGES))


def external_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Each project module -> the top-level names of the other distributions it imports."""
    found: dict[str, set[str]] = defaultdict(set)
    for module, path in module_files(root, PACKAGES).items():
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if node.level == 0
                else []
            )
            found[module].update(top for name in names if (top := name.partition(".")[0]) not in PACKAGES)
    return dict(found)


def layer(module: str) -> str:
    """`rules`, `enterprise_registry`, or `service.<package or module>`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "service" and len(parts) > 1 else parts[0]


def layer_imports(imports: Mapping[str, set[str]]) -> dict[str, set[str]]:
    layers: dict[str, set[str]] = defaultdict(set)
    for module, targets in imports.items():
        layers[layer(module)].update(layer(t) for t in targets if layer(t) != layer(module))
    return dict(layers)


def main() -> int:
    imports = module_imports()
    for name, targets in sorted(layer_imports(imports).items()):
        print(f"{name:28} -> {', '.join(sorted(targets)) or '(nothing of the project)'}")
    print()
    for what, graph in (("module", imports), ("layer", layer_imports(imports))):
        found = cycles(graph)
        print(f"{what} import cycles:" if found else f"no {what} import cycles")
        for path in found:
            print("  " + " -> ".join(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
