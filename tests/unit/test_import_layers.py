"""The project's packages import each other in layers: no module imports, directly or through
others, a module that imports it back.

Imports are read from the source with `ast`, at any depth (an import inside a function joins the
same graph: it only moves the cycle from import time to call time). Imports under
`if TYPE_CHECKING:` are left out: they never run, and annotations are all they serve.
"""
from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("enterprise_registry", "rules", "service")


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of the packages below `root`, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


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
        if node.level:   # relative: `from . import x`, `from ..y import z`
            anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:   # `from a import b` imports module a.b when there is one
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

    def visit(start: str) -> None:   # Tarjan's algorithm, iterative (no recursion limit)
        work = [(start, iter(sorted(graph[start])))]
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
                    work.append((successor, iter(sorted(graph[successor]))))
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
            for successor in sorted(graph[node] & group):
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


def test_no_import_cycle_among_the_project_packages() -> None:
    found = cycles(import_graph(module_files(REPO_ROOT, PACKAGES)))
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(path) for path in found)


def test_the_graph_sees_the_project_imports() -> None:
    graph = import_graph(module_files(REPO_ROOT, PACKAGES))
    assert "service.cli" in graph and "rules.loader" in graph
    assert "rules.loader" in graph["service.cli.defaults"]           # `from rules.loader import ...`
    assert "service.payouts.batches" in graph["service.payouts.export"]   # `from service.payouts import batches`


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return module_files(root, ["pkg"])


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import thing\n",
        "pkg/b.py": "from . import c\nthing = 1\n",
        "pkg/c.py": "def later():\n    import pkg.a\n",
        "pkg/d.py": "import pkg.a\n",
    })
    assert cycles(import_graph(modules)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_type_checking_imports_make_no_cycle_but_its_else_branch_does(tmp_path: Path) -> None:
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n",
        "pkg/c.py": "import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    from pkg.d import Y\n",
        "pkg/d.py": "from pkg import c\n",
    })
    assert cycles(import_graph(modules)) == [["pkg.c", "pkg.d", "pkg.c"]]
