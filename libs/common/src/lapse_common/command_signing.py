"""Ed25519 signatures on agent commands: the platform signs, agents verify.

An agent acts only on commands signed by the platform key it trusts and still inside
their validity window, so a forged or replayed record on its topic does nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from lapse_common.clock import Clock, as_utc
from lapse_common.pb.lapse.v1 import commands_pb2


class CommandRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandSigner:
    def __init__(self, *, private_key_pem: bytes, key_id: str, clock: Clock, ttl: timedelta):
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the command signing key must be an Ed25519 private key")
        self._key = key
        self._key_id = key_id
        self._clock = clock
        self._ttl = ttl

    def sign(self, command: commands_pb2.AgentCommand) -> commands_pb2.SignedCommand:
        now = self._clock.now()
        command.issued_at.FromDatetime(now)
        command.not_after.FromDatetime(now + self._ttl)
        body = command.SerializeToString(deterministic=True)
        return commands_pb2.SignedCommand(
            command=body, signature=self._key.sign(body), key_id=self._key_id
        )


class CommandVerifier:
    def __init__(self, *, public_key_pem: bytes, clock: Clock) -> None:
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the command verification key must be an Ed25519 public key")
        self._key = key
        self._clock = clock

    def verify(self, signed: commands_pb2.SignedCommand) -> commands_pb2.AgentCommand:
        if not signed.signature:
            raise CommandRejected("command is not signed")
        try:
            self._key.verify(signed.signature, signed.command)
        except InvalidSignature as error:
            raise CommandRejected(
                "command signature does not verify with the platform key"
            ) from error
        command = commands_pb2.AgentCommand()
        try:
            command.ParseFromString(signed.command)
        except DecodeError as error:
            raise CommandRejected(f"signed bytes are not an AgentCommand: {error}") from error
        if not command.HasField("not_after"):
            raise CommandRejected("command has no expiry")
        not_after: datetime = as_utc(command.not_after.ToDatetime())
        if self._clock.now() > not_after:
            raise CommandRejected(f"command expired at {not_after.isoformat()}")
        return command
