"""Policies of a period packed into the fewest durable-rules rulesets, one fact per enterprise each.

A policy's compiled ruleset (rules/compiler.py) decides its clauses with rules `c0`, `p0`, ...
over properties `f0`, `t0`, ... Packing renames them per member (`a.c0`, `a_f0`; `b.c0`, ...) and
puts the clause rules of several policies into one ruleset with one catch-all rule, so that ONE
asserted fact per enterprise decides every clause of every member: a member's conditions all
fired means eligible. Members are added first-fit while the ruleset stays within the measured
limits (`MAX_RULES` rules matching one fact, `MAX_PROPERTIES` properties per fact); a policy
that alone exceeds them was already refused at load by the compiler.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rules.compiler import MAX_PROPERTIES, MAX_RULES, TRUE_JSON
from rules.engine import DurableRuleset, ruleset
from rules.loader import CompiledPolicy

SEEN = "seen"  # the catch-all rule: every asserted fact is handled
SHARED = ("_eval", "_zero")  # properties every fact carries, common to all members
_COMBINATORS = ("$and", "$or")
_PRESENCE = ("$ex", "$nex")


@dataclass(frozen=True)
class PackedMember:
    """One policy inside a packed ruleset: its rules and properties under their packed names."""

    compiled: CompiledPolicy
    condition_rules: tuple[str, ...]
    payable_rules: tuple[str, ...]
    properties: Mapping[str, str]  # the policy's own property name -> packed name

    @property
    def policy_id(self) -> str:
        return self.compiled.policy.id


@dataclass
class PackedRuleset:
    members: list[PackedMember]
    definition: dict[str, Any]
    _ruleset: DurableRuleset | None = None

    @property
    def name(self) -> str:
        names = "|".join(m.compiled.ruleset_name for m in self.members)
        return "pack#" + hashlib.sha256(names.encode()).hexdigest()[:24]

    @property
    def ruleset(self) -> DurableRuleset:
        if self._ruleset is None:  # registered once per process: durable cannot delete rulesets
            self._ruleset = ruleset(self.name, self.definition)
        return self._ruleset


def pack(policies: Sequence[CompiledPolicy]) -> list[PackedRuleset]:
    """The policies packed first-fit, in the given order, into rulesets within the limits."""
    packs: list[list[CompiledPolicy]] = []
    for compiled in policies:
        for members in packs:
            if _fits([*members, compiled]):
                members.append(compiled)
                break
        else:
            packs.append([compiled])
    return [_build(members) for members in packs]


def _size(compiled: CompiledPolicy) -> tuple[int, int]:
    policy, layout = compiled.policy, compiled.layout
    return len(policy.conditions) + len(policy.payable), len(layout.fields) + len(layout.terms)


def _fits(members: Sequence[CompiledPolicy]) -> bool:
    rules = sum(_size(m)[0] for m in members) + 1  # + the catch-all
    properties = sum(_size(m)[1] for m in members) + len(SHARED)
    return rules <= MAX_RULES and properties <= MAX_PROPERTIES


def _prefix(index: int) -> str:
    letters = string.ascii_lowercase
    return letters[index] if index < len(letters) else f"m{index}"


def _build(policies: Sequence[CompiledPolicy]) -> PackedRuleset:
    definition: dict[str, Any] = {}
    members = []
    for index, compiled in enumerate(policies):
        prefix = _prefix(index)
        layout = compiled.layout
        own = [*layout.fields.values(), *layout.terms.values()]
        properties = {name: f"{prefix}_{name}" for name in own}
        renamed = {}
        for clause in [*compiled.policy.conditions, *compiled.policy.payable]:
            renamed[clause.rule] = f"{prefix}.{clause.rule}"
            definition[renamed[clause.rule]] = _rename_rule(compiled.definition[clause.rule], properties)
        members.append(
            PackedMember(
                compiled,
                tuple(renamed[c.rule] for c in compiled.policy.conditions),
                tuple(renamed[c.rule] for c in compiled.policy.payable),
                properties,
            )
        )
    definition[SEEN] = {"all": [{"m": {"$and": [{"$ex": {"_eval": 1}}, TRUE_JSON]}}]}
    return PackedRuleset(members, definition)


def _rename_rule(rule: dict[str, Any], properties: Mapping[str, str]) -> dict[str, Any]:
    # {"all": [{"m": <condition>}]}: the compiler's shape (compiler._rule)
    return {"all": [{"m": _rename_condition(part["m"], properties)} for part in rule["all"]]}


def _rename_condition(condition: dict[str, Any], properties: Mapping[str, str]) -> dict[str, Any]:
    ((operator, operand),) = condition.items()
    if operator in _COMBINATORS:
        return {operator: [_rename_condition(part, properties) for part in operand]}
    if operator in _PRESENCE:
        return {operator: {_property(name, properties): value for name, value in operand.items()}}
    return {
        operator: {_property(name, properties): _rename_value(value, properties) for name, value in operand.items()}
    }


def _rename_value(value: Any, properties: Mapping[str, str]) -> Any:
    if not isinstance(value, dict):
        return value  # a constant
    ((operator, operand),) = value.items()
    if operator == "$m":
        return {"$m": _property(operand, properties)}
    return {operator: {side: _rename_value(part, properties) for side, part in operand.items()}}


def _property(name: str, properties: Mapping[str, str]) -> str:
    return name if name in SHARED else properties[name]
