"""Producer keys: loading Ed25519 PEMs and generating a new producer's key pair."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lapse_common.access_events.kinds import EVENT_KINDS
from lapse_common.auth import ensure_keypair


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not an unencrypted PEM private key: {error}") from error
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"access events are signed with Ed25519, not {type(key).__name__}")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"access events are signed with Ed25519, not {type(key).__name__}")
    return key


@dataclass(frozen=True)
class ProducerKeys:
    private_key_file: Path
    public_key_file: Path
    # False when the pair already existed and was kept (a rerun must not rotate a key
    # that consumers already trust).
    created: bool


def generate_producer_keys(producer: str, directory: Path) -> ProducerKeys:
    """Write `<producer>.key` (mode 0600) and `<producer>.pub` into `directory`."""
    private_path, public_path = directory / f"{producer}.key", directory / f"{producer}.pub"
    existed = private_path.exists()
    if existed and not public_path.exists():
        raise FileExistsError(
            f"{private_path} exists without {public_path.name}; move it away or restore the pair"
        )
    private_path, public_path = ensure_keypair(directory, producer)
    return ProducerKeys(
        private_key_file=private_path, public_key_file=public_path, created=not existed
    )


def registry_snippet(
    producer: str,
    public_key_file: Path,
    *,
    events: Sequence[str] = (),
    machine_identities: Sequence[str] = (),
) -> str:
    """The producer's entry for the consumers' registry YAML."""
    entry: dict[str, object] = {
        "public_key_file": str(public_key_file),
        "events": list(events),
    }
    if machine_identities:
        entry["machine_identities"] = list(machine_identities)
    text = yaml.safe_dump({"producers": {producer: entry}}, sort_keys=False)
    if not events:
        # The registry refuses an empty list on purpose, so the admin has to choose.
        text += f"# fill in events from: {', '.join(sorted(EVENT_KINDS))}\n"
    return text
