"""How one audit row is linked to the previous one.

hash = sha256(prev_hash || canonical bytes of every column of the row). The canonical
form length-prefixes each field, so no two different rows share an encoding (no shifting
bytes from one field into the next), and it is built only from stored values, so the
chain can be re-verified from the database alone, on any later version of the code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime

from lapse_common.clock import as_utc

from lapse_audit.models import AuditEventRecord

# Names the encoding, so a future change of the canonical form cannot be confused with it.
_CANONICAL_FORM = b"lapse.audit.chain.v1"


def link_hash(record: AuditEventRecord) -> str:
    """The hash the record must carry, given its prev_hash and its other columns."""
    digest = hashlib.sha256(record.prev_hash.encode("utf-8"))
    for field in _canonical_fields(record):
        digest.update(len(field).to_bytes(8, "big"))
        digest.update(field)
    return digest.hexdigest()


def _canonical_fields(record: AuditEventRecord) -> Iterator[bytes]:
    yield _CANONICAL_FORM
    yield str(record.sequence).encode("ascii")
    for text in (record.event_id, record.type, record.topic, record.producer):
        yield text.encode("utf-8")
    yield _instant(record.occurred_at)
    yield _instant(record.recorded_at)
    for text in (record.request_id, record.grant_id):
        yield text.encode("utf-8")
    yield record.payload
    yield record.payload_json.encode("utf-8")


def _instant(moment: datetime) -> bytes:
    # SQLite returns naive UTC and PostgreSQL aware UTC datetimes: normalize both, at the
    # microsecond precision both store.
    return as_utc(moment).isoformat(timespec="microseconds").encode("ascii")
