"""What the per-call checks cost: bearer token verification and request screening, the two
steps every gRPC call passes before its handler. Prints microseconds per call (median of
rounds) on this machine; needs no Kafka or PostgreSQL.

    uv run python benchmarks/request_checks.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lapse_common.auth import TokenVerifier, ensure_keypair, mint_token
from lapse_common.pb.lapse.v1 import request_service_pb2
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
    try:
        from lapse_common.request_screening import screen
    except ImportError:  # a tree from before request screening
        print(f"token verification: {verify_us:.1f} us per call; request screening: absent")
        return
    screen_us = per_call_microseconds(lambda: screen(submit), calls=args.calls, rounds=args.rounds)
    print(
        f"token verification: {verify_us:.1f} us per call; "
        f"request screening (SubmitRequest): {screen_us:.1f} us per call"
    )


if __name__ == "__main__":
    main()
