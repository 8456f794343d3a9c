"""Checkpoints: the format an outside verifier checks, the directory that never replaces
a file, the writer that signs only a moved head of a chain that still verifies, and the
deletion + re-hash attack that only a checkpoint catches."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from lapse_audit.checkpoint_store import CheckpointStore
from lapse_audit.operations.record_event import record_event
from lapse_audit.operations.verify_chain import verify_chain
from lapse_audit.operations.write_checkpoint import CheckpointWriter
from lapse_common.audit_checkpoints import (
    CheckpointInvalid,
    parse_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from lapse_common.clock import ManualClock
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.tests.audit_events import decoded, grant_fact
from services.audit.tests.chain_rewrite import delete_and_rehash

NOW = datetime(2025, 3, 1, 12, 0, 5, 123456, tzinfo=UTC)
HEAD = "ab" * 32
LOG = "unit-log"


def signed(key: Ed25519PrivateKey, *, sequence: int = 7, head_hash: str = HEAD) -> str:
    return sign_checkpoint(
        key, log=LOG, sequence=sequence, head_hash=head_hash, signed_at=NOW
    ).to_json()


async def append(sessions: async_sessionmaker[AsyncSession], count: int) -> None:
    for index in range(count):
        async with sessions() as session, session.begin():
            await record_event(
                session,
                event=decoded(grant_fact(f"g-{index}", "r-1"), grant_id=f"g-{index}"),
                topic="lapse.grants.v1",
                recorded_at=NOW,
            )


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def store(tmp_path: Path, key: Ed25519PrivateKey) -> CheckpointStore:
    store = CheckpointStore(tmp_path / "checkpoints", public_key=key.public_key(), log=LOG)
    store.prepare()
    return store


@pytest.fixture
def writer(
    sessions: async_sessionmaker[AsyncSession], store: CheckpointStore, key: Ed25519PrivateKey
) -> CheckpointWriter:
    return CheckpointWriter(
        sessions=sessions, store=store, key=key, log=LOG, clock=ManualClock(NOW)
    )


# ---------------------------------------------------------------- the format


def test_an_outside_verifier_checks_a_checkpoint_with_plain_ed25519(
    key: Ed25519PrivateKey,
) -> None:
    """What services/audit/README.md tells an outside verifier to do, done without any
    Lapse code: drop `signature`, serialize with sorted keys and no whitespace, verify."""
    text = signed(key)
    document = json.loads(text)
    signature = base64.b64decode(document.pop("signature"))
    message = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_key = serialization.load_pem_public_key(public_pem)
    assert isinstance(public_key, Ed25519PublicKey)

    public_key.verify(signature, message)  # raises if it does not verify
    assert document == {
        "format": "lapse.audit.checkpoint.v1",
        "head_hash": HEAD,
        "key_id": document["key_id"],
        "log": LOG,
        "sequence": 7,
        "signed_at": "2025-03-01T12:00:05.123456Z",
    }
    # The file is its own canonical form: byte for byte what a verifier rebuilds.
    assert (
        text
        == json.dumps(
            {**document, "signature": base64.b64encode(signature).decode()},
            sort_keys=True,
            separators=(",", ":"),
        )
        + "\n"
    )


def test_a_checkpoint_round_trips_and_verifies(key: Ed25519PrivateKey) -> None:
    checkpoint = parse_checkpoint(signed(key))

    verify_checkpoint(checkpoint, key.public_key(), log=LOG)
    assert (checkpoint.sequence, checkpoint.head_hash, checkpoint.signed_at) == (7, HEAD, NOW)


@pytest.mark.parametrize(
    ("member", "value"),
    [("sequence", 6), ("head_hash", "cd" * 32), ("signed_at", "2025-03-01T12:00:06.123456Z")],
)
def test_an_altered_member_breaks_the_signature(
    key: Ed25519PrivateKey, member: str, value: object
) -> None:
    document = json.loads(signed(key))
    document[member] = value

    with pytest.raises(CheckpointInvalid, match="does not verify"):
        verify_checkpoint(parse_checkpoint(json.dumps(document)), key.public_key(), log=LOG)


def test_a_tampered_signature_is_refused(key: Ed25519PrivateKey) -> None:
    document = json.loads(signed(key))
    raw = bytearray(base64.b64decode(document["signature"]))
    raw[0] ^= 1
    document["signature"] = base64.b64encode(bytes(raw)).decode()

    with pytest.raises(CheckpointInvalid, match="forged or altered"):
        verify_checkpoint(parse_checkpoint(json.dumps(document)), key.public_key(), log=LOG)


def test_a_checkpoint_signed_by_another_key_is_refused(key: Ed25519PrivateKey) -> None:
    """Even when it claims our key id: the signature is checked with our key."""
    intruder = Ed25519PrivateKey.generate()
    forged = json.loads(signed(intruder))
    honest_id = json.loads(signed(key))["key_id"]

    with pytest.raises(CheckpointInvalid, match="signed by key"):
        verify_checkpoint(parse_checkpoint(json.dumps(forged)), key.public_key(), log=LOG)
    forged["key_id"] = honest_id
    with pytest.raises(CheckpointInvalid, match="does not verify"):
        verify_checkpoint(parse_checkpoint(json.dumps(forged)), key.public_key(), log=LOG)


def test_a_checkpoint_of_another_log_is_refused(key: Ed25519PrivateKey) -> None:
    other = sign_checkpoint(key, log="other-log", sequence=1, head_hash=HEAD, signed_at=NOW)

    with pytest.raises(CheckpointInvalid, match="of log 'other-log'"):
        verify_checkpoint(parse_checkpoint(other.to_json()), key.public_key(), log=LOG)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "JSON object"),
        ("[]", "JSON object"),
        ("{}", "missing"),
        ("x" * 5000, "at most 2048 bytes"),
        ("[" * 2000, "JSON object"),
    ],
)
def test_malformed_checkpoints_are_named(text: str, message: str) -> None:
    with pytest.raises(CheckpointInvalid, match=message):
        parse_checkpoint(text)


def test_wrongly_typed_members_are_named(key: Ed25519PrivateKey) -> None:
    for member, value, message in [
        ("sequence", "7", "sequence must be an integer"),
        ("sequence", True, "sequence must be an integer"),
        ("sequence", -1, "sequence must be an integer"),
        ("head_hash", "AB" * 32, "64 lowercase hex"),
        ("log", "Has Spaces", "log must match"),
        ("signature", "!!", "malformed"),
        ("format", "v0", "format must be"),
    ]:
        document = json.loads(signed(key))
        document[member] = value
        with pytest.raises(CheckpointInvalid, match=message):
            parse_checkpoint(json.dumps(document))


# ---------------------------------------------------------------- the directory


def test_a_checkpoint_file_is_never_overwritten(
    store: CheckpointStore, key: Ed25519PrivateKey
) -> None:
    first = parse_checkpoint(signed(key, sequence=3))
    second = parse_checkpoint(signed(key, sequence=3, head_hash="cd" * 32))

    path = store.write(first)
    assert path is not None
    assert store.write(second) is None

    assert path.read_text() == first.to_json()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not [name for name in os.listdir(store.directory) if name.endswith(".tmp")]


def test_planted_files_are_ignored(
    store: CheckpointStore, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    store.write(parse_checkpoint(signed(key, sequence=2)))
    intruder = Ed25519PrivateKey.generate()
    (store.directory / "checkpoint-00000000000000000009.json").write_text(
        signed(intruder, sequence=9)
    )
    (store.directory / "checkpoint-00000000000000000008.json").write_text("garbage")
    # A genuine checkpoint under another sequence's name.
    (store.directory / "checkpoint-00000000000000000007.json").write_text(signed(key, sequence=5))

    assert [checkpoint.sequence for checkpoint in store.newest()] == [2]


# ---------------------------------------------------------------- the writer


async def test_the_writer_signs_only_when_the_head_moved(
    sessions: async_sessionmaker[AsyncSession], writer: CheckpointWriter, store: CheckpointStore
) -> None:
    empty = await writer.write()
    assert (empty.checkpoint, empty.written) == (None, False)

    await append(sessions, 3)
    first = await writer.write()
    again = await writer.write()
    await append(sessions, 2)
    moved = await writer.write()

    assert first.written and first.checkpoint is not None
    assert first.checkpoint.sequence == 3
    assert (again.written, again.checkpoint) == (False, first.checkpoint)
    assert moved.written and moved.checkpoint is not None and moved.checkpoint.sequence == 5
    async with sessions() as session:
        verification = await verify_chain(session)
    assert moved.checkpoint.head_hash == verification.head_hash
    assert sorted(os.listdir(store.directory)) == [
        "checkpoint-00000000000000000003.json",
        "checkpoint-00000000000000000005.json",
        next(name for name in os.listdir(store.directory) if name.endswith(".pub")),
    ]


async def test_the_writer_refuses_to_sign_a_rewritten_chain(
    sessions: async_sessionmaker[AsyncSession], writer: CheckpointWriter, store: CheckpointStore
) -> None:
    await append(sessions, 5)
    assert (await writer.write()).written
    async with sessions() as session, session.begin():
        await delete_and_rehash(session, sequence=3)
    await append(sessions, 3)  # the head moves past the old one again

    outcome = await writer.write()

    assert not outcome.written
    assert outcome.refusal.startswith("sequence 5: its hash is")
    assert "was rewritten after it was signed" in outcome.refusal
    assert [checkpoint.sequence for checkpoint in store.newest()] == [5]


# ---------------------------------------------------------------- the attack


async def test_deletion_and_rehash_passes_alone_and_fails_against_a_checkpoint(
    sessions: async_sessionmaker[AsyncSession], writer: CheckpointWriter, store: CheckpointStore
) -> None:
    await append(sessions, 5)
    checkpoint = (await writer.write()).checkpoint
    assert checkpoint is not None and checkpoint.sequence == 5
    async with sessions() as session, session.begin():
        await delete_and_rehash(session, sequence=3)

    async with sessions() as session:
        alone = await verify_chain(session)
        anchored = await verify_chain(session, checkpoints=[checkpoint])

    # The finding: the database alone cannot tell.
    assert alone.ok, alone.detail
    assert alone.events_checked == 4
    assert not anchored.ok
    assert anchored.first_bad_sequence == 5
    assert "chain ends at sequence 4" in anchored.detail
    assert "events were removed" in anchored.detail


async def test_a_rewrite_under_a_later_head_is_caught_and_narrowed_down(
    sessions: async_sessionmaker[AsyncSession], writer: CheckpointWriter, store: CheckpointStore
) -> None:
    """The attacker appends events so the head is past every checkpoint again: each
    checkpoint's sequence now holds another hash, and an older checkpoint that still
    matches narrows down where history changed."""
    await append(sessions, 2)
    await writer.write()  # checkpoint at 2: before the deleted event
    await append(sessions, 4)
    await writer.write()  # checkpoint at 6
    async with sessions() as session, session.begin():
        await delete_and_rehash(session, sequence=3)
    await append(sessions, 3)

    async with sessions() as session:
        result = await verify_chain(session, checkpoints=store.newest())

    assert not result.ok
    assert result.first_bad_sequence == 6
    assert result.checkpoints_checked == 2
    assert "the checkpoint at sequence 2 still matches" in result.detail
    assert "sequences 3..6" in result.detail


async def test_an_intact_chain_verifies_against_its_checkpoints(
    sessions: async_sessionmaker[AsyncSession], writer: CheckpointWriter, store: CheckpointStore
) -> None:
    for _ in range(3):
        await append(sessions, 2)
        await writer.write()
    await append(sessions, 1)

    async with sessions() as session:
        result = await verify_chain(session, checkpoints=store.newest(), batch_size=2)

    assert result.ok, result.detail
    assert (result.events_checked, result.checkpoints_checked) == (7, 3)
    assert "3 signed checkpoint(s)" in result.detail


def test_signed_at_is_kept_to_the_microsecond(key: Ed25519PrivateKey) -> None:
    later = NOW + timedelta(microseconds=1)
    checkpoint = sign_checkpoint(key, log=LOG, sequence=1, head_hash=HEAD, signed_at=later)

    assert parse_checkpoint(checkpoint.to_json()).signed_at == later
