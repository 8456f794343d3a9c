"""Signed checkpoints of the audit chain head: the format, signing and checking.

A checkpoint says "the audit log `log` had `sequence` events, the last with hash
`head_hash`", signed with an Ed25519 key that is not in the database. Kept outside the
database, it makes a rewrite of history (delete a row, re-hash the rest) detectable: the
rewritten chain no longer holds `head_hash` at `sequence`.

The file is one JSON object of ASCII strings and integers, keys sorted, no whitespace
(so RFC 8785 canonical JSON), plus a newline. The signature covers the same canonical
serialization of the object without its `signature` member; services/audit/README.md
describes how to check one with any Ed25519 library. The audit service signs; the audit
service and the CLI check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "lapse.audit.checkpoint.v1"
# A checkpoint is a few hundred bytes; anything much larger is not one.
MAX_CHECKPOINT_BYTES = 2048
LOG_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HEX_HASH = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")
_SIGNED_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_FIELDS = {"format", "log", "sequence", "head_hash", "signed_at", "key_id", "signature"}


class CheckpointInvalid(ValueError):
    """Not a checkpoint, or not one signed by the expected key; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    log: str
    sequence: int
    head_hash: str
    signed_at: datetime
    key_id: str
    signature: bytes

    def signed_fields(self) -> dict[str, str | int]:
        return {
            "format": FORMAT,
            "log": self.log,
            "sequence": self.sequence,
            "head_hash": self.head_hash,
            "signed_at": _instant(self.signed_at),
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        return canonical_json(self.signed_fields())

    def to_json(self) -> str:
        document = {
            **self.signed_fields(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }
        return canonical_json(document).decode("ascii") + "\n"


def canonical_json(document: dict[str, str | int]) -> bytes:
    # ASCII strings and integers only: sorted keys and no whitespace are then exactly the
    # RFC 8785 form, which an outside verifier can rebuild in any language.
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The first 16 bytes of SHA-256 over the raw 32-byte public key, in hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


def sign_checkpoint(
    key: Ed25519PrivateKey, *, log: str, sequence: int, head_hash: str, signed_at: datetime
) -> Checkpoint:
    if not LOG_NAME.match(log):
        raise ValueError(f"log name {log!r} must match {LOG_NAME.pattern}")
    if sequence < 0 or not _HEX_HASH.match(head_hash):
        raise ValueError(f"not a chain head: sequence {sequence}, hash {head_hash!r}")
    unsigned = Checkpoint(
        log=log,
        sequence=sequence,
        head_hash=head_hash,
        # The file keeps microseconds; the signed value must be the one written.
        signed_at=signed_at.astimezone(UTC),
        key_id=key_id_of(key.public_key()),
        signature=b"",
    )
    return replace(unsigned, signature=key.sign(unsigned.signed_bytes()))


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """The checkpoint a file holds, its shape checked (not yet its signature)."""
    if len(text) > MAX_CHECKPOINT_BYTES:
        raise CheckpointInvalid(
            f"a checkpoint is at most {MAX_CHECKPOINT_BYTES} bytes; this is {len(text)}"
        )
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        # RecursionError: 2 KiB of "[[[[..." nests deeper than the parser goes.
        raise CheckpointInvalid(f"a checkpoint is a JSON object: {error}") from None
    if not isinstance(document, dict):
        raise CheckpointInvalid("a checkpoint is a JSON object")
    if set(document) != _FIELDS:
        missing, extra = _FIELDS - set(document), set(document) - _FIELDS
        raise CheckpointInvalid(
            f"checkpoint members are wrong (missing {sorted(missing)}, unknown {sorted(extra)})"
        )
    if document["format"] != FORMAT:
        raise CheckpointInvalid(f"checkpoint format must be {FORMAT!r}")
    log, sequence, head_hash = document["log"], document["sequence"], document["head_hash"]
    signed_at, key_id, signature = document["signed_at"], document["key_id"], document["signature"]
    if not isinstance(log, str) or not LOG_NAME.match(log):
        raise CheckpointInvalid(f"checkpoint log must match {LOG_NAME.pattern}")
    if type(sequence) is not int or not 0 <= sequence < 2**63:
        raise CheckpointInvalid("checkpoint sequence must be an integer from 0 to 2^63-1")
    if not isinstance(head_hash, str) or not _HEX_HASH.match(head_hash):
        raise CheckpointInvalid("checkpoint head_hash must be 64 lowercase hex digits")
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise CheckpointInvalid("checkpoint key_id must be 32 lowercase hex digits")
    if not isinstance(signed_at, str) or not _SIGNED_AT.match(signed_at):
        raise CheckpointInvalid("checkpoint signed_at must look like 2025-03-01T12:00:05.000000Z")
    try:
        when = datetime.strptime(signed_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        raw_signature = (
            base64.b64decode(signature, validate=True) if isinstance(signature, str) else b""
        )
    except (ValueError, binascii.Error):
        raise CheckpointInvalid("checkpoint signed_at or signature is malformed") from None
    if len(raw_signature) != 64:
        raise CheckpointInvalid("checkpoint signature must be a base64 Ed25519 signature")
    return Checkpoint(
        log=log,
        sequence=sequence,
        head_hash=head_hash,
        signed_at=when,
        key_id=key_id,
        signature=raw_signature,
    )


def verify_checkpoint(checkpoint: Checkpoint, public_key: Ed25519PublicKey, *, log: str) -> None:
    """Raise CheckpointInvalid unless `public_key` signed this checkpoint of log `log`."""
    expected_key = key_id_of(public_key)
    if checkpoint.key_id != expected_key:
        raise CheckpointInvalid(
            f"checkpoint is signed by key {checkpoint.key_id}, not by the checkpoint key "
            f"{expected_key}"
        )
    try:
        public_key.verify(checkpoint.signature, checkpoint.signed_bytes())
    except InvalidSignature:
        raise CheckpointInvalid(
            f"checkpoint signature does not verify with key {expected_key} (forged or altered)"
        ) from None
    if checkpoint.log != log:
        raise CheckpointInvalid(f"checkpoint is of log {checkpoint.log!r}, not of {log!r}")


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the checkpoint key must be an Ed25519 private key (PEM, PKCS#8)")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the checkpoint public key must be an Ed25519 public key (PEM)")
    return key


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
