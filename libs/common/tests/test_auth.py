"""Bearer tokens: accepted only when signed by a configured key, unexpired, for Lapse."""

from __future__ import annotations

from pathlib import Path

import pytest
from lapse_common.auth import InvalidToken, TokenVerifier, ensure_keypair, mint_token
from lapse_common.settings import AuthSettings


def verifier_for(public_key: Path) -> TokenVerifier:
    return TokenVerifier.from_settings(AuthSettings(public_key_file=public_key, dev_mode=True))


def test_valid_token_carries_subject_groups_and_roles(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path, "dev")
    token = mint_token(
        private_key_pem=private.read_bytes(),
        subject="alice",
        groups=["engineering"],
        roles=["admin"],
        ttl_seconds=60,
    )
    identity = verifier_for(public).verify(token)
    assert (identity.subject, identity.groups, identity.roles) == (
        "alice",
        ("engineering",),
        ("admin",),
    )
    assert identity.has_role("admin") and not identity.has_role("sre")


def test_token_from_another_key_is_refused(tmp_path: Path) -> None:
    _, public = ensure_keypair(tmp_path / "trusted", "dev")
    other, _ = ensure_keypair(tmp_path / "other", "dev")
    token = mint_token(
        private_key_pem=other.read_bytes(),
        subject="mallory",
        groups=[],
        roles=["admin"],
        ttl_seconds=60,
    )
    with pytest.raises(InvalidToken, match="signature matches no configured key"):
        verifier_for(public).verify(token)


def test_expired_and_foreign_audience_tokens_are_refused(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path, "dev")
    expired = mint_token(
        private_key_pem=private.read_bytes(), subject="a", groups=[], roles=[], ttl_seconds=-120
    )
    with pytest.raises(InvalidToken, match="expired"):
        verifier_for(public).verify(expired)
    foreign = mint_token(
        private_key_pem=private.read_bytes(),
        subject="a",
        groups=[],
        roles=[],
        ttl_seconds=60,
        audience="another-app",
    )
    with pytest.raises(InvalidToken, match="(?i)audience"):
        verifier_for(public).verify(foreign)


def test_no_key_configured_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="LAPSE_AUTH_PUBLIC_KEY_FILE"):
        TokenVerifier.from_settings(AuthSettings(public_key_file=None, jwks_file=None))


def test_keypair_is_created_once(tmp_path: Path) -> None:
    private, _ = ensure_keypair(tmp_path, "dev")
    first = private.read_bytes()
    ensure_keypair(tmp_path, "dev")
    assert private.read_bytes() == first
    assert oct(private.stat().st_mode & 0o777) == "0o600"
