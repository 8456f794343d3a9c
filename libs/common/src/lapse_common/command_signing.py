"""Ed25519 signatures on agent commands: the platform signs, agents verify.

An agent acts only on commands signed by a platform key it trusts and still inside a
validity window no longer than it allows, so a forged, replayed or far-future record on its
topic does nothing.

Key ids: `SignedCommand.key_id` is derived from the signing key (`lapse_common.key_ids`:
the first 16 hex digits of the SHA-256 of the raw public key), never a configured label.
An agent holds several platform keys while the platform rotates and picks the one the
command names; a command naming a key it does not hold is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from lapse_common.clock import Clock, as_utc
from lapse_common.field_bounds import OutOfBounds, screen
from lapse_common.key_ids import ed25519_key_id
from lapse_common.pb.lapse.v1 import commands_pb2

# Longer than any command the platform sends by default (grant commands live 10 minutes,
# revoke commands as long as the revoker's ack deadline, 30 s), short enough that a
# captured command cannot be replayed against a fresh agent hours later.
DEFAULT_MAX_VALIDITY = timedelta(minutes=15)
# How far ahead of the agent's clock a command's issued_at may be (the platform's clock
# may run a little fast); beyond it the command is not valid yet.
DEFAULT_CLOCK_SKEW = timedelta(seconds=60)
# A key id is 16 hex digits; an attacker's longer value is shown only this far.
_SHOWN_KEY_ID = 40


class CommandRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandSigner:
    def __init__(self, *, private_key_pem: bytes, clock: Clock, ttl: timedelta):
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the command signing key must be an Ed25519 private key")
        self._key = key
        self.key_id = ed25519_key_id(key.public_key())
        self._clock = clock
        self._ttl = ttl

    def sign(self, command: commands_pb2.AgentCommand) -> commands_pb2.SignedCommand:
        now = self._clock.now()
        command.issued_at.FromDatetime(now)
        command.not_after.FromDatetime(now + self._ttl)
        body = command.SerializeToString(deterministic=True)
        return commands_pb2.SignedCommand(
            command=body, signature=self._key.sign(body), key_id=self.key_id
        )


def load_command_public_key(public_key_pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the command verification key must be an Ed25519 public key")
    return key


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():.0f}s"


def _moment(timestamp: Timestamp, *, field: str) -> datetime:
    try:
        return as_utc(timestamp.ToDatetime())
    except (ValueError, OverflowError) as error:
        raise CommandRejected(f"command {field} is out of range: {error}") from error


class CommandVerifier:
    def __init__(
        self,
        *,
        public_keys: Iterable[Ed25519PublicKey],
        clock: Clock,
        max_validity: timedelta = DEFAULT_MAX_VALIDITY,
        clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    ) -> None:
        self._keys = {ed25519_key_id(key): key for key in public_keys}
        if not self._keys:
            raise ValueError("at least one command verification key is needed")
        if max_validity <= timedelta(0):
            raise ValueError("the maximum command validity must be positive")
        self._clock = clock
        self._max_validity = max_validity
        self._clock_skew = clock_skew

    @classmethod
    def from_pem(
        cls, public_key_pem: bytes, *, clock: Clock, max_validity: timedelta = DEFAULT_MAX_VALIDITY
    ) -> CommandVerifier:
        """One trusted key, as an agent configured with a single key file has."""
        return cls(
            public_keys=[load_command_public_key(public_key_pem)],
            clock=clock,
            max_validity=max_validity,
        )

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, signed: commands_pb2.SignedCommand) -> commands_pb2.AgentCommand:
        if not signed.signature:
            raise CommandRejected("command is not signed")
        key = self._keys.get(signed.key_id)
        if key is None:
            shown = signed.key_id[:_SHOWN_KEY_ID]
            if len(signed.key_id) > _SHOWN_KEY_ID:
                shown += "..."
            raise CommandRejected(
                f"command is signed with key_id {shown!r}, which is not a platform key this "
                f"agent trusts (trusted: {', '.join(self.key_ids)})"
            )
        try:
            key.verify(signed.signature, signed.command)
        except InvalidSignature as error:
            raise CommandRejected(
                f"command signature does not verify with the platform key {signed.key_id}"
            ) from error
        command = commands_pb2.AgentCommand()
        try:
            command.ParseFromString(signed.command)
        except DecodeError as error:
            raise CommandRejected(f"signed bytes are not an AgentCommand: {error}") from error
        try:
            screen(command)
        except OutOfBounds as problem:
            raise CommandRejected(f"command out of bounds: {problem}") from None
        self._check_validity_window(command)
        return command

    def _check_validity_window(self, command: commands_pb2.AgentCommand) -> None:
        if not command.HasField("not_after"):
            raise CommandRejected("command has no expiry")
        # issued_at is where the validity window starts: without it the window's length,
        # and so how long a captured command stays replayable, is unknown.
        if not command.HasField("issued_at"):
            raise CommandRejected("command has no issued_at")
        issued_at = _moment(command.issued_at, field="issued_at")
        not_after = _moment(command.not_after, field="not_after")
        now = self._clock.now()
        if not_after <= issued_at:
            raise CommandRejected(
                f"command expires ({not_after.isoformat()}) before it was issued "
                f"({issued_at.isoformat()})"
            )
        window = not_after - issued_at
        if window > self._max_validity:
            raise CommandRejected(
                f"command validity window is {_seconds(window)} (issued_at "
                f"{issued_at.isoformat()} to not_after {not_after.isoformat()}), longer than "
                f"this agent's maximum of {_seconds(self._max_validity)}"
            )
        if issued_at > now + self._clock_skew:
            raise CommandRejected(
                f"command is not valid yet: issued at {issued_at.isoformat()}, "
                f"{_seconds(issued_at - now)} ahead of this agent's clock (tolerance "
                f"{_seconds(self._clock_skew)})"
            )
        if now > not_after:
            raise CommandRejected(f"command expired at {not_after.isoformat()}")
