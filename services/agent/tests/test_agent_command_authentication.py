"""Only commands signed by the platform key, unexpired and addressed to this agent run."""

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_agent.operations.authenticate_command import CommandRefused, authenticate_command
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner, CommandVerifier
from lapse_common.pb.lapse.v1 import commands_pb2, common_pb2

from services.agent.tests.agent_commands import AGENT_ID, CommandFactory


def new_private_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def authenticate(
    signed: commands_pb2.SignedCommand, verifier: CommandVerifier
) -> commands_pb2.AgentCommand:
    return authenticate_command(signed=signed, verifier=verifier, agent_id=AGENT_ID)


def refusal(signed: commands_pb2.SignedCommand, verifier: CommandVerifier) -> CommandRefused:
    with pytest.raises(CommandRefused) as refused:
        authenticate(signed, verifier)
    return refused.value


def test_a_signed_command_for_this_agent_is_accepted(
    signer: CommandSigner, verifier: CommandVerifier, make_command: CommandFactory
) -> None:
    command = make_command(grant_id="g-42", epoch=7)
    accepted = authenticate(signer.sign(command), verifier)
    assert accepted.grant_id == "g-42"
    assert accepted.epoch == 7
    assert accepted.spec.principal == "alice"


def test_unsigned_is_refused(
    signer: CommandSigner, verifier: CommandVerifier, make_command: CommandFactory
) -> None:
    signed = signer.sign(make_command(grant_id="g-1"))
    signed.ClearField("signature")
    refused = refusal(signed, verifier)
    assert refused.reason == "rejected: command is not signed"
    # The refusal can still be addressed to the grant the bytes claim.
    assert refused.claimed.grant_id == "g-1"


def test_tampered_command_is_refused(
    signer: CommandSigner, verifier: CommandVerifier, make_command: CommandFactory
) -> None:
    signed = signer.sign(make_command(principal="alice"))
    tampered = commands_pb2.AgentCommand()
    tampered.ParseFromString(signed.command)
    tampered.spec.principal = "mallory"
    signed.command = tampered.SerializeToString(deterministic=True)
    refused = refusal(signed, verifier)
    assert "signature does not verify" in refused.reason
    assert refused.claimed.spec.principal == "mallory"


def test_command_signed_with_another_key_under_the_platform_key_id_is_refused(
    clock: ManualClock,
    signer: CommandSigner,
    verifier: CommandVerifier,
    make_command: CommandFactory,
) -> None:
    forger = CommandSigner(private_key_pem=new_private_pem(), clock=clock, ttl=timedelta(minutes=5))
    forged = forger.sign(make_command())
    # The forger names the trusted key, so the agent checks with that key: it does not verify.
    forged.key_id = signer.key_id
    refused = refusal(forged, verifier)
    assert "signature does not verify with the platform key " + signer.key_id in refused.reason


def test_expired_command_is_refused(
    signer: CommandSigner,
    verifier: CommandVerifier,
    clock: ManualClock,
    make_command: CommandFactory,
) -> None:
    signed = signer.sign(make_command())
    clock.advance(timedelta(minutes=5, seconds=1))
    assert "command expired at" in refusal(signed, verifier).reason


def test_garbage_signed_bytes_are_refused(verifier: CommandVerifier) -> None:
    signed = commands_pb2.SignedCommand(command=b"\xff\xff", signature=b"x" * 64, key_id="k")
    refused = refusal(signed, verifier)
    assert refused.reason.startswith("rejected:")
    assert refused.claimed.grant_id == ""


def test_command_for_another_agent_is_refused(
    signer: CommandSigner, verifier: CommandVerifier, make_command: CommandFactory
) -> None:
    refused = refusal(signer.sign(make_command(agent_id="someone-else")), verifier)
    assert "is for agent 'someone-else'" in refused.reason


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"command_id": ""}, "no command_id"),
        ({"kind": common_pb2.COMMAND_KIND_UNSPECIFIED}, "unknown command kind"),
        ({"grant_id": ""}, "no grant_id"),
    ],
)
def test_incomplete_commands_are_refused(
    signer: CommandSigner,
    verifier: CommandVerifier,
    make_command: CommandFactory,
    changes: dict[str, object],
    reason: str,
) -> None:
    command = make_command()
    for field, value in changes.items():
        setattr(command, field, value)
    assert reason in refusal(signer.sign(command), verifier).reason
