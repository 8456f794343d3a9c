"""Bounds every field of every Lapse message shares, and the ones a field declares.

Text has no NUL (PostgreSQL cannot store it, and no identifier or reason needs it) and a
bounded length, lists a bounded size, and a `*_seconds` field a range every clock and
database calculation can take. A field that needs another bound declares it next to its
definition in proto/ with the `(lapse.v1.limits)` option (proto/lapse/v1/field_limits.proto).
gRPC requests are screened against them before any handler runs (request_screening) and
consumed Kafka messages before any handler sees them (messaging.codec). Refusals name the
field and the limit and never echo more than a short excerpt of the input.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from lapse_common.pb.lapse.v1 import field_limits_pb2

MAX_TEXT = 4096
MAX_ITEMS = 1000
# Ten years: longer than any grant, lockdown or age an operator asks about, and far inside
# what datetime arithmetic and PostgreSQL timestamps accept.
MAX_SECONDS = 10 * 366 * 24 * 3600
EXCERPT = 40

_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}


class OutOfBounds(ValueError):
    pass


def excerpt(text: str) -> str:
    return repr(text[:EXCERPT]) + ("…" if len(text) > EXCERPT else "")


def truncated(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to fit a field of `limit` characters, marked as cut: for words of our own
    (a target's error, a refusal reason) that must go out even when they run long."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def screen(message: Message, path: str = "") -> None:
    """Raise OutOfBounds naming the first field of `message` that breaks its limit.

    Every consumed record passes here, so the per-field rule is worked out once per field
    and a field's path is only spelled out for the refusal."""
    for field, value in message.ListFields():
        rule = _rule_of(field)
        if rule.repeated:
            items = list(value.values()) if rule.is_map else value
            if len(items) > rule.max_items:
                raise OutOfBounds(
                    f"{path}{field.name} has {len(items)} items; the limit is {rule.max_items}"
                )
            for index, item in enumerate(items):
                _screen_value(rule, item, path, field.name, index)
            if rule.is_map:
                for key in value:
                    if isinstance(key, str):
                        _screen_text(rule, key, f"{path}{field.name} key")
        else:
            _screen_value(rule, value, path, field.name, None)


class _Rule:
    """What one field's values must satisfy: its declared bounds or the shared ones."""

    __slots__ = ("is_map", "max_items", "max_len", "max_value", "repeated")

    def __init__(self, field: FieldDescriptor) -> None:
        declared = field.GetOptions().Extensions[field_limits_pb2.limits]
        entry = field.message_type
        self.repeated = field.is_repeated
        self.is_map = entry is not None and entry.GetOptions().map_entry
        self.max_items = declared.max_items or MAX_ITEMS
        self.max_len = declared.max_len or MAX_TEXT
        # None: an integer without a range of its own (only *_seconds fields have one).
        self.max_value: int | None = None
        if field.type in _INTEGER_TYPES and (declared.max or field.name.endswith("_seconds")):
            self.max_value = declared.max or MAX_SECONDS


_RULES: dict[FieldDescriptor, _Rule] = {}


def _rule_of(field: FieldDescriptor) -> _Rule:
    rule = _RULES.get(field)
    if rule is None:
        rule = _RULES[field] = _Rule(field)
    return rule


def _where(path: str, name: str, index: int | None) -> str:
    return f"{path}{name}" if index is None else f"{path}{name}[{index}]"


def _screen_value(rule: _Rule, value: Any, path: str, name: str, index: int | None) -> None:
    if isinstance(value, str):
        if len(value) > rule.max_len or "\x00" in value:
            _screen_text(rule, value, _where(path, name, index))
    elif isinstance(value, Message):
        screen(value, f"{_where(path, name, index)}.")
    elif isinstance(value, bytes):
        if len(value) > rule.max_len:
            raise OutOfBounds(
                f"{_where(path, name, index)} is {len(value)} bytes; the limit is {rule.max_len}"
            )
    elif rule.max_value is not None and not 0 <= value <= rule.max_value:
        raise OutOfBounds(
            f"{_where(path, name, index)} is {value}; it must be between 0 and {rule.max_value}"
        )


def _screen_text(rule: _Rule, text: str, where: str) -> None:
    if len(text) > rule.max_len:
        raise OutOfBounds(
            f"{where} is {len(text)} characters long; the limit is {rule.max_len} "
            f"(starts {excerpt(text)})"
        )
    if "\x00" in text:
        raise OutOfBounds(f"{where} contains a NUL character ({excerpt(text)})")
