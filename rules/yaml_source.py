"""YAML loading that remembers where every value came from (line, column) and refuses duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from rules.errors import PolicySchemaError, PolicySyntaxError

Path = tuple[str | int, ...]

# Bounds on hostile YAML, checked before anything recurses over it. PyYAML composes (and we
# construct) a document by recursion, a few frames a level; policies nest under 10 deep.
MAX_DEPTH = 64
# Values built in all, aliases expanded: a few `&a [*b, *b, ...]` lines would otherwise expand
# to billions ("billion laughs"). The largest shipped test file builds under 2,000.
MAX_VALUES = 200_000


@dataclass(frozen=True)
class Located:
    """A YAML document as plain Python data plus the position of each value by its key path."""

    data: Any
    positions: dict[Path, tuple[int, int, str]]  # path -> (line, column, scalar style)
    file: str
    lines: tuple[str, ...] = ()
    values: dict[Path, tuple[int, int, str]] = field(default_factory=dict)  # where each value starts

    def line_of(self, path: Path) -> int | None:
        """The line of the value at `path`, or of its nearest enclosing value."""
        while True:
            if path in self.positions:
                return self.positions[path][0]
            if not path:
                return None
            path = path[:-1]

    def text_start(self, path: Path) -> tuple[int, int, int]:
        """Where the text of a scalar begins, and the indentation YAML strips from its
        continuation lines (block scalars start on the line after `|`)."""
        line, column, style = self.values.get(path, (1, 1, ""))
        if style in ("|", ">"):
            body = self.lines[line] if line < len(self.lines) else ""
            indent = len(body) - len(body.lstrip(" "))
            return line + 1, indent + 1, indent
        if style in ("'", '"'):
            return line, column + 1, 0
        return line, column, 0


def load(text: str, file: str) -> Located:
    """Parse YAML text; raise PolicySyntaxError with the line of a YAML error."""
    try:
        _check_depth(text, file)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise PolicySyntaxError(file, line, f"YAML: {exc.problem or exc}", column=column) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ...): no mark
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise PolicySyntaxError(
            file, line, f"YAML: character U+{exc.character:04X} is not allowed", column=column
        ) from None
    positions: dict[Path, tuple[int, int, str]] = {}
    values: dict[Path, tuple[int, int, str]] = {}
    data = _construct(root, (), positions, values, file) if root is not None else None
    return Located(data, positions, file, tuple(text.splitlines()), values)


def _check_depth(text: str, file: str) -> None:
    """PolicySyntaxError where collections nest deeper than MAX_DEPTH; YAML's event parser is
    iterative, so this runs before the composer's recursion could overflow."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
                raise PolicySyntaxError(file, line, f"YAML nested more than {MAX_DEPTH} deep", column=column)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _scalar(node: Node, file: str) -> Any:
    """A plain value as YAML reads it; a tag or value it cannot read is refused on its line."""
    try:
        return SafeConstructor().construct_object(node)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as exc:
        # `!!int 12x`, `2025-13-01`, `!foo 1`: PyYAML raises whatever its converter raised
        reason = getattr(exc, "problem", None) or str(exc)
        raise PolicySchemaError(
            file, node.start_mark.line + 1, f"YAML value cannot be read: {reason}", column=node.start_mark.column + 1
        ) from None


def _construct(
    node: Node,
    path: Path,
    positions: dict[Path, tuple[int, int, str]],
    values: dict[Path, tuple[int, int, str]],
    file: str,
) -> Any:
    style = getattr(node, "style", None) or ""
    mark = (node.start_mark.line + 1, node.start_mark.column + 1, style)
    # An alias repeats a node: one that holds itself (`&a [*a]`) nests without end, and
    # aliases of aliases multiply; the composer's check above sees neither.
    if len(path) > MAX_DEPTH:
        raise PolicySchemaError(file, mark[0], f"YAML nested more than {MAX_DEPTH} deep (through aliases)")
    if len(values) >= MAX_VALUES:
        raise PolicySchemaError(file, mark[0], f"YAML expands to more than {MAX_VALUES} values (through aliases)")
    values[path] = mark
    positions.setdefault(path, mark)  # a mapping entry is located at its key (set by the parent)
    if isinstance(node, MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, file)
            if isinstance(key, (dict, list)):
                raise PolicySchemaError(file, key_node.start_mark.line + 1, "a key must be a plain value")
            if key in out:
                raise PolicySchemaError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1, "")
            out[key] = _construct(value_node, (*path, key), positions, values, file)
        return out
    if isinstance(node, SequenceNode):
        return [_construct(item, (*path, i), positions, values, file) for i, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    return _scalar(node, file)
