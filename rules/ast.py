"""Syntax tree of the policy expression language (immutable nodes with their source position)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


@dataclass(frozen=True)
class Literal:
    """A constant: int (count or fen), Decimal (rate), str, bool or date."""

    value: int | Decimal | str | bool | date
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Name:
    """A dotted name: a fact (`si.layoffs`), a parameter (`params.sme_rate`), a record field
    inside a count (`h.age`), or a context value (`period`, `fact_year`, `today`)."""

    parts: tuple[str, ...]
    pos: Pos = field(compare=False)

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "not"
    operand: Expr
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / == != < <= > >=
    left: Expr
    right: Expr
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Logical:
    op: str  # "and" / "or"
    operands: tuple[Expr, ...]
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Membership:
    subject: Expr
    options: tuple[Expr, ...]
    negated: bool
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Presence:
    """`x is missing` (present=False) or `x is present` (present=True)."""

    subject: Expr
    present: bool
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Conditional:
    condition: Expr
    then: Expr
    otherwise: Expr
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Count:
    """`count(h in hires where <filter>)`: records of a collection for which the filter holds."""

    variable: str
    collection: str
    where: Expr | None
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Expr, ...]
    pos: Pos = field(compare=False)


@dataclass(frozen=True)
class Ref:
    """A use of a named definition of the policy file (`definitions:`), resolved to the
    definition's expression (`rules.definitions`); `pos` is where the name is used."""

    name: str
    expr: Expr
    pos: Pos = field(compare=False)


Expr = Literal | Name | Unary | Binary | Logical | Membership | Presence | Conditional | Count | Call | Ref

COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})


def children(node: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of a node, in source order."""
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Logical):
        return node.operands
    if isinstance(node, Membership):
        return (node.subject, *node.options)
    if isinstance(node, Presence):
        return (node.subject,)
    if isinstance(node, Conditional):
        return (node.condition, node.then, node.otherwise)
    if isinstance(node, Count):
        return (node.where,) if node.where is not None else ()
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Ref):
        return (node.expr,)
    return ()


def with_children(node: Expr, new: tuple[Expr, ...]) -> Expr:
    """`node` with its direct sub-expressions (as `children` lists them) replaced by `new`."""
    if isinstance(node, Unary):
        return replace(node, operand=new[0])
    if isinstance(node, Binary):
        return replace(node, left=new[0], right=new[1])
    if isinstance(node, Logical):
        return replace(node, operands=new)
    if isinstance(node, Membership):
        return replace(node, subject=new[0], options=new[1:])
    if isinstance(node, Presence):
        return replace(node, subject=new[0])
    if isinstance(node, Conditional):
        return replace(node, condition=new[0], then=new[1], otherwise=new[2])
    if isinstance(node, Count):
        return replace(node, where=new[0]) if new else node
    if isinstance(node, Call):
        return replace(node, args=new)
    if isinstance(node, Ref):
        return replace(node, expr=new[0])
    return node


def inline(node: Expr) -> Expr:
    """The expression with every use of a definition replaced by the definition's expression:
    the tree as if the policy had written each definition out where it is used."""
    if isinstance(node, Ref):
        return inline(node.expr)
    kids = children(node)
    return with_children(node, tuple(inline(child) for child in kids)) if kids else node


def walk(node: Expr) -> list[Expr]:
    """Every node of the tree, parents before children."""
    out = [node]
    for child in children(node):
        out.extend(walk(child))
    return out
