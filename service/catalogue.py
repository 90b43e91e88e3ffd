"""The fact catalogue: every name a policy may read, its type and its Chinese label.

The registry's facts come from the kinds' descriptions (`enterprise_registry.kinds`: one place
for each field's type, bound, allowed values and label); what is added here are the derived
facts (`enterprise_registry.derived`), which no department sends.
"""

from __future__ import annotations

from typing import get_args

from enterprise_registry.kinds import KINDS, FieldSpec, SizeClass
from rules.facts import Catalogue, FactType

SECTIONS = tuple("ABCDEFGHIJKLMNOPQRST")


def _fact_type(field: FieldSpec) -> FactType:
    if field.max_abs is not None:
        return FactType(field.type, field.label, field.values, max_abs=field.max_abs)
    return FactType(field.type, field.label, field.values)


def _registry_facts(collection: bool) -> dict[str, dict[str, FactType]]:
    return {
        spec.group: {f.name: _fact_type(f) for f in spec.fields if f.fact}
        for spec in KINDS.values()
        if spec.collection == collection
    }


DERIVED_FACTS: dict[str, FactType] = {
    "enterprise.industry_section": FactType("str", "行业门类", SECTIONS),
    "enterprise.has_bank_account": FactType("bool", "登记有对公银行账户"),
    "derived.size_class": FactType("str", "企业规模（社保登记或按划型标准测算）", get_args(SizeClass)),
    "derived.size_class_basis": FactType("str", "企业规模依据", ("social_insurance", "sme_standard")),
}
DERIVED_COLLECTION_FIELDS: dict[str, dict[str, FactType]] = {
    "hires": {"counts_for_enterprise": FactType("bool", "该人员当年首次招用单位为本单位")},
}

FACTS: dict[str, FactType] = {
    **{
        f"{group}.{name}": fact
        for group, fields in _registry_facts(collection=False).items()
        for name, fact in fields.items()
    },
    **DERIVED_FACTS,
}
COLLECTIONS: dict[str, dict[str, FactType]] = {
    group: {**fields, **DERIVED_COLLECTION_FIELDS.get(group, {})}
    for group, fields in _registry_facts(collection=True).items()
}
COLLECTION_LABELS = {spec.group: spec.label for spec in KINDS.values() if spec.collection}

CATALOGUE = Catalogue(FACTS, COLLECTIONS, COLLECTION_LABELS)
