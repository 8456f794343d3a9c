"""Page tokens of ListEvents: where the next page starts, bound to the filters it was
issued for and authenticated, so a client can only hand back a token the service made.

token = base64url(json {"v": 1, "after": <last sequence>, "query": <filter digest>})
        "." base64url(HMAC-SHA256(key, that json)[:16])

The HMAC key is derived (HKDF) from the checkpoint signing key, so tokens survive a
restart and work on every replica without another secret to manage.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from lapse_common.refusals import Refusal, Refused

_VERSION = 1
_TAG_BYTES = 16


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def derived_from(cls, signing_key: Ed25519PrivateKey) -> PageTokens:
        raw = signing_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"lapse.audit.page-token.v1"
        ).derive(raw)
        return cls(key)

    def issue(self, *, after_sequence: int, query: Mapping[str, str]) -> str:
        body = json.dumps(
            {"v": _VERSION, "after": after_sequence, "query": query_digest(query)},
            sort_keys=True,
            separators=(",", ":"),
        ).encode("ascii")
        return f"{_encode(body)}.{_encode(self._tag(body))}"

    def read(self, token: str, *, query: Mapping[str, str]) -> int:
        """The sequence after which the next page starts; Refused (INVALID) unless this
        service issued the token for this query."""
        encoded_body, dot, encoded_tag = token.partition(".")
        try:
            body, tag = _decode(encoded_body), _decode(encoded_tag)
        except (ValueError, binascii.Error):
            body, tag = b"", b""
        if not dot or not hmac.compare_digest(tag, self._tag(body)) or not body:
            raise Refused(
                Refusal.INVALID,
                "page_token is not one this service issued (altered, forged or truncated)",
            )
        content = json.loads(body)
        after = content.get("after")
        if content.get("v") != _VERSION or type(after) is not int or after < 0:
            raise Refused(Refusal.INVALID, "page_token has an unknown format")
        if content.get("query") != query_digest(query):
            raise Refused(
                Refusal.INVALID,
                "page_token was issued for other filters: page with the filters of the first page",
            )
        return after

    def _tag(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_TAG_BYTES]


def query_digest(query: Mapping[str, str]) -> str:
    canonical = json.dumps(dict(query), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
