"""The platform command-signing keys this agent trusts, read once at startup.

Each key's id is derived from the key itself (`lapse_common.key_ids`), never from a file
name, so renaming a file cannot make the agent trust a key under another id. A rotation is:
add the new public key to the directory and restart the agent; switch the platform to the
new private key; once no command signed with the old key can still be valid (the maximum
validity window), remove the old file and restart the agent again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from lapse_common.command_signing import load_command_public_key
from lapse_common.key_ids import ed25519_key_id

FILE_SETTING = "LAPSE_AGENT_COMMAND_PUBLIC_KEY_FILE"
DIR_SETTING = "LAPSE_AGENT_COMMAND_PUBLIC_KEYS_DIR"
KEY_SUFFIXES = (".pub", ".pem")
# Far more than a rotation needs; a directory with more is a mistake, not a key set.
MAX_KEYS = 32


class PlatformKeyError(Exception):
    """A configured key cannot be used; the message names the setting and the file."""


@dataclass(frozen=True)
class PlatformKey:
    key_id: str
    key: Ed25519PublicKey
    source: Path


def _read_key(path: Path, *, setting: str) -> PlatformKey:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise PlatformKeyError(f"{setting} {path}: cannot read: {error.strerror}") from None
    try:
        key = load_command_public_key(pem)
    except ValueError as error:
        raise PlatformKeyError(f"{setting} {path}: {error}") from None
    return PlatformKey(key_id=ed25519_key_id(key), key=key, source=path)


def _key_files(directory: Path) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise PlatformKeyError(
            f"{DIR_SETTING} {directory}: cannot list: {error.strerror}"
        ) from None
    # Editors' backups and hidden files are not keys someone meant to trust.
    return [
        entry
        for entry in entries
        if entry.suffix in KEY_SUFFIXES and not entry.name.startswith(".") and entry.is_file()
    ]


def load_platform_keys(*, key_file: Path | None, keys_dir: Path | None) -> list[PlatformKey]:
    """Every key from the single-key file and the directory; the same key in both counts
    once."""
    if key_file is None and keys_dir is None:
        raise PlatformKeyError(
            f"set {FILE_SETTING} (one platform key) or {DIR_SETTING} (a directory of them)"
        )
    found: dict[str, PlatformKey] = {}
    if key_file is not None:
        key = _read_key(key_file, setting=FILE_SETTING)
        found[key.key_id] = key
    if keys_dir is not None:
        files = _key_files(keys_dir)
        if not files:
            raise PlatformKeyError(
                f"{DIR_SETTING} {keys_dir}: holds no {' or '.join(KEY_SUFFIXES)} key files"
            )
        if len(files) > MAX_KEYS:
            raise PlatformKeyError(
                f"{DIR_SETTING} {keys_dir}: holds {len(files)} key files, more than {MAX_KEYS}"
            )
        for path in files:
            key = _read_key(path, setting=DIR_SETTING)
            found.setdefault(key.key_id, key)
    return list(found.values())
