"""chatops' tokens: signed by its own key under its own issuer, naming the person and nothing
more, short-lived; and exactly those tokens are what reaches the services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from lapse_chatops.directory import Person
from lapse_chatops.grammar import RequestCommand
from lapse_chatops.lapse_api import LapseApi
from lapse_chatops.subject_tokens import SubjectTokenMinter
from lapse_common.auth import ensure_keypair
from lapse_common.grpc_transport import GrpcTransportSettings
from lapse_common.pb.lapse.v1 import request_service_pb2, request_service_pb2_grpc

NOW = 1_900_000_000.0


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {
        "chatops": ensure_keypair(tmp_path, "chatops-token"),
        "dev": ensure_keypair(tmp_path, "dev-token"),
    }


def minter(key_file: Path, **overrides: Any) -> SubjectTokenMinter:
    settings: dict[str, Any] = {
        "key_file": key_file,
        "issuer": "lapse-chatops",
        "audience": "lapse",
        "ttl_seconds": 60,
        "now": lambda: NOW,
    }
    settings.update(overrides)
    return SubjectTokenMinter(**settings)


def decode(token: str, public_key_file: Path) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token,
        key=serialization.load_pem_public_key(public_key_file.read_bytes()),  # type: ignore[arg-type]
        algorithms=["EdDSA"],
        audience="lapse",
        issuer="lapse-chatops",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    return claims


def test_token_names_the_subject_only_and_is_signed_by_the_chatops_key(
    keys: dict[str, tuple[Path, Path]],
) -> None:
    token = minter(keys["chatops"][0]).token_for("alice")
    claims = decode(token, keys["chatops"][1])
    assert claims["sub"] == "alice" and claims["iss"] == "lapse-chatops"
    assert "roles" not in claims and "groups" not in claims
    assert set(claims) == {"sub", "iss", "aud", "iat", "nbf", "exp", "jti"}
    assert claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    # Not something the dev key (which the services trust for full tokens) could have made.
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, keys["dev"][1])


def test_each_token_is_unique_and_has_a_kid_only_when_configured(
    keys: dict[str, tuple[Path, Path]],
) -> None:
    plain = minter(keys["chatops"][0])
    assert "kid" not in jwt.get_unverified_header(plain.token_for("alice"))
    first, second = (decode(plain.token_for("alice"), keys["chatops"][1]) for _ in range(2))
    assert first["jti"] != second["jti"]
    with_kid = minter(keys["chatops"][0], key_id="chatops-2026")
    assert jwt.get_unverified_header(with_kid.token_for("alice"))["kid"] == "chatops-2026"


@pytest.mark.parametrize("ttl", [0, -1, 301, 3600, 10 * 365 * 86400])
def test_lifetime_is_at_most_five_minutes(keys: dict[str, tuple[Path, Path]], ttl: int) -> None:
    with pytest.raises(ValueError, match="must be 1 to 300 seconds"):
        minter(keys["chatops"][0], ttl_seconds=ttl)


def test_refuses_an_empty_subject_or_issuer(keys: dict[str, tuple[Path, Path]]) -> None:
    with pytest.raises(ValueError, match="issuer must not be empty"):
        minter(keys["chatops"][0], issuer=" ")
    with pytest.raises(ValueError, match="needs a subject"):
        minter(keys["chatops"][0]).token_for("")


def test_key_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(ValueError, match=r"cannot read the chatops token key .*nope\.key"):
        minter(missing)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(ValueError, match="is not an unencrypted PEM private key"):
        minter(garbage)
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="must be Ed25519"):
        minter(ec_key)


class RecordingRequestService(request_service_pb2_grpc.RequestServiceServicer):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def SubmitRequest(
        self,
        request: request_service_pb2.SubmitRequestRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> request_service_pb2.SubmitRequestResponse:
        metadata = dict(context.invocation_metadata() or ())
        self.tokens.append(str(metadata["authorization"]).removeprefix("Bearer "))
        return request_service_pb2.SubmitRequestResponse(
            request=request_service_pb2.AccessRequestView(request_id="req-1")
        )


@pytest.fixture
async def request_service() -> AsyncIterator[tuple[RecordingRequestService, int]]:
    service = RecordingRequestService()
    server = grpc.aio.server()
    request_service_pb2_grpc.add_RequestServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, port
    await server.stop(grace=None)


async def test_the_service_receives_a_subject_only_chatops_token(
    keys: dict[str, tuple[Path, Path]], request_service: tuple[RecordingRequestService, int]
) -> None:
    service, port = request_service
    lapse = LapseApi(
        request_address=f"127.0.0.1:{port}",
        approval_address="127.0.0.1:1",
        tokens=SubjectTokenMinter(
            key_file=keys["chatops"][0], issuer="lapse-chatops", audience="lapse", ttl_seconds=60
        ),
        timeout_seconds=5,
        # The test server listens in the clear on the loopback: the TLS path is tested in
        # lapse_common's transport tests and on the real stack.
        transport=GrpcTransportSettings(allow_plaintext=True),
    )
    try:
        await lapse.submit(
            Person("alice"),
            RequestCommand(
                integration_id="demo-pg",
                resource="appdb",
                permission="read",
                principal="alice",
                duration_seconds=60,
                justification="",
            ),
        )
    finally:
        await lapse.close()
    [token] = service.tokens
    claims = jwt.decode(
        token,
        key=serialization.load_pem_public_key(keys["chatops"][1].read_bytes()),  # type: ignore[arg-type]
        algorithms=["EdDSA"],
        audience="lapse",
        issuer="lapse-chatops",
    )
    assert claims["sub"] == "alice"
    assert "roles" not in claims and "groups" not in claims
    assert claims["exp"] - claims["iat"] <= 300
