"""Keys from the identity provider over HTTP: OIDC discovery, the JWKS cached and fetched
again after a rotation, refetches on unknown kids rate-limited, a dead provider not fatal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from lapse_common.auth import InvalidToken, TokenVerifier
from lapse_common.settings import AuthSettings
from lapse_common.token_keys import RemoteKeySet, TokenKeyError


class IdentityProvider:
    """A discovery document and a JWKS, served from a thread; counts the JWKS fetches."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.jwks_fetches = 0
        self.slow_seconds = 0.0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": provider.url, "jwks_uri": f"{provider.url}/jwks"}
                elif self.path == "/jwks":
                    provider.jwks_fetches += 1
                    time.sleep(provider.slow_seconds)
                    body = provider.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # The client may have given up (the slow-provider test).
                with contextlib.suppress(BrokenPipeError):
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.url
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, **keys: Any) -> None:
        published = []
        for kid, private in keys.items():
            if isinstance(private, rsa.RSAPrivateKey):
                jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
            else:
                jwk = jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
            published.append({**jwk, "kid": kid})
        self.jwks = {"keys": published}

    def token(self, private: Any, kid: str, subject: str = "alice") -> str:
        now = int(time.time())
        claims = {
            "sub": subject,
            "iss": self.issuer,
            "aud": "lapse",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        algorithm = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "EdDSA"
        return jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.server.shutdown()


async def test_discovery_then_rotation_is_picked_up_by_the_unknown_kid(
    idp: IdentityProvider,
) -> None:
    old, new = ed25519.Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)
    idp.publish(old=old)
    verifier = TokenVerifier.from_settings(
        AuthSettings(issuer=idp.issuer, issuer_url=idp.url, jwks_min_refetch_seconds=0)
    )
    assert (await verifier.verify_async(idp.token(old, "old"))).subject == "alice"
    assert idp.jwks_fetches == 1
    # Cached: a second token costs no fetch.
    await verifier.verify_async(idp.token(old, "old", subject="bob"))
    assert idp.jwks_fetches == 1

    idp.publish(new=new)  # the provider rotates to an RSA key
    assert (await verifier.verify_async(idp.token(new, "new"))).subject == "alice"
    assert idp.jwks_fetches == 2
    # The retired key is gone from the set.
    with pytest.raises(InvalidToken, match="kid 'old'"):
        await verifier.verify_async(idp.token(old, "old"))


async def test_unknown_kids_refetch_at_most_once_per_interval(idp: IdentityProvider) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    idp.publish(k1=key)
    verifier = TokenVerifier.from_settings(
        AuthSettings(issuer=idp.issuer, jwks_url=f"{idp.url}/jwks", jwks_min_refetch_seconds=60)
    )
    await verifier.verify_async(idp.token(key, "k1"))
    for attempt in range(20):
        with pytest.raises(InvalidToken, match="is not among"):
            await verifier.verify_async(idp.token(key, f"made-up-{attempt}"))
    assert idp.jwks_fetches == 1


async def test_keys_are_fetched_again_after_the_cache_time(idp: IdentityProvider) -> None:
    clock = [1000.0]
    keys = RemoteKeySet(
        jwks_url=f"{idp.url}/jwks",
        cache_seconds=300,
        min_refetch_seconds=30,
        monotonic=lambda: clock[0],
    )
    idp.publish(k1=ed25519.Ed25519PrivateKey.generate())
    await keys.refresh_if_stale()
    await keys.refresh_if_stale()
    assert idp.jwks_fetches == 1
    clock[0] += 301
    await keys.refresh_if_stale()
    assert idp.jwks_fetches == 2


async def test_a_dead_or_slow_provider_keeps_the_known_keys_and_the_loop_free(
    idp: IdentityProvider,
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    idp.publish(k1=key)
    clock = [0.0]
    keys = RemoteKeySet(
        jwks_url=f"{idp.url}/jwks",
        cache_seconds=10,
        min_refetch_seconds=0,
        timeout_seconds=0.3,
        monotonic=lambda: clock[0],
    )
    assert await keys.refresh()
    idp.slow_seconds = 2
    clock[0] += 11
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    running = asyncio.create_task(ticker())
    started = time.monotonic()
    assert not await keys.refresh()
    elapsed = time.monotonic() - started
    running.cancel()
    assert elapsed < 1.5 and ticks > 10  # the event loop kept running during the fetch
    assert [k.kid for k in keys.current()] == ["k1"]
    idp.slow_seconds = 0
    idp.server.shutdown()
    idp.server.server_close()
    assert not await keys.refresh()  # connection refused: logged, not raised
    assert [k.kid for k in keys.current()] == ["k1"]


async def test_a_token_before_any_key_is_known_is_unauthenticated(
    idp: IdentityProvider,
) -> None:
    idp.server.shutdown()
    idp.server.server_close()
    verifier = TokenVerifier.from_settings(AuthSettings(issuer=idp.issuer, issuer_url=idp.url))
    key = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(InvalidToken, match="is not among the 0 keys"):
        await verifier.verify_async(idp.token(key, "k1"))


async def test_discovery_of_another_issuer_is_refused(idp: IdentityProvider) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    idp.publish(k1=key)
    verifier = TokenVerifier.from_settings(
        AuthSettings(issuer="https://other.example", issuer_url=idp.url)
    )
    idp.issuer = "https://other.example"  # tokens claim the configured issuer ...
    with pytest.raises(InvalidToken, match="is not among the 0 keys"):
        # ... but the discovery document names its own: its keys are not used.
        await verifier.verify_async(idp.token(key, "k1"))
    assert idp.jwks_fetches == 0


@pytest.mark.parametrize(
    "url", ["http://idp.example/jwks", "ftp://127.0.0.1/jwks", "file:///etc/passwd"]
)
def test_keys_are_fetched_over_https_only_except_from_this_machine(url: str) -> None:
    with pytest.raises(TokenKeyError, match="https"):
        RemoteKeySet(jwks_url=url)
