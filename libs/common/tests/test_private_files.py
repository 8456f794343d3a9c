"""Secrets are private from the first byte: no moment with a wider mode, no half-written file."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from lapse_common import private_files
from lapse_common.auth import ensure_keypair
from lapse_common.private_files import write_private_file


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The worst case: a umask that would leave new files world-readable and writable."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_a_new_secret_is_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    secret = tmp_path / "nested" / "token"
    write_private_file(secret, b"s3cret")
    assert secret.read_bytes() == b"s3cret"
    assert mode_of(secret) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_replacing_a_world_readable_file_leaves_an_owner_only_one(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_bytes(b"old")
    secret.chmod(0o644)
    write_private_file(secret, b"new")
    assert (secret.read_bytes(), mode_of(secret)) == (b"new", 0o600)


@pytest.mark.usefixtures("permissive_umask")
def test_the_bytes_are_never_visible_with_a_wider_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What exists on disk before the final rename is already complete and 0600."""
    seen: list[tuple[bytes, int]] = []
    rename = os.replace

    def watching_replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        staged = Path(source)
        seen.append((staged.read_bytes(), mode_of(staged)))
        rename(source, target)

    monkeypatch.setattr(private_files.os, "replace", watching_replace)
    write_private_file(tmp_path / "key", b"private key bytes")
    assert seen == [(b"private key bytes", 0o600)]


def test_a_failed_write_leaves_the_old_secret_and_no_stray_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "token"
    write_private_file(secret, b"old")

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(private_files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_private_file(secret, b"new")
    assert secret.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


def test_a_leftover_of_a_crashed_write_does_not_block_the_next(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    (tmp_path / ".token.crashed.tmp").write_bytes(b"half")
    write_private_file(secret, b"s3cret")
    assert secret.read_bytes() == b"s3cret"


@pytest.mark.usefixtures("permissive_umask")
def test_generated_private_keys_are_owner_only(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path, "command-signing")
    assert mode_of(private) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
