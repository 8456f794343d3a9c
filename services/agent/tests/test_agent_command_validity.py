"""A command's validity window (issued_at to not_after) is capped: a command signed by the
genuine platform key but valid for 10 years, one issued in the future, or one without an
issued_at is refused with the reason; the platform's own commands pass."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_agent.operations.authenticate_command import CommandRefused, authenticate_command
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner, CommandVerifier
from lapse_common.pb.lapse.v1 import commands_pb2

from services.agent.tests.agent_commands import AGENT_ID, CommandFactory

TEN_YEARS = timedelta(days=3652)


def platform_signer(pem: bytes, clock: ManualClock, ttl: timedelta) -> CommandSigner:
    return CommandSigner(private_key_pem=pem, clock=clock, ttl=ttl)


def reason(signed: commands_pb2.SignedCommand, verifier: CommandVerifier) -> str:
    with pytest.raises(CommandRefused) as refused:
        authenticate_command(signed=signed, verifier=verifier, agent_id=AGENT_ID)
    return refused.value.reason


def test_a_ten_year_window_signed_by_the_platform_key_is_refused(
    platform_private_pem: bytes,
    clock: ManualClock,
    verifier: CommandVerifier,
    make_command: CommandFactory,
) -> None:
    signed = platform_signer(platform_private_pem, clock, TEN_YEARS).sign(make_command())
    refused = reason(signed, verifier)
    assert refused.startswith("rejected: command validity window is 315532800s (issued_at ")
    assert refused.endswith("longer than this agent's maximum of 900s")


@pytest.mark.parametrize(
    ("ttl", "what"),
    [
        (timedelta(minutes=10), "grant-scheduler default command TTL"),
        (timedelta(seconds=30), "revoker default ack deadline"),
        (timedelta(minutes=15), "exactly the maximum"),
    ],
)
def test_the_platform_default_windows_pass(
    platform_private_pem: bytes,
    clock: ManualClock,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    ttl: timedelta,
    what: str,
) -> None:
    signed = platform_signer(platform_private_pem, clock, ttl).sign(make_command())
    command = authenticate_command(signed=signed, verifier=verifier, agent_id=AGENT_ID)
    assert command.command_id, what


def test_one_second_over_a_configured_maximum_is_refused(
    platform_private_pem: bytes,
    platform_public_pem: bytes,
    clock: ManualClock,
    make_command: CommandFactory,
) -> None:
    verifier = CommandVerifier.from_pem(
        platform_public_pem, clock=clock, max_validity=timedelta(minutes=2)
    )
    fits = platform_signer(platform_private_pem, clock, timedelta(minutes=2))
    assert authenticate_command(
        signed=fits.sign(make_command()), verifier=verifier, agent_id=AGENT_ID
    )
    over = platform_signer(platform_private_pem, clock, timedelta(minutes=2, seconds=1))
    assert "window is 121s" in reason(over.sign(make_command()), verifier)


def test_a_command_issued_in_the_future_is_not_valid_yet(
    platform_private_pem: bytes,
    verifier: CommandVerifier,
    clock: ManualClock,
    make_command: CommandFactory,
) -> None:
    ahead = ManualClock(clock.now() + timedelta(minutes=5))
    signed = platform_signer(platform_private_pem, ahead, timedelta(minutes=5)).sign(make_command())
    refused = reason(signed, verifier)
    assert "command is not valid yet: issued at 2030-01-01T12:05:00+00:00, 300s ahead" in refused
    assert "tolerance 60s" in refused
    # Once the agent's clock gets there, the same command is valid.
    clock.advance(timedelta(minutes=5))
    assert authenticate_command(signed=signed, verifier=verifier, agent_id=AGENT_ID)


def test_a_platform_clock_slightly_ahead_is_tolerated(
    platform_private_pem: bytes,
    verifier: CommandVerifier,
    clock: ManualClock,
    make_command: CommandFactory,
) -> None:
    ahead = ManualClock(clock.now() + timedelta(seconds=30))
    signed = platform_signer(platform_private_pem, ahead, timedelta(minutes=5)).sign(make_command())
    assert authenticate_command(signed=signed, verifier=verifier, agent_id=AGENT_ID)


def resign(
    signed: commands_pb2.SignedCommand, pem: bytes, command: commands_pb2.AgentCommand
) -> None:
    """Sign hand-made timestamps with the platform key, as a buggy or hostile issuer would."""
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    signed.command = command.SerializeToString(deterministic=True)
    signed.signature = key.sign(signed.command)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda c: c.ClearField("issued_at"), "rejected: command has no issued_at"),
        (lambda c: c.ClearField("not_after"), "rejected: command has no expiry"),
        (
            lambda c: c.not_after.FromSeconds(c.issued_at.seconds - 1),
            "before it was issued",
        ),
        (lambda c: setattr(c.not_after, "seconds", 2**62), "command not_after is out of range"),
    ],
)
def test_windows_that_are_missing_inverted_or_out_of_range_are_refused(
    signer: CommandSigner,
    platform_private_pem: bytes,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    tamper: Callable[[commands_pb2.AgentCommand], object],
    expected: str,
) -> None:
    signed = signer.sign(make_command())
    command = commands_pb2.AgentCommand.FromString(signed.command)
    tamper(command)
    resign(signed, platform_private_pem, command)
    assert expected in reason(signed, verifier)
