"""Checks every request message of every RPC must pass before a servicer reads it, by walking the
message with its descriptor (nested and repeated fields included):

- no string holds NUL: PostgreSQL text cannot store it, and no identifier, reason or code of
  ours contains one;
- every enum field holds a number its enum defines: proto3 keeps an unknown number as a bare
  int, which a servicer would otherwise read as some other value or none ("all").

The interceptor (`service.api.interceptor`) applies `check` to the request of every unary call of
ours before its servicer runs, so a new field or RPC is covered without a line of its own. A client
stream (ImportFacts) judges each message itself and rejects it by index, keeping the good ones,
where one bad message failing the call would end the stream half stored.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from service.errors import InvalidArgumentError


def violations(message: Message, prefix: str = "") -> list[tuple[str, str]]:
    """(field path, reason) for every string with NUL and every undefined enum number in
    `message`; paths are as a client spells them, e.g. `results[3].return_reason`."""
    found: list[tuple[str, str]] = []
    # ListFields: only the fields that are set, so the walk costs what the message holds
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.is_repeated:
            for index, item in enumerate(value):
                found += _value_violations(field, item, f"{path}[{index}]")
        else:
            found += _value_violations(field, value, path)
    return found


def _value_violations(field: FieldDescriptor, value: object, path: str) -> list[tuple[str, str]]:
    if field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(value, Message):
        return violations(value, f"{path}.")
    if field.type == FieldDescriptor.TYPE_STRING and isinstance(value, str) and "\x00" in value:
        return [(path, "must not contain a NUL character")]
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, int):
        enum = field.enum_type
        if enum is not None and value not in enum.values_by_number:
            return [(path, f"{value} is not a value of {enum.full_name}")]
    return []


def check(message: Message) -> None:
    """InvalidArgumentError naming every field of `message` that fails the checks above."""
    found = violations(message)
    if found:
        raise InvalidArgumentError(found)
