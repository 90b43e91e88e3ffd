"""Who imports whom, read from the `import` statements of the project's own packages.

    python tools/import_layers.py      # or: make layers

prints, per layer (a top-level package, or a package or module directly under `service/`), the
layers it imports, and every import cycle between modules. docs/architecture.md ("Layers") is
written from its output; tests/unit/test_import_layers.py holds the rules that must not break.
Imports under `if TYPE_CHECKING:` are left out (they never run); imports inside functions are
counted (they run, only later).
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("rules", "enterprise_registry", "service")
ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}


def module_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Each project module -> the project modules it imports (TYPE_CHECKING blocks excepted)."""
    modules = project_modules(root)
    imports: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for imported in _imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            while imported and imported not in modules:   # `from a.b import c`: c may be a name in a.b
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                imports[name].add(imported)
    return dict(imports)


def external_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Each project module -> the top-level names of the other distributions it imports."""
    modules = project_modules(root)
    own = set(PACKAGES)
    found: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for imported in _imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            top = imported.partition(".")[0]
            if top not in own:
                found[name].add(top)
    return dict(found)


def layer(module: str) -> str:
    """`rules`, `enterprise_registry`, or `service.<package or module>`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "service" and len(parts) > 1 else parts[0]


def layer_imports(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    layers: dict[str, set[str]] = defaultdict(set)
    for module, targets in imports.items():
        layers[layer(module)].update(layer(t) for t in targets if layer(t) != layer(module))
    return dict(layers)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _imported_names(tree: ast.Module) -> list[str]:
    names: list[str] = []
    skipped = {id(node) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)}
    for node in _walk_skipping(tree, skipped):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _walk_skipping(node: ast.AST, skipped: set[int]) -> list[ast.AST]:
    found: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if id(child) in skipped:
            found += [n for n in child.orelse for n in [n, *_walk_skipping(n, skipped)]]
            continue
        found.append(child)
        found += _walk_skipping(child, skipped)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def main() -> int:
    imports = module_imports()
    for name, targets in sorted(layer_imports(imports).items()):
        print(f"{name:28} -> {', '.join(sorted(targets)) or '(nothing of the project)'}")
    print()
    module_cycles = cycles(imports)
    print("module import cycles:" if module_cycles else "no module import cycles")
    for component in module_cycles:
        print("  " + " <-> ".join(component))
    layer_cycles = cycles(layer_imports(imports))
    print("layer import cycles:" if layer_cycles else "no layer import cycles")
    for component in layer_cycles:
        print("  " + " <-> ".join(component))
    return 0


if __name__ == "__main__":
    sys.exit(main())
