"""One description of each fact kind (`enterprise_registry.kinds`), and everything that must
agree with it: the feed records, the tables, the fact catalogue and the documents."""

from __future__ import annotations

import pytest
from sqlalchemy import BigInteger
from test_records import good_records

from enterprise_registry.errors import RecordValidationError
from enterprise_registry.kinds import KINDS, SOURCES_BY_KIND, FieldSpec, KindSpec
from enterprise_registry.models import key_columns, table_for
from enterprise_registry.records import RECORD_MODELS, parse_record
from service.catalogue import CATALOGUE

COMMON = {"kind", "uscc", "source", "as_of"}
SPECS = list(KINDS.values())


def _ids(spec: KindSpec) -> str:
    return spec.kind


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_the_feed_record_has_exactly_the_described_fields(spec: KindSpec) -> None:
    model = RECORD_MODELS[spec.kind]
    assert set(model.model_fields) - COMMON == {f.name for f in spec.fields} - {"uscc"}
    for field in spec.fields:
        if field.name in model.model_fields:
            assert (not model.model_fields[field.name].is_required()) == field.optional, field.name


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_the_table_stores_the_described_fields_with_their_key(spec: KindSpec) -> None:
    table = table_for(spec.kind)
    expected = {f.name for f in spec.fields if f.name != "bank_account"} | {"uscc", "source", "as_of"}
    if spec.kind == "enterprise":  # the account is flattened into three columns
        expected |= {"bank_name", "bank_account_no", "bank_account_name"}
    assert set(table.c.keys()) - {"id"} == expected
    assert key_columns(spec.kind) == spec.key
    for field in spec.fields:
        if field.name in table.c:
            assert table.c[field.name].nullable == field.optional, field.name
            if field.max_abs is not None and field.max_abs >= 2**31:  # money: 64-bit columns
                assert isinstance(table.c[field.name].type, BigInteger), field.name


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_the_catalogue_reads_each_fact_field_with_its_bound_values_and_label(spec: KindSpec) -> None:
    for field in spec.fields:
        fact = (
            CATALOGUE.collections[spec.group].get(field.name)
            if spec.collection
            else CATALOGUE.facts.get(f"{spec.group}.{field.name}")
        )
        if not field.fact:
            assert fact is None
            continue
        assert fact is not None, field.name
        assert (fact.kind, fact.label, fact.values) == (field.type, field.label, field.values)
        if field.type == "int":
            assert fact.max_abs == field.max_abs


INT_FIELDS = [(spec, field) for spec in SPECS for field in spec.fields if field.type == "int"]


@pytest.mark.parametrize(("spec", "field"), INT_FIELDS, ids=[f"{s.kind}.{f.name}" for s, f in INT_FIELDS])
def test_the_registry_never_accepts_more_than_the_bound_the_compiler_relies_on(
    spec: KindSpec, field: FieldSpec
) -> None:
    """The rules compiler proves from `max_abs` that policy arithmetic stays within int64."""
    assert field.max_abs is not None, field.name
    record = {**good_records()[spec.kind], field.name: field.max_abs + 1}
    with pytest.raises(RecordValidationError) as refused:
        parse_record(record)
    assert refused.value.field == field.name


def test_every_kind_names_its_departments_once() -> None:
    assert {spec.kind: spec.sources for spec in SPECS} == SOURCES_BY_KIND
