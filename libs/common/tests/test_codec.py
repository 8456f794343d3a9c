"""Envelope decoding refuses anything that is not a Lapse message, saying why."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from lapse_common.messaging.codec import UndecodableMessage, build_envelope, decode
from lapse_common.pb.lapse.v1 import common_pb2, envelope_pb2, events_pb2

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_round_trip_keeps_payload_and_correlation_ids() -> None:
    payload = events_pb2.RevokeRequested(grant_id="g-1", epoch=3, reason=common_pb2.REASON_EXPIRED)
    envelope = build_envelope(payload, producer="test", occurred_at=NOW, grant_id="g-1")
    decoded = decode(envelope.SerializeToString())
    assert decoded.payload == payload
    assert decoded.envelope.grant_id == "g-1"
    assert decoded.type == "lapse.v1.RevokeRequested"
    assert decoded.envelope.occurred_at.ToDatetime(tzinfo=UTC) == NOW


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message body"),
        (b"\xff\x00\x01garbage", "not a lapse.v1.Envelope"),
        (envelope_pb2.Envelope(type="lapse.v1.AgentResult").SerializeToString(), "no event_id"),
        (
            envelope_pb2.Envelope(event_id="e", type="lapse.v1.Nope").SerializeToString(),
            "unknown payload type 'lapse.v1.Nope'",
        ),
        (
            envelope_pb2.Envelope(
                event_id="e", type="lapse.v1.AgentResult", payload=b"\xff\xff"
            ).SerializeToString(),
            "payload is not a valid lapse.v1.AgentResult",
        ),
    ],
)
def test_undecodable_input_names_the_problem(raw: bytes, reason: str) -> None:
    with pytest.raises(UndecodableMessage) as refused:
        decode(raw)
    assert reason in refused.value.reason


def test_expected_types_are_enforced() -> None:
    envelope = build_envelope(
        events_pb2.AgentHeartbeat(agent_id="a"), producer="t", occurred_at=NOW
    )
    with pytest.raises(UndecodableMessage, match="is not one of: lapse.v1.AgentResult"):
        decode(envelope.SerializeToString(), expected=(events_pb2.AgentResult,))
