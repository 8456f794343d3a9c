"""Which agent results the grant-scheduler spends a signature check on: only answers to
grant commands. Everything else goes to the signature check (and is refused there if
forged); a skipped report is never acted on."""

from __future__ import annotations

from lapse_common.pb.lapse.v1 import common_pb2, events_pb2
from lapse_grant_scheduler.handlers import _answers_no_grant_command


def signed(result: events_pb2.AgentResult | bytes) -> events_pb2.SignedAgentReport:
    body = result if isinstance(result, bytes) else result.SerializeToString()
    return events_pb2.SignedAgentReport(
        agent_id="demo-agent",
        key_id="k1",
        report_type="lapse.v1.AgentResult",
        report=body,
        signature=b"not checked here",
    )


def test_an_answer_to_a_revoke_is_skipped_before_its_signature_is_checked() -> None:
    revoke = events_pb2.AgentResult(grant_id="g1", kind=common_pb2.COMMAND_KIND_REVOKE)
    assert _answers_no_grant_command(signed(revoke))


def test_answers_to_grants_and_anything_unreadable_go_to_the_signature_check() -> None:
    grant = events_pb2.AgentResult(grant_id="g1", kind=common_pb2.COMMAND_KIND_GRANT)
    assert not _answers_no_grant_command(signed(grant))
    assert not _answers_no_grant_command(signed(b"\xff\xff not protobuf"))
    # Unsigned results are refused by name by the signature check.
    assert not _answers_no_grant_command(grant)
    heartbeat = signed(grant)
    heartbeat.report_type = "lapse.v1.AgentHeartbeat"
    assert not _answers_no_grant_command(heartbeat)
