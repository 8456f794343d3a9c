"""What a consumer reads from Kafka is held to the same field bounds as a gRPC request,
before any handler sees it; what a service writes is held to them before it is written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lapse_common.agent_reports import AgentRegistry, ReportSigner, key_id_of
from lapse_common.auth import ensure_keypair
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandRejected, CommandSigner, CommandVerifier
from lapse_common.field_bounds import OutOfBounds
from lapse_common.messaging.codec import UndecodableMessage, build_envelope, decode
from lapse_common.messaging.consumer import RefusedMessage
from lapse_common.messaging.quarantine import Quarantine
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2, envelope_pb2, events_pb2

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def wrapped(payload: Any) -> bytes:
    """An envelope built by hand, the way a producer that skips Lapse's checks would."""
    return envelope_pb2.Envelope(
        event_id="e-1",
        type=payload.DESCRIPTOR.full_name,
        producer="somebody",
        payload=payload.SerializeToString(),
    ).SerializeToString()


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (
            events_pb2.RequestCanceled(request_id="r-1", reason="x" * (100 * 1024)),
            "reason is 102400 characters long; the limit is 16384",
        ),
        (
            events_pb2.GrantStatusChanged(grant_id="g\x00; DROP ROLE admin", epoch=1),
            "grant_id contains a NUL character",
        ),
        (
            events_pb2.RequestSubmitted(
                request_id="r-1", requester_groups=[f"g{i}" for i in range(1001)]
            ),
            "requester_groups has 1001 items; the limit is 1000",
        ),
        (
            events_pb2.RevokeRequested(
                grant_id="g-1", spec=common_pb2.GrantSpec(resource="r" * 5000)
            ),
            "spec.resource is 5000 characters long; the limit is 4096",
        ),
    ],
)
def test_a_consumed_message_out_of_bounds_is_undecodable_naming_the_field(
    payload: Any, named: str
) -> None:
    with pytest.raises(UndecodableMessage) as refused:
        decode(wrapped(payload))
    assert f"{payload.DESCRIPTOR.full_name} out of bounds: {named}" in refused.value.reason
    # The refusal quotes a short excerpt at most, never the input.
    assert len(refused.value.reason) < 300


def test_the_envelope_itself_is_screened() -> None:
    huge = events_pb2.RequestCanceled(request_id="r-1", reason="x" * (2 * 1024 * 1024))
    with pytest.raises(UndecodableMessage, match="envelope out of bounds: payload is 2097162"):
        decode(wrapped(huge))
    raw = envelope_pb2.Envelope(
        event_id="e-1",
        type="lapse.v1.RequestCanceled",
        producer="p" * 10_000,
        payload=events_pb2.RequestCanceled(request_id="r-1").SerializeToString(),
    ).SerializeToString()
    with pytest.raises(UndecodableMessage, match="envelope out of bounds: producer is 10000"):
        decode(raw)


def test_a_message_at_its_limits_is_decoded() -> None:
    at_limit = events_pb2.GrantStatusChanged(
        grant_id="g-1", detail="d" * 16384, spec=common_pb2.GrantSpec(resource="r" * 4096)
    )
    assert decode(wrapped(at_limit)).payload == at_limit


def test_a_service_cannot_write_what_its_consumers_would_refuse() -> None:
    with pytest.raises(OutOfBounds, match="refusing to write a lapse.v1.RequestCanceled"):
        build_envelope(
            events_pb2.RequestCanceled(request_id="r-1", reason="x" * 20_000),
            producer="request",
            occurred_at=NOW,
        )


def test_a_signed_command_out_of_bounds_is_rejected_by_the_agent(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path, "platform")
    clock = ManualClock(NOW)
    signer = CommandSigner(
        private_key_pem=private.read_bytes(), clock=clock, ttl=timedelta(seconds=30)
    )
    command = commands_pb2.AgentCommand(
        command_id="cmd-1",
        grant_id="g-1",
        epoch=1,
        kind=common_pb2.COMMAND_KIND_REVOKE,
        spec=common_pb2.GrantSpec(principal="alice\x00", resource="db"),
    )
    signed = signer.sign(command)
    verifier = CommandVerifier.from_pem(public.read_bytes(), clock=clock)
    # Correctly signed by the platform key, and still refused before anything runs.
    with pytest.raises(CommandRejected, match="out of bounds: spec.principal contains a NUL"):
        verifier.verify(signed)


async def test_a_signed_agent_report_out_of_bounds_is_refused(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path, "agent-a")
    registry = AgentRegistry.of(
        [
            events_pb2.AgentRegistrationChanged(
                agent_id="agent-a",
                change=events_pb2.AGENT_REGISTRATION_CHANGE_ENROLLED,
                key_id=key_id_of(public.read_bytes()),
                public_key_pem=public.read_text(),
            )
        ],
        clock=ManualClock(NOW),
    )
    report = events_pb2.AgentResult(
        grant_id="g-1", command_id="cmd-1", agent_id="agent-a", detail="e" * 20_000
    )
    signed = ReportSigner(agent_id="agent-a", private_key_pem=private.read_bytes()).sign(report)
    with pytest.raises(RefusedMessage, match="detail is 20000 characters long; the limit is 4096"):
        await registry.verify(signed, events_pb2.AgentResult)


class _Recording:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish(self, **record: Any) -> None:
        self.published.append(record)


async def test_the_quarantine_never_quarantines_its_own_records() -> None:
    publisher = _Recording()
    quarantine = Quarantine(
        publisher=publisher, topic="lapse.quarantine.v1", producer="audit", clock=ManualClock(NOW)
    )
    own = SimpleNamespace(
        topic="lapse.quarantine.v1", partition=0, offset=7, key=b"k", value=b"\xff" * 10
    )
    await quarantine.put(record=own, reason="not a lapse.v1.Envelope", consumer="audit")
    assert publisher.published == []
    other = SimpleNamespace(topic="lapse.grants.v1", partition=0, offset=8, key=b"k", value=b"")
    await quarantine.put(record=other, reason="r" * 50_000, consumer="audit")
    [record] = publisher.published
    quarantined = decode(record["value"]).payload
    assert isinstance(quarantined, events_pb2.QuarantinedMessage)
    assert len(quarantined.reason) == 4096 and quarantined.reason.endswith("…")
