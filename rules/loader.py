"""Loads policy files: validate, parse and type-check every expression (the named definitions
first, rules.definitions), compile per period.

A directory loads completely or not at all, so a running service keeps the rules it had when a
changed file is refused (see `PolicyStore`). Exclusions (`excludes:`) are checked per file (no
repeats, not the policy itself) and, once the whole directory is loaded, against the other files.
"""

from __future__ import annotations

import difflib
import hashlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from rules import ast
from rules.compiler import Clause, EngineLayout, compile_ruleset
from rules.definitions import Definition, load_definitions, resolve, scope_with
from rules.engine import DurableRuleset, ruleset
from rules.errors import (
    EngineError,
    EngineLimitError,
    ExpressionTypeError,
    MissingPolicyTestsError,
    PeriodNotCoveredError,
    PolicyFileError,
    PolicyNotFoundError,
    PolicySchemaError,
)
from rules.facts import Catalogue
from rules.interpreter import ParamValue, Tiers, as_number
from rules.parser import parse_expression, parse_literal
from rules.schema import Condition, Parameter, Policy, validate_policy, validate_test_cases
from rules.typecheck import Scope, check, literal_type
from rules.vectorised import VectorisedPolicy, compile_vectorised
from rules.yaml_source import Located, load

TEST_SUFFIX = ".test.yaml"


@dataclass
class CompiledPolicy:
    """A policy ready to evaluate for one period: resolved parameters and its engine ruleset."""

    policy: LoadedPolicy
    period: int
    params: Mapping[str, ParamValue]
    definition: dict[str, Any]
    layout: EngineLayout
    _ruleset: DurableRuleset | None = None
    vectorised: VectorisedPolicy | None = None  # the vectorised trace (set by LoadedPolicy._compile)

    @property
    def ruleset_name(self) -> str:
        p = self.policy
        return f"{p.id}@{p.version}#{p.sha256[:16]}/{self.period}"

    @property
    def ruleset(self) -> DurableRuleset:
        if self._ruleset is None:  # registered on first use: durable cannot delete rulesets
            self._ruleset = ruleset(self.ruleset_name, self.definition)
        return self._ruleset


@dataclass
class LoadedPolicy:
    model: Policy
    file: str
    source: str
    sha256: str
    conditions: list[Clause]
    payable: list[Clause]
    amount: ast.Expr
    definitions: dict[str, Definition]  # named terms, in file order (their uses are ast.Ref)
    cap_fen: int | None
    budget_fen: int | None
    param_types: dict[str, str]
    param_values: dict[str, tuple[object, ...]]
    param_lines: dict[str, int]
    raw_params: dict[str, Parameter]
    catalogue: Catalogue
    test_file: str | None
    exclude_lines: dict[str, int] = field(default_factory=dict)  # excluded id -> line naming it
    _compiled: dict[int, CompiledPolicy] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def excludes(self) -> tuple[str, ...]:
        """The policies this file names under `excludes:`, in file order; the symmetric set
        (including policies that name this one) is `PolicySet.excluded`."""
        return tuple(self.model.excludes)

    def fact_year(self, period: int) -> int:
        return period - 1 if self.model.fact_year == "previous" else period

    def covers(self, period: int) -> bool:
        return self.model.effective.covers(period)

    def compiled(self, period: int) -> CompiledPolicy:
        """The policy compiled for `period` (cached)."""
        if not self.covers(period):
            raise PeriodNotCoveredError(
                self.id,
                period,
                self.model.effective.listed(),
                self.model.effective.last_period is None and self.model.effective.periods is None,
            )
        with self._lock:
            if period not in self._compiled:
                self._compiled[period] = self._compile(period)
            return self._compiled[period]

    def params_for(self, period: int) -> dict[str, ParamValue]:
        return {
            name: _resolve(self.file, self.param_lines.get(name), name, raw, period)
            for name, raw in self.raw_params.items()
        }

    def _compile(self, period: int) -> CompiledPolicy:
        params = self.params_for(period)
        bounds = {name: t.max_abs for name, t in self.catalogue.facts.items()}
        scope = Scope(self.catalogue, self.param_types, self.file, param_values=self.param_values)
        definition, layout = compile_ruleset(
            self.conditions, self.payable, params, bounds, self.file, lambda node: check(node, scope)
        )
        compiled = CompiledPolicy(self, period, params, definition, layout)
        # --- vectorised trace hook: every period is also compiled vectorised, so what it cannot
        # compute exactly is refused here, at load (VectorisedLimitError names file and line).
        compiled.vectorised = compile_vectorised(compiled)
        # --- end of the vectorised trace hook
        return compiled

    def check_periods(self) -> list[int]:
        """Compile every period the file gives figures for, so errors surface at load time."""
        years = set(self.model.effective.listed())
        for raw in self.raw_params.values():
            years.update(y for y in (raw.values or {}) if self.covers(y))
        for year in sorted(years):
            compiled = self._compile(year)
            try:  # register now: durable-rules refuses some rulesets only when it builds them
                compiled.ruleset  # noqa: B018
            except EngineError as exc:
                raise EngineLimitError(
                    self.file, None, f"the engine cannot hold this policy for {year}: {exc.__cause__ or exc}"
                ) from exc
            self._compiled.setdefault(year, compiled)
        return sorted(years)


def load_policy_file(path: Path, catalogue: Catalogue, *, require_tests: bool = True) -> LoadedPolicy:
    """Load, validate, parse and type-check one policy file; raise PolicyFileError naming the line."""
    file = str(path)
    raw = path.read_bytes()
    policy = _load_bytes(raw, file, catalogue, expected_id=path.name.removesuffix(".yaml"))
    policy.test_file = _find_tests(path, require_tests)
    return policy


def load_policy_text(raw: bytes, catalogue: Catalogue, *, origin: str) -> LoadedPolicy:
    """Load a policy from its stored bytes (a past version, for replay); no test file is sought."""
    return _load_bytes(raw, origin, catalogue, expected_id=None)


def _load_bytes(raw: bytes, file: str, catalogue: Catalogue, *, expected_id: str | None) -> LoadedPolicy:
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicySchemaError(file, None, f"not UTF-8 text: {exc}") from None
    doc = load(source, file)
    policy = validate_policy(doc)
    if expected_id is not None and policy.id != expected_id and not expected_id.startswith(policy.id + "."):
        raise PolicySchemaError(
            file, doc.line_of(("id",)), f"id {policy.id!r} does not match the file name (expected {expected_id!r})"
        )
    _unique_clause_ids(doc, policy)
    exclude_lines = _exclusions(doc, policy)
    param_types = {name: _param_type(file, doc, name, p) for name, p in policy.parameters.items()}
    param_values = {name: _param_literals(file, doc, name, p) for name, p in policy.parameters.items()}
    params_scope = Scope(catalogue, param_types, file, param_values=param_values)
    definitions = load_definitions(
        {name: (d.text, doc.line_of(("definitions", name)) or 1) for name, d in policy.definitions.items()},
        params_scope,
        lambda name: _parse(doc, ("definitions", name, "expr"), policy.definitions[name].expr),
    )
    scope = scope_with(params_scope, definitions)

    def parse(path: tuple[str | int, ...], text: str) -> ast.Expr:
        return resolve(_parse(doc, path, text), definitions, file)

    def clauses(key: str, items: list[Condition], prefix: str) -> list[Clause]:
        out = []
        for i, item in enumerate(items):
            expr = parse((key, i, "expr"), item.expr)
            _expect(doc, (key, i, "expr"), expr, scope, {"bool"}, "a condition must be true/false")
            out.append(Clause(item.id, item.text, item.citation, expr, f"{prefix}{i}"))
        return out

    conditions = clauses("conditions", policy.conditions, "c")
    payable = clauses("payable", policy.payable, "p")
    amount = parse(("amount", "formula"), policy.amount.formula)
    _expect(
        doc, ("amount", "formula"), amount, scope, {"int", "decimal"}, "the amount formula must give a number of fen"
    )
    loaded = LoadedPolicy(
        model=policy,
        file=file,
        source=source,
        sha256=hashlib.sha256(raw).hexdigest(),
        conditions=conditions,
        payable=payable,
        amount=amount,
        definitions=definitions,
        cap_fen=_money(doc, ("amount", "cap"), policy.amount.cap),
        budget_fen=_money(doc, ("budget",), policy.budget),
        param_types=param_types,
        param_values=param_values,
        param_lines={name: doc.line_of(("parameters", name)) or 1 for name in policy.parameters},
        raw_params=dict(policy.parameters),
        catalogue=catalogue,
        test_file=None,
        exclude_lines=exclude_lines,
    )
    loaded.check_periods()
    return loaded


def _find_tests(path: Path, required: bool) -> str | None:
    test_path = path.with_name(path.name.removesuffix(".yaml") + TEST_SUFFIX)
    if not test_path.exists():
        if required:
            raise MissingPolicyTestsError(
                str(path), None, f"no test cases: expected {test_path.name} beside the policy"
            )
        return None
    validate_test_cases(load(test_path.read_text(encoding="utf-8"), str(test_path)))
    return str(test_path)


def _parse(doc: Located, path: tuple[str | int, ...], text: str) -> ast.Expr:
    line, column, indent = doc.text_start(path)
    return parse_expression(text, file=doc.file, line=line, column=column, indent=indent)


def _expect(
    doc: Located, path: tuple[str | int, ...], expr: ast.Expr, scope: Scope, kinds: set[str], reason: str
) -> None:
    kind = check(expr, scope)
    if kind not in kinds:
        raise ExpressionTypeError(doc.file, expr.pos.line, f"{reason}, got {kind}", column=expr.pos.column)


def _money(doc: Located, path: tuple[str | int, ...], value: str | int | None) -> int | None:
    if value is None:
        return None
    parsed = _literal_value(doc.file, doc.line_of(path) or 1, value)
    if not isinstance(parsed, int) or isinstance(parsed, bool) or parsed < 0:
        raise PolicySchemaError(doc.file, doc.line_of(path), "expected an amount such as 500万元")
    return parsed


def _literal_value(file: str, line: int, value: object) -> Any:
    """A parameter value as written: YAML numbers and booleans as they are, text as a literal."""
    if isinstance(value, (bool, int)):
        return value
    parsed = parse_literal(str(value), file=file, line=line).value
    return as_number(parsed) if isinstance(parsed, Decimal) else parsed


def _unique_clause_ids(doc: Located, policy: Policy) -> None:
    seen: dict[str, int] = {}
    for key, clauses in (("conditions", policy.conditions), ("payable", policy.payable)):
        for i, clause in enumerate(clauses):
            line = doc.line_of((key, i, "id")) or 1
            if clause.id in seen:
                raise PolicySchemaError(
                    doc.file, line, f"clause id {clause.id!r} is already used on line {seen[clause.id]}", field="id"
                )
            seen[clause.id] = line


def _exclusions(doc: Located, policy: Policy) -> dict[str, int]:
    """Each excluded id with the line naming it. Whether the ids exist is known only once the
    whole directory is loaded (`_check_exclusions`)."""
    lines: dict[str, int] = {}
    for i, other in enumerate(policy.excludes):
        line = doc.line_of(("excludes", i)) or 1
        if other == policy.id:
            raise PolicySchemaError(doc.file, line, "a policy cannot exclude itself", field=f"excludes.{i}")
        if other in lines:
            raise PolicySchemaError(
                doc.file, line, f"{other!r} is already excluded on line {lines[other]}", field=f"excludes.{i}"
            )
        lines[other] = line
    return lines


def _check_exclusions(policies: list[LoadedPolicy]) -> None:
    """Every excluded id names a loaded policy, and never one of the same conflict group: the
    group pays the higher of the two awards (就高不重复), an exclusion never both."""
    by_id = {p.id: p for p in policies}
    for policy in policies:
        for i, (other, line) in enumerate(policy.exclude_lines.items()):
            target = by_id.get(other)
            if target is None:
                close = difflib.get_close_matches(other, sorted(by_id), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise PolicySchemaError(
                    policy.file, line, f"excludes {other!r}, which is not a loaded policy{hint}", field=f"excludes.{i}"
                )
            group = policy.model.conflict_group
            if group is not None and target.model.conflict_group == group:
                raise PolicySchemaError(
                    policy.file,
                    line,
                    f"excludes {other!r}, which is in the same conflict group "
                    f"{group!r}: the group pays the higher award (就高不重复), an exclusion never "
                    "both; keep one of the two",
                    field=f"excludes.{i}",
                )


def _param_literals(file: str, doc: Located, name: str, param: Parameter) -> tuple[object, ...]:
    """Every scalar value a parameter takes, over all periods (for enumeration checks)."""
    values = [param.value] if param.values is None else list(param.values.values())
    line = doc.line_of(("parameters", name)) or 1
    return tuple(_literal_value(file, line, v) for v in values if not isinstance(v, list))


def _param_type(file: str, doc: Located, name: str, param: Parameter) -> str:
    values = [param.value] if param.values is None else list(param.values.values())
    types = set()
    for i, value in enumerate(values):
        path: tuple[str | int, ...] = (
            ("parameters", name, "value")
            if param.values is None
            else ("parameters", name, "values", list(param.values)[i])
        )
        line = doc.line_of(path) or 1
        if isinstance(value, list):
            tiers = _tiers(file, line, value)
            types.add("tiers[" + ("int" if all(isinstance(v, int) for _, v in tiers.steps) else "decimal") + "]")
        else:
            parsed = _literal_value(file, line, value)
            types.add(literal_type(parsed) if not isinstance(parsed, Fraction) else "decimal")
    if len(types) == 2 and types == {"int", "decimal"}:
        return "decimal"
    if len(types) != 1:
        raise PolicySchemaError(
            file, doc.line_of(("parameters", name)), f"parameter {name!r} changes type between periods: {sorted(types)}"
        )
    return types.pop()


def _tiers(file: str, line: int, steps: list[Any]) -> Tiers:
    out: list[tuple[int | None, int | Fraction]] = []
    previous = -1
    for i, step in enumerate(steps):
        up_to = None if step.up_to is None else _literal_value(file, line, step.up_to)
        if up_to is not None and (not isinstance(up_to, int) or up_to <= previous):
            raise PolicySchemaError(file, line, "tier bounds must be whole amounts in ascending order")
        if up_to is None and i != len(steps) - 1:
            raise PolicySchemaError(file, line, "only the last tier may be unbounded (up_to: null)")
        out.append((up_to, _literal_value(file, line, step.value)))
        previous = up_to if up_to is not None else previous
    if out and out[-1][0] is not None:
        raise PolicySchemaError(file, line, "the last tier must be unbounded (up_to: null)")
    return Tiers(tuple(out))


def _resolve(file: str, line: int | None, name: str, raw: Parameter, period: int) -> ParamValue:
    value: Any
    if raw.values is None:
        value = raw.value
    else:
        years = [year for year in sorted(raw.values) if year <= period]
        if not years:
            raise PolicySchemaError(
                file, line, f"parameter {name!r} has no value for period {period} (values start in {min(raw.values)})"
            )
        value = raw.values[years[-1]]
    if isinstance(value, list):
        return _tiers(file, 1, value)
    return _literal_value(file, 1, value)  # type: ignore[no-any-return]


class PolicySet:
    """The policies of one directory, by id."""

    def __init__(self, policies: list[LoadedPolicy], root: str) -> None:
        self.root = root
        self._by_id = {p.id: p for p in policies}
        neighbours: dict[str, set[str]] = {p.id: set() for p in policies}
        for policy in policies:  # symmetric: A excludes B means B excludes A
            for other in policy.excludes:
                neighbours[policy.id].add(other)
                neighbours.setdefault(other, set()).add(policy.id)
        self._excluded = {node: frozenset(ids) for node, ids in neighbours.items()}
        self._family: dict[str, tuple[str, ...]] = {}
        for start in sorted(neighbours):
            if start in self._family:
                continue
            component, todo = {start}, [start]
            while todo:
                for other in neighbours[todo.pop()] - component:
                    component.add(other)
                    todo.append(other)
            family = tuple(sorted(component))
            self._family.update(dict.fromkeys(family, family))

    def __iter__(self) -> Iterator[LoadedPolicy]:
        return iter(sorted(self._by_id.values(), key=lambda p: p.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, policy_id: str) -> LoadedPolicy:
        try:
            return self._by_id[policy_id]
        except KeyError:
            raise PolicyNotFoundError(policy_id) from None

    def excluded(self, policy_id: str) -> frozenset[str]:
        """The policies an enterprise may not hold in the same period together with `policy_id`:
        those it names under `excludes:` and those naming it."""
        self.get(policy_id)
        return self._excluded[policy_id]

    def exclusion_family(self, policy_id: str) -> tuple[str, ...]:
        """The sorted ids of the connected part of the exclusion graph holding `policy_id`, itself
        included (`(policy_id,)` without exclusions): whatever one of them pays in a period
        depends on what the others paid."""
        self.get(policy_id)
        return self._family[policy_id]


def policy_files(root: Path) -> list[Path]:
    """Policy files found below `root` (test files excluded)."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*.yaml") if not p.name.endswith(TEST_SUFFIX))


def load_policy_dir(root: Path, catalogue: Catalogue, *, require_tests: bool = True) -> PolicySet:
    """Load every policy below `root`; the first refused file raises and nothing is loaded, as
    does an exclusion naming no policy of the directory or one of its own conflict group."""
    policies: list[LoadedPolicy] = []
    seen: dict[str, str] = {}
    files = policy_files(root)
    if not files:
        raise PolicySchemaError(str(root), None, "no policy files (*.yaml) found")
    for path in files:
        policy = load_policy_file(path, catalogue, require_tests=require_tests)
        if policy.id in seen:
            raise PolicySchemaError(str(path), 1, f"policy id {policy.id!r} is also defined in {seen[policy.id]}")
        seen[policy.id] = str(path)
        policies.append(policy)
    if root.is_dir():  # a single file, like load_policy_file, cannot know the other ids
        _check_exclusions(policies)
    return PolicySet(policies, str(root))


class PolicyStore:
    """The running rules: `reload` swaps in a new set only when every file loads."""

    def __init__(self, root: Path, catalogue: Catalogue) -> None:
        self.root, self.catalogue = root, catalogue
        self._current = load_policy_dir(root, catalogue)
        self._lock = threading.Lock()

    @property
    def current(self) -> PolicySet:
        return self._current

    def reload(self) -> PolicySet:
        """Load the directory again; on PolicyFileError the running set stays in place."""
        fresh = load_policy_dir(self.root, self.catalogue)
        with self._lock:
            self._current = fresh
        return fresh


__all__ = [
    "CompiledPolicy",
    "LoadedPolicy",
    "PolicyFileError",
    "PolicySet",
    "PolicyStore",
    "load_policy_dir",
    "load_policy_file",
    "policy_files",
]
