"""The agent picks the platform key by the command's key_id: unknown ids are refused with the
ids it trusts, and a rotation works (old and new both verify while both are configured;
once the old key is removed, its commands are refused)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lapse_agent.operations.authenticate_command import CommandRefused, authenticate_command
from lapse_agent.platform_keys import PlatformKeyError, load_platform_keys
from lapse_common.clock import ManualClock
from lapse_common.command_signing import CommandSigner, CommandVerifier
from lapse_common.key_ids import ed25519_key_id
from lapse_common.pb.lapse.v1 import commands_pb2

from services.agent.tests.agent_commands import AGENT_ID, CommandFactory


class PlatformKeyPair:
    def __init__(self, clock: ManualClock) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.signer = CommandSigner(
            private_key_pem=self.private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            clock=clock,
            ttl=timedelta(minutes=10),
        )

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def write_public(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.public_pem)
        return path


def verifier_for(
    clock: ManualClock, *, key_file: Path | None = None, keys_dir: Path | None = None
) -> CommandVerifier:
    """As the agent builds it at startup from its settings."""
    keys = load_platform_keys(key_file=key_file, keys_dir=keys_dir)
    return CommandVerifier(public_keys=[k.key for k in keys], clock=clock)


def accepts(verifier: CommandVerifier, pair: PlatformKeyPair, make_command: CommandFactory) -> str:
    command = authenticate_command(
        signed=pair.signer.sign(make_command()), verifier=verifier, agent_id=AGENT_ID
    )
    return command.command_id


def refusal(
    verifier: CommandVerifier, pair: PlatformKeyPair, make_command: CommandFactory
) -> CommandRefused:
    with pytest.raises(CommandRefused) as refused:
        authenticate_command(
            signed=pair.signer.sign(make_command(grant_id="g-7")),
            verifier=verifier,
            agent_id=AGENT_ID,
        )
    return refused.value


def test_the_signer_names_its_key_by_the_derived_id(clock: ManualClock) -> None:
    pair = PlatformKeyPair(clock)
    expected = ed25519_key_id(pair.private.public_key())
    assert pair.signer.key_id == expected
    assert len(expected) == 16 and int(expected, 16) >= 0
    assert pair.signer.sign(commands_pb2.AgentCommand()).key_id == expected


def test_the_single_key_file_setting_is_one_key_with_its_derived_id(
    tmp_path: Path, clock: ManualClock, make_command: CommandFactory
) -> None:
    pair = PlatformKeyPair(clock)
    verifier = verifier_for(clock, key_file=pair.write_public(tmp_path / "command-signing.pub"))
    assert verifier.key_ids == [pair.signer.key_id]
    assert accepts(verifier, pair, make_command)


def test_an_unknown_key_id_is_refused_naming_it_and_the_trusted_ids(
    tmp_path: Path, clock: ManualClock, make_command: CommandFactory
) -> None:
    platform, stranger = PlatformKeyPair(clock), PlatformKeyPair(clock)
    verifier = verifier_for(clock, key_file=platform.write_public(tmp_path / "platform.pub"))
    refused = refusal(verifier, stranger, make_command)
    assert refused.reason == (
        f"rejected: command is signed with key_id {stranger.signer.key_id!r}, which is not a "
        f"platform key this agent trusts (trusted: {platform.signer.key_id})"
    )
    # Reported back against the grant the bytes claim, like any other refusal.
    assert refused.claimed.grant_id == "g-7"


def test_an_empty_or_oversized_key_id_is_refused_without_echoing_it_all(
    clock: ManualClock,
    verifier: CommandVerifier,
    signer: CommandSigner,
    make_command: CommandFactory,
) -> None:
    signed = signer.sign(make_command())
    signed.key_id = ""
    with pytest.raises(CommandRefused, match="signed with key_id '', which is not"):
        authenticate_command(signed=signed, verifier=verifier, agent_id=AGENT_ID)
    signed.key_id = "k" * 100_000
    with pytest.raises(CommandRefused) as refused:
        authenticate_command(signed=signed, verifier=verifier, agent_id=AGENT_ID)
    assert len(refused.value.reason) < 200
    assert "k" * 40 + "...'" in refused.value.reason


def test_rotation_old_and_new_verify_while_both_are_configured_then_old_is_refused(
    tmp_path: Path, clock: ManualClock, make_command: CommandFactory
) -> None:
    keys_dir = tmp_path / "platform-keys"
    old, new = PlatformKeyPair(clock), PlatformKeyPair(clock)
    old_file = old.write_public(keys_dir / "2029.pub")
    new.write_public(keys_dir / "2030.pem")
    (keys_dir / "README.txt").write_text("not a key, ignored")

    during = verifier_for(clock, keys_dir=keys_dir)
    assert during.key_ids == sorted([old.signer.key_id, new.signer.key_id])
    assert accepts(during, old, make_command)
    assert accepts(during, new, make_command)

    # The old key is removed and the agent restarted: the old key's commands are refused.
    old_file.unlink()
    after = verifier_for(clock, keys_dir=keys_dir)
    assert after.key_ids == [new.signer.key_id]
    assert accepts(after, new, make_command)
    refused = refusal(after, old, make_command)
    assert f"key_id {old.signer.key_id!r}, which is not a platform key" in refused.reason


def test_the_key_file_and_the_directory_together_and_the_same_key_twice(
    tmp_path: Path, clock: ManualClock, make_command: CommandFactory
) -> None:
    old, new = PlatformKeyPair(clock), PlatformKeyPair(clock)
    key_file = old.write_public(tmp_path / "command-signing.pub")
    keys_dir = tmp_path / "keys"
    old.write_public(keys_dir / "copy-of-old.pub")
    new.write_public(keys_dir / "new.pub")
    keys = load_platform_keys(key_file=key_file, keys_dir=keys_dir)
    assert sorted(k.key_id for k in keys) == sorted([old.signer.key_id, new.signer.key_id])


@pytest.mark.parametrize(
    ("key_file", "keys_dir", "message"),
    [
        (
            None,
            None,
            "set LAPSE_AGENT_COMMAND_PUBLIC_KEY_FILE .* or LAPSE_AGENT_COMMAND_PUBLIC_KEYS_DIR",
        ),
        ("missing.pub", None, "LAPSE_AGENT_COMMAND_PUBLIC_KEY_FILE .*missing.pub: cannot read"),
        (None, ".", "holds no .pub or .pem key files"),
        (None, "absent", "LAPSE_AGENT_COMMAND_PUBLIC_KEYS_DIR .*absent: cannot list"),
    ],
)
def test_unusable_key_settings_say_what_is_wrong(
    tmp_path: Path, key_file: str | None, keys_dir: str | None, message: str
) -> None:
    with pytest.raises(PlatformKeyError, match=message):
        load_platform_keys(
            key_file=tmp_path / key_file if key_file else None,
            keys_dir=tmp_path / keys_dir if keys_dir else None,
        )


def test_a_private_key_in_the_key_directory_is_refused_naming_the_file(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "oops.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(PlatformKeyError, match=f"LAPSE_AGENT_COMMAND_PUBLIC_KEYS_DIR {path}"):
        load_platform_keys(key_file=None, keys_dir=tmp_path)
