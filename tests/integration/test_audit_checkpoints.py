"""The audit log anchored outside the database, on a stack of its own (real Kafka and
PostgreSQL): after a lifecycle the audit service has written a signed checkpoint file,
`lapse audit verify --checkpoint` accepts it, and once someone deletes event 3 in
PostgreSQL and re-hashes the rest (a chain the database alone finds consistent), verify
fails naming the sequence."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from lapse_common.audit_checkpoints import load_public_key, parse_checkpoint, verify_checkpoint
from lapse_common.db import create_engine_for_service, session_factory
from lapse_common.pb.lapse.v1 import audit_service_pb2, common_pb2

from services.audit.tests.chain_rewrite import delete_and_rehash
from tests.conftest import running_stack
from tests.infrastructure import Infrastructure
from tests.integration.clients import StackClients, bearer, run_cli
from tests.integration.revocation_support import submit, wait_grant
from tests.integration.waiting import wait_for
from tests.stack import LapseStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def audit_stack(
    infra: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LapseStack]:
    # Its own stack: rewriting the audit history must not touch other tests' log.
    yield from running_stack(
        LapseStack(
            infra=infra, workdir=Path(tmp_path_factory.mktemp("audit-anchor")), users=("alice",)
        )
    )


def checkpoint_files(stack: LapseStack) -> list[Path]:
    return sorted(stack.checkpoint_dir.glob("checkpoint-0*.json"))


async def test_a_rewritten_history_fails_verification_against_a_checkpoint(
    audit_stack: LapseStack, tmp_path: Path
) -> None:
    stack = audit_stack
    clients = StackClients(stack)
    auditor = stack.token("auditor-1", roles=("auditor",))
    try:
        request_id = await submit(clients, stack, user="alice", seconds=3)
        grant = await wait_grant(clients, stack, request_id, status=common_pb2.GRANT_STATUS_REVOKED)
        events = await wait_for(
            lambda: clients.audit_events(token=auditor, grant_id=grant.grant_id),
            lambda found: sum(e.type == "lapse.v1.GrantStatusChanged" for e in found) >= 4,
            what="audit to hold the grant's four status changes",
        )
        lifecycle_end = max(event.sequence for event in events)

        # The periodic writer (every 2 s on this stack) signs a head at or past the
        # lifecycle's last event.
        newest = await wait_for(
            lambda: asyncio.to_thread(checkpoint_files, stack),
            lambda files: (
                bool(files) and parse_checkpoint(files[-1].read_bytes()).sequence >= lifecycle_end
            ),
            what=f"a checkpoint file at sequence {lifecycle_end} or later",
        )
        kept = tmp_path / "kept-checkpoint.json"
        shutil.copyfile(newest[-1], kept)
        checkpoint = parse_checkpoint(kept.read_bytes())
        verify_checkpoint(
            checkpoint, load_public_key(stack.checkpoint_public.read_bytes()), log="lapse"
        )
        assert oct(newest[-1].stat().st_mode & 0o777) == "0o644"

        intact = run_cli(
            stack,
            "audit",
            "verify",
            "--checkpoint",
            str(kept),
            "--public-key",
            str(stack.checkpoint_public),
            token=auditor,
        )
        assert intact.returncode == 0, intact.stderr
        assert intact.stdout.startswith("ok: ")

        # The attack, in the service's real PostgreSQL database.
        engine = create_engine_for_service(stack.database_url, schema="audit")
        try:
            async with session_factory(engine)() as session, session.begin():
                await delete_and_rehash(session, sequence=3)
        finally:
            await engine.dispose()
        stored_after_3 = sorted(
            parse_checkpoint(path.read_bytes()).sequence
            for path in checkpoint_files(stack)
            if parse_checkpoint(path.read_bytes()).sequence >= 3
        )

        response = await clients.audit.VerifyChain(
            audit_service_pb2.VerifyChainRequest(), metadata=bearer(auditor)
        )
        assert not response.ok  # the service's own checkpoints catch it...
        for path in checkpoint_files(stack):
            path.unlink()  # ...so the attacker removes them too
        # What the finding was: without a checkpoint the chain alone still verifies.
        alone = await clients.audit.VerifyChain(
            audit_service_pb2.VerifyChainRequest(), metadata=bearer(auditor)
        )
        assert alone.ok, alone.detail

        failed = run_cli(stack, "audit", "verify", "--checkpoint", str(kept), token=auditor)
        assert failed.returncode == 1, failed.stdout
        named = re.search(r"FAILED at sequence (\d+)", failed.stderr)
        assert named is not None, failed.stderr
        assert int(named.group(1)) == checkpoint.sequence, failed.stderr
        assert "rewritten" in failed.stderr or "events were removed" in failed.stderr
        assert stored_after_3, "the writer had signed heads past event 3"
        exported = run_cli(stack, "audit", "export", "--format", "ocsf", token=auditor)
        assert exported.returncode == 0, exported.stderr
        classes = {json.loads(line)["type_uid"] for line in exported.stdout.splitlines()}
        assert {300501, 300502} <= classes
    finally:
        await clients.close()
