"""What the per-call checks cost: bearer token verification and request screening, the two
steps every gRPC call passes before its handler, and decoding a consumed Kafka record (which
screens the envelope and payload against the same field bounds). Prints microseconds per
call (median of rounds) on this machine; needs no Kafka or PostgreSQL.

    uv run python benchmarks/request_checks.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.message import Message
from lapse_common.auth import TokenVerifier, ensure_keypair, mint_token
from lapse_common.messaging.codec import build_envelope, decode
from lapse_common.pb.lapse.v1 import common_pb2, events_pb2, request_service_pb2
from lapse_common.settings import AuthSettings


def per_call_microseconds(step: Callable[[], object], *, calls: int, rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            step()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        private, public = ensure_keypair(Path(scratch), "dev-token")
        # dev_mode: the dev key is refused otherwise (an older tree ignores the field).
        verifier = TokenVerifier.from_settings(
            AuthSettings(public_key_file=public, issuer="lapse-dev", dev_mode=True)
        )
        token = mint_token(
            private_key_pem=private.read_bytes(),
            subject="alice",
            groups=["engineering", "sre-oncall"],
            roles=["sre"],
            ttl_seconds=3600,
        )
        verify_us = per_call_microseconds(
            lambda: verifier.verify(token), calls=args.calls // 10, rounds=args.rounds
        )
    submit = request_service_pb2.SubmitRequestRequest(
        integration_id="demo-pg",
        resource="appdb",
        permission="read",
        principal="alice",
        duration_seconds=1800,
        justification="INC-1234: reading the orders table to find the stuck batch " * 3,
    )
    print(f"token verification: {verify_us:.1f} us per call")
    screen = screening_function()
    if screen is None:
        print("request screening: absent in this tree")
    else:
        screen_us = per_call_microseconds(
            lambda: screen(submit), calls=args.calls, rounds=args.rounds
        )
        print(f"request screening (SubmitRequest): {screen_us:.1f} us per call")
    record = typical_agent_result_record()
    decode_us = per_call_microseconds(
        lambda: decode(record, expected=(events_pb2.SignedAgentReport,)),
        calls=args.calls,
        rounds=args.rounds,
    )
    print(f"decoding a consumed record (signed AgentResult): {decode_us:.1f} us per call")


def screening_function() -> Callable[[Message], None] | None:
    """Where this tree keeps request screening (it moved to field_bounds), so the same
    benchmark measures a tree before and after a change."""
    for module in ("lapse_common.field_bounds", "lapse_common.request_screening"):
        try:
            found: Callable[[Message], None] = importlib.import_module(module).screen
        except (ImportError, AttributeError):
            continue
        return found
    return None


def typical_agent_result_record() -> bytes:
    """The record every revocation ends with: an agent's signed report of a verified revoke."""
    result = events_pb2.AgentResult(
        command_id="cmd-" + "7" * 32,
        grant_id="grant-" + "3" * 32,
        epoch=2,
        kind=common_pb2.COMMAND_KIND_REVOKE,
        outcome=events_pb2.RESULT_OUTCOME_SUCCEEDED,
        changed=True,
        verified=True,
        detail="revoked appdb_read from alice; read back: not a member",
        agent_id="demo-agent",
    )
    result.completed_at.GetCurrentTime()
    report = events_pb2.SignedAgentReport(
        agent_id="demo-agent",
        key_id="k" * 16,
        report_type="lapse.v1.AgentResult",
        report=result.SerializeToString(),
        signature=b"s" * 64,
    )
    envelope = build_envelope(
        report,
        producer="agent:demo-agent",
        occurred_at=datetime.now(UTC),
        event_id="evt-" + "1" * 32,
    )
    return envelope.SerializeToString()


if __name__ == "__main__":
    main()
