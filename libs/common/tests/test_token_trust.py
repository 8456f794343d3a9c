"""What a token must be to be believed: claims of the right type and lifetime, a key picked
by kid and pinned to one algorithm, dev trust only in dev mode, subject-only issuers whose
roles and groups are ignored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from lapse_common.auth import InvalidToken, TokenVerifier, ensure_keypair, mint_token
from lapse_common.dev_trust import DEV_KEYS_MARKER, DevTrustRefused
from lapse_common.settings import AuthSettings
from lapse_common.token_keys import parse_jwks

ISSUER = "https://idp.example"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": "lapse",
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256_token(payload: dict[str, Any], secret: bytes) -> str:
    """Signed by hand: PyJWT rightly refuses to use a PEM key as an HMAC secret, an attacker
    does not."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def public_pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def jwk_of(private: Any, kid: str) -> dict[str, Any]:
    algorithm = {
        ed25519.Ed25519PrivateKey: jwt.algorithms.OKPAlgorithm,
        rsa.RSAPrivateKey: jwt.algorithms.RSAAlgorithm,
        ec.EllipticCurvePrivateKey: jwt.algorithms.ECAlgorithm,
    }
    for kind, implementation in algorithm.items():
        if isinstance(private, kind):
            jwk: dict[str, Any] = implementation.to_jwk(private.public_key(), as_dict=True)  # type: ignore[attr-defined]
            jwk["kid"] = kid
            return jwk
    raise AssertionError(private)


@pytest.fixture
def ed_key(tmp_path: Path) -> tuple[ed25519.Ed25519PrivateKey, Path]:
    private = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "idp.pub").write_bytes(public_pem(private))
    return private, tmp_path / "idp.pub"


def pem_verifier(public: Path, **settings: Any) -> TokenVerifier:
    return TokenVerifier.from_settings(
        AuthSettings(public_key_file=public, issuer=ISSUER, **settings)
    )


# ---------------------------------------------------------------- claims


def test_alg_not_fitting_the_key_is_an_invalid_token_not_a_crash(
    ed_key: tuple[ed25519.Ed25519PrivateKey, Path],
) -> None:
    """Before: HS256 keyed with the public PEM -> TypeError "Expecting a PEM-formatted key"
    (UNKNOWN). The key is Ed25519, so only EdDSA is tried."""
    _, public = ed_key
    verifier = pem_verifier(public)
    confused = hs256_token(claims(roles=["admin"]), public.read_bytes())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_signed = jwt.encode(claims(roles=["admin"]), rsa_key, algorithm="RS256")
    for token in (confused, rsa_signed):
        with pytest.raises(InvalidToken, match="does not fit the key"):
            verifier.verify(token)


def test_alg_none_is_refused(ed_key: tuple[ed25519.Ed25519PrivateKey, Path]) -> None:
    token = jwt.encode(claims(roles=["admin"]), None, algorithm="none")  # type: ignore[arg-type]
    with pytest.raises(InvalidToken):
        pem_verifier(ed_key[1]).verify(token)


@pytest.mark.parametrize(
    ("claim", "value"),
    [("roles", "admin"), ("groups", "engineering"), ("roles", [1]), ("groups", [""])],
)
def test_roles_and_groups_must_be_lists_of_strings(
    ed_key: tuple[ed25519.Ed25519PrivateKey, Path], claim: str, value: Any
) -> None:
    private, public = ed_key
    token = jwt.encode(claims(**{claim: value}), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match=f"claim '{claim}' must be a list of non-empty strings"):
        pem_verifier(public).verify(token)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"groups": [f"g{i}" for i in range(1001)]}, "claim 'groups' has 1001 items"),
        ({"roles": ["admin\x00"]}, "claim 'roles' has a value of 6 characters or with a NUL"),
        ({"groups": ["g" * 5000]}, "claim 'groups' has a value of 5000 characters"),
        ({"sub": "a" * 5000}, "claim 'sub' has a value of 5000 characters"),
    ],
)
def test_claims_beyond_the_field_bounds_are_refused(
    ed_key: tuple[ed25519.Ed25519PrivateKey, Path], extra: dict[str, Any], named: str
) -> None:
    """The caller's subject and groups travel in events every consumer screens; a token
    beyond those bounds would make a request no consumer accepts."""
    private, public = ed_key
    token = jwt.encode(claims(**extra), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match=named) as refused:
        pem_verifier(public).verify(token)
    assert len(str(refused.value)) < 300


@pytest.mark.parametrize("subject", ["", "   ", 42])
def test_an_empty_or_non_string_subject_is_refused(
    ed_key: tuple[ed25519.Ed25519PrivateKey, Path], subject: Any
) -> None:
    private, public = ed_key
    token = jwt.encode(claims(sub=subject), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="(?i)sub"):
        pem_verifier(public).verify(token)


def test_a_person_cannot_claim_a_service_subject(
    ed_key: tuple[ed25519.Ed25519PrivateKey, Path],
) -> None:
    private, public = ed_key
    token = jwt.encode(claims(sub="service:request"), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="service:"):
        pem_verifier(public).verify(token)


def test_lifetime_is_bounded_and_iat_required(
    ed_key: tuple[ed25519.Ed25519PrivateKey, Path],
) -> None:
    private, public = ed_key
    verifier = pem_verifier(public, max_token_lifetime_seconds=3600)
    now = int(time.time())
    ten_years = jwt.encode(claims(exp=now + 10 * 365 * 86400), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="longer than the 3600 s allowed"):
        verifier.verify(ten_years)
    no_iat = jwt.encode(claims(iat=None), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="iat"):
        verifier.verify(no_iat)
    # Issued in the future to stretch the window: refused too.
    future = jwt.encode(claims(iat=now + 3000, exp=now + 3300), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken):
        verifier.verify(future)
    within = jwt.encode(claims(exp=now + 3600), private, algorithm="EdDSA")
    assert verifier.verify(within).subject == "alice"


def test_garbage_is_an_invalid_token(ed_key: tuple[ed25519.Ed25519PrivateKey, Path]) -> None:
    verifier = pem_verifier(ed_key[1])
    for token in ("", "abc", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30.", "x" * 5000):
        with pytest.raises(InvalidToken):
            verifier.verify(token)


def test_an_untrusted_issuer_is_refused(ed_key: tuple[ed25519.Ed25519PrivateKey, Path]) -> None:
    private, public = ed_key
    token = jwt.encode(claims(iss="https://evil.example"), private, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="not trusted"):
        pem_verifier(public).verify(token)


# ---------------------------------------------------------------- dev trust


def test_production_mode_refuses_to_start_with_the_dev_issuer(tmp_path: Path) -> None:
    _, public = ensure_keypair(tmp_path / "idp", "idp")
    with pytest.raises(DevTrustRefused, match="dev issuer 'lapse-dev'.*LAPSE_AUTH_DEV_MODE"):
        TokenVerifier.from_settings(AuthSettings(public_key_file=public, issuer="lapse-dev"))
    with pytest.raises(DevTrustRefused, match="dev issuer"):
        TokenVerifier.from_settings(
            AuthSettings(
                public_key_file=public, issuer=ISSUER, subject_only_issuers=f"lapse-dev={public}"
            )
        )


def test_production_mode_refuses_to_start_with_a_dev_key(tmp_path: Path) -> None:
    _, named = ensure_keypair(tmp_path / "a", "dev-token")
    with pytest.raises(DevTrustRefused, match="is a dev key"):
        TokenVerifier.from_settings(AuthSettings(public_key_file=named, issuer=ISSUER))
    # Any key in a folder lapse_common.dev_keys made, whatever its name.
    _, marked = ensure_keypair(tmp_path / "b", "renamed")
    (tmp_path / "b" / DEV_KEYS_MARKER).write_text("")
    with pytest.raises(DevTrustRefused, match="LAPSE_AUTH_PUBLIC_KEY_FILE"):
        TokenVerifier.from_settings(AuthSettings(public_key_file=marked, issuer=ISSUER))


def test_production_mode_needs_an_issuer(tmp_path: Path) -> None:
    _, public = ensure_keypair(tmp_path, "idp")
    with pytest.raises(ValueError, match="LAPSE_AUTH_ISSUER is not set"):
        TokenVerifier.from_settings(AuthSettings(public_key_file=public))


def test_dev_mode_trusts_dev_keys_and_the_dev_issuer(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path, "dev-token")
    verifier = TokenVerifier.from_settings(AuthSettings(public_key_file=public, dev_mode=True))
    token = mint_token(
        private_key_pem=private.read_bytes(), subject="a", groups=[], roles=[], ttl_seconds=60
    )
    assert verifier.verify(token).subject == "a"


def test_the_dev_keys_tool_marks_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lapse_common import dev_keys

    monkeypatch.setattr("sys.argv", ["dev_keys", str(tmp_path)])
    dev_keys.main()
    for path in (
        tmp_path / "chatops-token.pub",
        tmp_path / "services" / "request.pub",
        tmp_path / "command-signing.pub",
    ):
        assert path.exists()
        with pytest.raises(DevTrustRefused):
            TokenVerifier.from_settings(AuthSettings(public_key_file=path, issuer=ISSUER))


# ---------------------------------------------------------------- kid, JWKS files


def test_kid_picks_the_key_and_mixed_key_types_work(tmp_path: Path) -> None:
    keys = {
        "ed": ed25519.Ed25519PrivateKey.generate(),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec": ec.generate_private_key(ec.SECP256R1()),
    }
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(k, kid) for kid, k in keys.items()]}))
    verifier = TokenVerifier.from_settings(AuthSettings(jwks_file=jwks, issuer=ISSUER))
    for kid, algorithm in (("ed", "EdDSA"), ("rsa", "RS256"), ("ec", "ES256")):
        token = jwt.encode(claims(sub=kid), keys[kid], algorithm=algorithm, headers={"kid": kid})
        assert verifier.verify(token).subject == kid
    # Signed by the RSA key but naming the EC key's kid: the EC key's algorithm is pinned.
    wrong = jwt.encode(claims(), keys["rsa"], algorithm="RS256", headers={"kid": "ec"})
    with pytest.raises(InvalidToken, match="does not fit the key"):
        verifier.verify(wrong)
    unknown = jwt.encode(claims(), keys["ed"], algorithm="EdDSA", headers={"kid": "gone"})
    with pytest.raises(InvalidToken, match="kid 'gone' is not among the 3 keys"):
        verifier.verify(unknown)
    no_kid = jwt.encode(claims(), keys["ed"], algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="no kid"):
        verifier.verify(no_kid)


def test_without_kid_the_pem_key_is_used_beside_a_jwks(tmp_path: Path) -> None:
    pem_key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "idp.pub").write_bytes(public_pem(pem_key))
    other = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk_of(other, "k1")]}))
    verifier = TokenVerifier.from_settings(
        AuthSettings(
            public_key_file=tmp_path / "idp.pub", jwks_file=tmp_path / "jwks.json", issuer=ISSUER
        )
    )
    assert verifier.verify(jwt.encode(claims(), pem_key, algorithm="EdDSA")).subject == "alice"
    signed_by_other = jwt.encode(claims(), other, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(signed_by_other)


def test_a_jwks_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    first, second = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk_of(first, "k1")]}))
    verifier = TokenVerifier.from_settings(AuthSettings(jwks_file=jwks, issuer=ISSUER))
    rotated = jwt.encode(claims(), second, algorithm="EdDSA", headers={"kid": "k2"})
    with pytest.raises(InvalidToken, match="kid 'k2'"):
        verifier.verify(rotated)
    jwks.write_text(json.dumps({"keys": [jwk_of(first, "k1"), jwk_of(second, "k2")]}))
    stat = jwks.stat()
    os.utime(jwks, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert verifier.verify(rotated).subject == "alice"


def test_jwks_keys_that_are_unsafe_are_skipped() -> None:
    ed = ed25519.Ed25519PrivateKey.generate()
    rsa_jwk = jwk_of(rsa.generate_private_key(public_exponent=65537, key_size=2048), "r")
    rsa_jwk["alg"] = "HS256"  # an RSA key declared as an HMAC secret
    document = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            rsa_jwk,
            {**jwk_of(ed, "enc"), "use": "enc"},
            jwk_of(ed, "ok"),
        ]
    }
    keys = parse_jwks(json.dumps(document), source="jwks")
    assert [(k.kid, k.algorithm) for k in keys] == [("ok", "EdDSA")]


# ---------------------------------------------------------------- subject-only issuers


def test_a_subject_only_issuer_asserts_the_subject_and_nothing_else(tmp_path: Path) -> None:
    chat_private, chat_public = ensure_keypair(tmp_path / "chat", "chat")
    _, idp_public = ensure_keypair(tmp_path / "idp", "idp")
    directory = tmp_path / "directory.yaml"
    directory.write_text(
        "groups:\n  engineering: [carol]\nroles:\n  sre: [carol]\n  admin: [alice]\n"
    )
    verifier = TokenVerifier.from_settings(
        AuthSettings(
            public_key_file=idp_public,
            issuer=ISSUER,
            directory_file=directory,
            subject_only_issuers=f"lapse-chatops={chat_public}",
        )
    )
    token = mint_token(
        private_key_pem=chat_private.read_bytes(),
        subject="carol",
        groups=["db-approvers"],
        roles=["admin"],
        ttl_seconds=60,
        issuer="lapse-chatops",
    )
    identity = verifier.verify(token)
    assert (identity.subject, identity.groups, identity.roles) == (
        "carol",
        ("engineering",),
        ("sre",),
    )
    # The chat key is trusted for its issuer only: it cannot sign as the identity provider.
    as_idp = mint_token(
        private_key_pem=chat_private.read_bytes(),
        subject="carol",
        groups=[],
        roles=["admin"],
        ttl_seconds=60,
        issuer=ISSUER,
    )
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(as_idp)


def test_directory_roles_join_a_full_issuer_claims(tmp_path: Path) -> None:
    private, public = ensure_keypair(tmp_path / "idp", "idp")
    directory = tmp_path / "directory.yaml"
    directory.write_text("roles:\n  admin: [alice]\n")
    verifier = TokenVerifier.from_settings(
        AuthSettings(public_key_file=public, issuer=ISSUER, directory_file=directory)
    )
    token = mint_token(
        private_key_pem=private.read_bytes(),
        subject="alice",
        groups=[],
        roles=["sre"],
        ttl_seconds=60,
        issuer=ISSUER,
    )
    assert verifier.verify(token).roles == ("admin", "sre")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("lapse-chatops", "is not issuer=key"),
        ("=x.pub", "is not issuer=key"),
        ("a=x.pub,a=y.pub", "listed twice"),
    ],
)
def test_bad_subject_only_issuer_settings_say_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AuthSettings(subject_only_issuers=value)
