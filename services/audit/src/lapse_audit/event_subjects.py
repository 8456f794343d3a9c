"""Which people an audited event names, for listing the log by person."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# Payload fields (at any depth, lists included) that hold a person or a login: who asked,
# who decided, who acted, who operated, who got the access in the target.
PERSON_FIELDS = frozenset(
    {
        "requester",
        "actor",
        "approvers",
        "approved_by",
        "decided_by",
        "canceled_by",
        "withdrawn_by",
        "operator",
        "principal",
        "subject",
        "user",
    }
)
# Width of the indexed column; a longer name is cut like the other indexed columns.
MAX_SUBJECT_LENGTH = 255
# A hostile payload could name thousands of people; the index keeps the first ones.
MAX_SUBJECTS_PER_EVENT = 50


def subjects_named(payload_json: str) -> set[str]:
    """The distinct non-empty person names in a rendered payload."""
    try:
        document = json.loads(payload_json)
    except ValueError:
        return set()
    found: set[str] = set()
    for name in _person_values(document):
        if len(found) >= MAX_SUBJECTS_PER_EVENT:
            break
        if name:
            found.add(name[:MAX_SUBJECT_LENGTH])
    return found


def _person_values(node: Any, *, is_person: bool = False) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _person_values(value, is_person=key in PERSON_FIELDS)
    elif isinstance(node, list):
        for item in node:
            yield from _person_values(item, is_person=is_person)
    elif is_person and isinstance(node, str):
        yield node
