"""A real AuditService gRPC server in-process, wired as app.py wires it, for the API and
CLI tests: token checks, request screening, a checkpoint key and directory of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
from lapse_audit.checkpoint_store import CheckpointStore
from lapse_audit.grpc_api import AuditApi
from lapse_audit.operations.write_checkpoint import CheckpointWriter
from lapse_audit.page_tokens import PageTokens
from lapse_common.audit_checkpoints import load_private_key
from lapse_common.auth import AuthInterceptor, TokenVerifier, ensure_keypair, mint_token
from lapse_common.clock import ManualClock
from lapse_common.pb.lapse.v1 import audit_service_pb2_grpc
from lapse_common.request_screening import RequestScreeningInterceptor
from lapse_common.settings import AuthSettings
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

LOG_NAME = "unit-log"
SIGNED_AT = datetime(2025, 3, 1, 12, 1, 0, tzinfo=UTC)


@dataclass
class AuditServer:
    address: str
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub
    keys: Path
    checkpoint_public_key: Path
    store: CheckpointStore
    writer: CheckpointWriter
    clock: ManualClock

    def token(self, *roles: str, subject: str = "carol") -> str:
        private_key, _ = ensure_keypair(self.keys, "dev-token")
        return mint_token(
            private_key_pem=private_key.read_bytes(),
            subject=subject,
            groups=[],
            roles=list(roles),
            ttl_seconds=300,
        )

    def bearer(self, *roles: str, subject: str = "carol") -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token(*roles, subject=subject)}")]


@asynccontextmanager
async def audit_server(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> AsyncIterator[AuditServer]:
    keys = tmp_path / "keys"
    _, token_public_key = ensure_keypair(keys, "dev-token")
    checkpoint_private, checkpoint_public = ensure_keypair(keys, "audit-checkpoint")
    key = load_private_key(checkpoint_private.read_bytes())
    store = CheckpointStore(tmp_path / "checkpoints", public_key=key.public_key(), log=LOG_NAME)
    store.prepare()
    clock = ManualClock(SIGNED_AT)
    writer = CheckpointWriter(sessions=sessions, store=store, key=key, log=LOG_NAME, clock=clock)
    api = AuditApi(
        sessions=sessions,
        checkpoints=store,
        writer=writer,
        page_tokens=PageTokens.derived_from(key),
        log_name=LOG_NAME,
    )
    verifier = TokenVerifier.from_settings(AuthSettings(public_key_file=token_public_key, dev_mode=True))
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(verifier), RequestScreeningInterceptor()]
    )
    api.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield AuditServer(
            address=f"127.0.0.1:{port}",
            stub=audit_service_pb2_grpc.AuditServiceStub(channel),  # type: ignore[arg-type]
            keys=keys,
            checkpoint_public_key=checkpoint_public,
            store=store,
            writer=writer,
            clock=clock,
        )
    finally:
        await channel.close()
        await server.stop(grace=None)
