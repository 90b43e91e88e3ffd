"""Named definitions of a policy file (`definitions:`): a term written once, used by its name.

`qualifying_hires: {text: ..., expr: count(h in hires where ...)}` lets the conditions, the
payable clauses, the amount and other definitions say `qualifying_hires`. Each use becomes an
`ast.Ref` holding the definition's expression, so every evaluator sees the same tree: the
interpreter evaluates a definition once per evaluation and shows its value in the trace, the
engine compiler inlines it (`ast.inline`), the vectorised trace computes it once per chunk.

A definition may use other definitions, in any order, but never itself through others (a
cycle); its name must not be one the expression language already gives a meaning to. Each is
type-checked once, and every use has that type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from rules import ast
from rules.errors import ExpressionTypeError, PolicySchemaError
from rules.facts import Catalogue
from rules.typecheck import CONTEXT, FUNCTIONS, Scope, check

# Bounds of an expression once its definitions are resolved, measured as if each were written out
# where it is used: the evaluators recurse once per level (Python's stack allows ~1,000 frames,
# the interpreter takes ~3 per level), and the engine compiler inlines every use, so a chain
# of definitions each using the previous one twice would double the written-out size per link.
# The reference pack's deepest expression is 9 levels, its largest 37 terms (job-expansion-subsidy).
MAX_DEPTH = 100
MAX_SIZE = 2_000
_NAME = re.compile(r"[a-z][a-z0-9_]*")  # whole name: fullmatch, so no trailing newline slips by
# Words of the grammar (rules/grammar.lark): the lexer never reads them as a name.
KEYWORDS = frozenset(
    {
        "if",
        "then",
        "else",
        "or",
        "and",
        "not",
        "in",
        "is",
        "missing",
        "present",
        "true",
        "false",
        "date",
        "count",
        "where",
    }
)


@dataclass(frozen=True)
class Definition:
    name: str
    text: str
    expr: ast.Expr  # the definitions it uses are resolved (ast.Ref)
    kind: str  # its type, as rules.typecheck gives it
    line: int  # where its name is written
    depth: int = 1  # of `expr` written out (every definition it uses inlined)
    size: int = 1  # nodes of `expr` written out


def reserved_names(catalogue: Catalogue) -> dict[str, str]:
    """Names a definition may not take, with what they already are."""
    names = dict.fromkeys(KEYWORDS, "a word of the expression language")
    names.update(dict.fromkeys(FUNCTIONS, "a function"))
    names.update(dict.fromkeys(CONTEXT, "a value of the evaluation"))
    names["params"] = "the prefix of parameters"
    for fact in catalogue.facts:
        names.setdefault(fact.split(".", 1)[0], f"the group of facts such as {fact}")
        names.setdefault(fact, "a fact")
    names.update(dict.fromkeys(catalogue.collections, "a collection of records"))
    return names


def load_definitions(
    raw: Mapping[str, tuple[str, int]], scope: Scope, parse: Callable[[str], ast.Expr]
) -> dict[str, Definition]:
    """The definitions of one file, each resolved and type-checked once, in an order where
    every definition comes after those it uses. `raw` maps each name to (text, line of the
    name); `parse(name)` parses that definition's expression with its file positions.
    Raises PolicySchemaError for a name already taken, ExpressionTypeError for a cycle or a
    type error, naming the file and line."""
    reserved = reserved_names(scope.catalogue)
    for name, (_, line) in raw.items():
        field = f"definitions.{name}"
        if not _NAME.fullmatch(name):
            raise PolicySchemaError(
                scope.file,
                line,
                "a definition name is lower-case letters, digits and '_', starting with a letter",
                field=field,
            )
        if name in reserved:
            raise PolicySchemaError(
                scope.file, line, f"{name!r} is {reserved[name]}: choose another name for the definition", field=field
            )
    parsed = {name: parse(name) for name in raw}
    names = frozenset(raw)
    uses = {name: _uses(expr, names, scope.file) for name, expr in parsed.items()}
    order = _dependency_order(uses, scope.file)

    definitions: dict[str, Definition] = {}
    for name in order:
        expr = resolve(parsed[name], definitions, scope.file)
        kind = check(expr, scope_with(scope, definitions))
        if kind.startswith("tiers["):
            raise ExpressionTypeError(
                scope.file,
                expr.pos.line,
                "a tier table is used only as tier(amount, params.<table>), never named",
                column=expr.pos.column,
            )
        text, line = raw[name]
        depth, size = _written_out(expr, definitions)
        definitions[name] = Definition(name, text, expr, kind, line, depth, size)
    return {name: definitions[name] for name in raw}  # file order, for showing them


def resolve(node: ast.Expr, definitions: Mapping[str, Definition], file: str) -> ast.Expr:
    """The expression with each use of a definition (a plain name) made an `ast.Ref`. Raises
    ExpressionTypeError when, written out, it would be deeper or larger than the bounds."""
    resolved = _resolved(node, definitions, file)
    depth, size = _written_out(resolved, definitions)
    if depth > MAX_DEPTH or size > MAX_SIZE:
        raise ExpressionTypeError(
            file,
            node.pos.line,
            f"this expression, with the definitions it uses "
            f"written out, is {depth} levels deep and {size} terms large; the bounds "
            f"are {MAX_DEPTH} and {MAX_SIZE}: split the policy or simplify its terms",
            column=node.pos.column,
        )
    return resolved


def _resolved(node: ast.Expr, definitions: Mapping[str, Definition], file: str) -> ast.Expr:
    if isinstance(node, ast.Presence) and isinstance(node.subject, ast.Name):
        named = _fact_named(node.subject, definitions)
        if named is not None:  # `state is missing`, state a definition that only names a fact
            return replace(node, subject=replace(named, pos=node.subject.pos))
    if isinstance(node, ast.Name) and len(node.parts) == 1 and node.parts[0] in definitions:
        return ast.Ref(node.parts[0], definitions[node.parts[0]].expr, node.pos)
    if isinstance(node, ast.Count) and node.variable in definitions:
        raise _shadowed(node, file)
    kids = ast.children(node)
    if not kids:
        return node
    return ast.with_children(node, tuple(_resolved(child, definitions, file) for child in kids))


def _fact_named(name: ast.Name, definitions: Mapping[str, Definition]) -> ast.Name | None:
    """The fact a definition stands for, through definitions that only name another, if it is one."""
    node: ast.Expr = name
    while isinstance(node, ast.Name) and len(node.parts) == 1 and node.parts[0] in definitions:
        node = definitions[node.parts[0]].expr
        while isinstance(node, ast.Ref):
            node = node.expr
    return node if isinstance(node, ast.Name) and node is not name else None


def _written_out(node: ast.Expr, definitions: Mapping[str, Definition]) -> tuple[int, int]:
    """(depth, size) of the expression as if each definition it uses were written out where it is
    used; a definition's own figures are taken as measured, never walked again."""
    if isinstance(node, ast.Ref):
        used = definitions[node.name]
        return used.depth + 1, used.size
    depth, size = 0, 1
    for child in ast.children(node):
        child_depth, child_size = _written_out(child, definitions)
        depth, size = max(depth, child_depth), size + child_size
    return depth + 1, size


def scope_with(scope: Scope, definitions: Mapping[str, Definition]) -> Scope:
    """The scope in which clauses and the amount are checked: every definition known, typed."""
    return scope.with_definitions({name: d.kind for name, d in definitions.items()})


def _uses(node: ast.Expr, names: frozenset[str], file: str) -> list[tuple[str, ast.Pos]]:
    """The definitions an expression names, with where, in source order."""
    found: list[tuple[str, ast.Pos]] = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and len(sub.parts) == 1 and sub.parts[0] in names:
            found.append((sub.parts[0], sub.pos))
        if isinstance(sub, ast.Count) and sub.variable in names:
            raise _shadowed(sub, file)
    return found


def _shadowed(node: ast.Count, file: str) -> ExpressionTypeError:
    return ExpressionTypeError(
        file,
        node.pos.line,
        f"the count variable {node.variable!r} is also the name of a definition: choose another letter",
        column=node.pos.column,
    )


def _dependency_order(uses: Mapping[str, list[tuple[str, ast.Pos]]], file: str) -> list[str]:
    """Every definition after the ones it uses (depth first, file order); a cycle is refused at
    the use that closes it."""
    order: list[str] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        path.append(name)
        for used, pos in uses[name]:
            if used in path:
                cycle = " -> ".join([*path[path.index(used) :], used])
                raise ExpressionTypeError(
                    file, pos.line, f"definition {used!r} depends on itself: {cycle}", column=pos.column
                )
            if used not in done:
                if len(path) >= MAX_DEPTH:  # each link is a level: refused before recursing deeper
                    raise ExpressionTypeError(
                        file,
                        pos.line,
                        f"definitions use one another more than "
                        f"{MAX_DEPTH} deep: {' -> '.join(path[:3])} -> ... -> {used}",
                        column=pos.column,
                    )
                visit(used)
        path.pop()
        done.add(name)
        order.append(name)

    for name in uses:
        if name not in done:
            visit(name)
    return order


__all__ = ["KEYWORDS", "Definition", "load_definitions", "reserved_names", "resolve", "scope_with"]
